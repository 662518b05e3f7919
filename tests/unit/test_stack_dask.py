"""The stack's Dask cluster (``hsi stack up --dask-workers N``) as real processes on free ports, alone
(no PostgreSQL/S3/Prefect, no stack lock): start, status, the written config, a product whose
windows run on its workers, a crashed worker reclaimed, down."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import numpy as np
import rasterio

from hsi.products import get_product, run_product
from hsi.products.testing import band_table, write_activated_cog
from hsi_pipeline.deployments.local.common import DEFAULT_PORTS, Layout, Proc, _alive, _port_open, wait_for
from hsi_pipeline.deployments.local.stack import down, endpoints, stack_config, start_dask, status

ROOT = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def test_stack_dask_cluster_up_status_product_crash_down(tmp_path) -> None:
    layout = Layout(
        tmp_path / "stack", dict(zip(DEFAULT_PORTS, _free_ports(len(DEFAULT_PORTS)), strict=True))
    )
    try:
        start_dask(layout, 2, 1, ROOT)
        info = status(layout)
        comps = info["components"]
        assert (
            comps["dask-scheduler"]["healthy"] and comps["dask-scheduler"]["endpoint"] == layout.dask_address
        )
        assert comps["dask-workers"]["healthy"], comps["dask-workers"]
        assert comps["dask-workers"]["endpoint"].startswith("2/2 connected, 2 threads")
        ep = endpoints(layout)
        assert ep["dask_scheduler"] == f"tcp://127.0.0.1:{layout.ports['dask']}"
        assert ep["dask_dashboard"] == f"http://127.0.0.1:{layout.ports['dask_dashboard']}/status"
        assert stack_config(layout)["engine"] == {"task_runner": "dask", "dask_address": layout.dask_address}
        assert (layout.logs / "dask-scheduler.log").exists() and (layout.logs / "dask-worker-2.log").exists()

        # a product's windows on the stack's workers, by address (what engine.dask_address holds)
        wl = np.arange(400.0, 1001.0, 20.0)
        data = np.round(np.random.default_rng(3).uniform(0.05, 0.6, (wl.size, 96, 80)) * 1e4).astype("int16")
        src = write_activated_cog(tmp_path / "s.tif", band_table(wl, 20.0, scale=1e-4), data, dtype="int16",
                                  nodata=-9999, block=32)  # fmt: skip
        prod = get_product("index:NDVI")
        ref = run_product(prod, str(src), str(tmp_path / "ref.tif"), window_size=32)
        par = run_product(prod, str(src), str(tmp_path / "par.tif"), window_size=32, dask=layout.dask_address)
        with rasterio.open(ref.output_path) as a, rasterio.open(par.output_path) as b:
            assert np.array_equal(a.read(), b.read()) and a.tags() == b.tags()
        assert ref.stats == par.stats and par.windows == 9

        # a worker killed hard (its pid record stays): status says so, the next start replaces it
        w2 = Proc(layout, "dask-worker-2")
        old = w2.pid()
        assert old is not None
        os.killpg(old, signal.SIGKILL)
        # SIGKILL is delivered asynchronously: wait until the kernel has ended it (CI 17 saw it running)
        wait_for("the killed Dask worker to end", lambda: w2.pid() is None, timeout=30, interval=0.05)
        assert not status(layout)["components"]["dask-workers"]["healthy"]
        start_dask(layout, 2, 1, ROOT)
        assert w2.pid() not in (None, old)
        assert status(layout)["components"]["dask-workers"]["endpoint"].startswith("2/2 connected")
    finally:
        pids = [
            p
            for p in (Proc(layout, n).pid() for n in ("dask-scheduler", "dask-worker-1", "dask-worker-2"))
            if p
        ]
        stopped = down(layout)
    assert stopped["dask-scheduler"] and stopped["dask-worker-1"] and stopped["dask-worker-2"]
    assert not any(_alive(p) for p in pids)
    assert not _port_open(layout.ports["dask"])
    assert "engine" not in stack_config(layout)
