"""Chunk-parallel products: one scene's windows computed on the workers of a Dask cluster.

The windowed engine (:mod:`hsi.products.engine`) hands this module the product, its validated
parameters, the selected bands and the window list. Every window becomes one Dask task that
carries only the window's coordinates; the task runs on a worker, which opens the activated COG
itself (``src_path`` under the job's ``env_factory()``: a local path or ``/vsis3/...``), reads only
that window's selected bands, runs ``compute``, converts to the output dtype and takes the window's
partial statistics. The output block comes back to the driver, which writes the blocks into the
one :class:`hsi.cog.CogSink` **in window order** and folds the statistics in the same order, so
the COG, its metadata and the statistics are identical to a run without Dask.

Memory stays bounded: no more than ``2 x`` the cluster's worker threads windows are outstanding at
any time (submitted, running or finished but not yet written).

``distributed`` is imported lazily: importing :mod:`hsi` never needs it. Inside a Dask worker (a
Prefect task on a ``DaskTaskRunner``) the worker's own client is used through ``worker_client()``,
which leaves the worker's thread free for the window tasks while this one waits.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from hsi.products.base import ComputeContext, Params, Product, SelectedBand
from hsi.scene import BandInfo

__all__ = ["DaskTarget", "WindowJob", "dask_blocks", "dask_client", "dashboard_link", "worker_threads"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowJob:
    """Everything a worker needs besides the window: sent once per run (scattered), never pixels."""

    product: Product
    params: Params
    selected: tuple[SelectedBand, ...]
    bands: tuple[BandInfo, ...]
    ctx: ComputeContext
    src_path: str
    env_factory: Callable[[], Any] | None = None  # picklable; returns the rasterio.Env to open under


@dataclass(frozen=True)
class DaskTarget:
    """A client or scheduler address whose windows must run on ``workers`` only (worker addresses;
    benchmarks compare 1 worker with 2 of the same cluster this way)."""

    dask: Any
    workers: tuple[str, ...] | None = None


def _run_window(job: WindowJob, col_off: int, row_off: int, width: int, height: int) -> tuple[Any, Any]:
    """On a worker: open the COG, read this window's bands, compute; (output block, partial stats)."""
    from hsi.products.engine import WindowReader, compute_window

    w = Window(col_off, row_off, width, height)
    env = job.env_factory() if job.env_factory is not None else rasterio.Env()
    with env, rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(job.src_path) as ds:
        reader = WindowReader(ds, job.product, job.params, job.selected, job.bands, [w])
        _, res, part = compute_window(job.product, job.params, job.ctx, reader, w)
    return res, part


@contextlib.contextmanager
def dask_client(dask: Any) -> Iterator[Any]:
    """A ``distributed`` client for ``dask``: the client itself, the current worker's client when
    called inside a Dask task (seceded: the worker thread is not held while waiting), else a new
    client connected to the scheduler address (closed on exit)."""
    if not isinstance(dask, str):
        yield dask
        return
    from distributed import Client, get_worker, worker_client

    try:
        get_worker()
    except ValueError:
        pass
    else:
        with worker_client() as client:
            yield client
        return
    with Client(dask, set_as_default=False, timeout="20s") as client:
        yield client


def worker_threads(client: Any) -> int:
    """Worker threads of the cluster (at least 1)."""
    return max(1, sum(client.nthreads().values()))


def dashboard_link(client: Any) -> str:
    """The scheduler's dashboard URL (``<none>`` when it runs without one)."""
    with contextlib.suppress(Exception):
        if "dashboard" in client.scheduler_info().get("services", {}):
            return str(client.dashboard_link)
    return "<none>"


def dask_blocks(
    dask: Any, job: WindowJob, windows: Sequence[Window], *, in_flight: int | None = None
) -> Iterator[tuple[Window, np.ndarray, Any]]:
    """Yield ``(window, output block, partial stats)`` in window order, computed on ``dask``'s workers
    with at most ``in_flight`` windows outstanding (default ``2 x`` worker threads)."""
    pin = dask.workers if isinstance(dask, DaskTarget) else None
    with dask_client(dask.dask if isinstance(dask, DaskTarget) else dask) as client:
        threads = worker_threads(client) if pin is None else sum(client.nthreads(list(pin)).values())
        limit = in_flight or 2 * max(1, threads)
        run = uuid.uuid4().hex[:8]
        log.info(
            "product %s on %s: %d windows over Dask (scheduler %s, dashboard %s), at most %d in flight",
            job.product.name,
            job.ctx.scene_id,
            len(windows),
            client.scheduler.address,
            dashboard_link(client),
            limit,
        )
        [job_f] = client.scatter([job], broadcast=False, hash=False)
        futures: dict[int, Any] = {}

        def submit(k: int) -> None:
            w = windows[k]
            futures[k] = client.submit(
                _run_window,
                job_f,
                int(w.col_off),
                int(w.row_off),
                int(w.width),
                int(w.height),
                key=f"hsi-window-{job.product.name}-{run}-{k}",
                pure=False,
                retries=1,
                workers=list(pin) if pin else None,
            )

        nxt = 0
        try:
            while nxt < min(limit, len(windows)):
                submit(nxt)
                nxt += 1
            for k, w in enumerate(windows):
                res, part = futures.pop(k).result()
                if nxt < len(windows):
                    submit(nxt)
                    nxt += 1
                yield w, res, part
        finally:
            if futures:
                client.cancel(list(futures.values()))
            client.cancel([job_f])
