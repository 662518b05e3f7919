"""Edge helpers shared by the Prefect tasks: configuration, services, run metadata, events.

This is the only place that knows about Prefect's runtime. It turns Prefect flow-run metadata
into the :class:`hsi.stac.provenance.RunInfo` the domain library records, and hsi event dicts
into Prefect events.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar, cast

from hsi.config import PipelineConfig, load_config
from hsi.lease import LEASE_WAIT_S, file_lease, lease_name
from hsi.services import Services
from hsi.stac.provenance import RunInfo

_T = TypeVar("_T")

__all__ = [
    "emit",
    "get_config",
    "as_is",
    "item_lease",
    "progress_logger",
    "reclaim_dead_runs",
    "report_progress",
    "retry_if_transient",
    "run_info",
    "services",
    "set_progress_sink",
]

CONFIG_ENV = "HSI_CONFIG"


def get_config(config: str | PipelineConfig | None = None) -> PipelineConfig:
    """The pipeline configuration: an explicit path/object, else ``$HSI_CONFIG``, else the default."""
    if isinstance(config, PipelineConfig):
        return config
    return load_config(config or os.environ.get(CONFIG_ENV) or None)


@lru_cache(maxsize=16)
def block_session(name: str) -> Any:
    """The ``boto3.Session`` of the prefect-aws ``AwsCredentials`` block ``name``."""
    from prefect_aws import AwsCredentials

    from hsi.errors import ConfigError

    try:
        creds = AwsCredentials.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError as e:  # Prefect: "Unable to find block document named ..."
        raise ConfigError(
            f"credentials_block {name!r}: no such AwsCredentials block on the Prefect API ({e})"
        ) from None
    return creds.get_boto3_session()  # type: ignore[union-attr]


@lru_cache(maxsize=8)
def _services(cfg_json: str) -> Services:
    """Services of a configuration; ``credentials_block`` names (storage, inputs[], an s3:// static
    catalog) are resolved to boto3 sessions from prefect-aws blocks."""
    return Services.from_config(PipelineConfig.model_validate_json(cfg_json), sessions=block_session)


def services(config: str | PipelineConfig | None = None) -> Services:
    """Store and catalog for a configuration (built once per process)."""
    return _services(get_config(config).model_dump_json())


_ORIGINS: dict[str, tuple[str | None, dict[str, Any] | None, str | None]] = {}


def _run_origin(fr_id: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """(work pool, created_by, deployment name) of a flow run, read from the API once per run and
    process: none of them changes while the run works, and an activation run registers its cube and
    then each product with the same provenance. A failed read is logged and tried again next time."""
    if fr_id not in _ORIGINS:
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                fr = client.read_flow_run(uuid.UUID(fr_id))
                dep = client.read_deployment(fr.deployment_id).name if fr.deployment_id else None
        except Exception as e:  # provenance must not fail the work; say what is missing
            logging.getLogger(__name__).warning("could not read flow run %s from the API: %s", fr_id, e)
            return None, None, None
        created_by = None
        if fr.created_by is not None:
            created_by = {
                "type": fr.created_by.type,
                "id": str(fr.created_by.id) if fr.created_by.id else None,
                "name": fr.created_by.display_value,
            }
        if len(_ORIGINS) >= 256:  # a long-lived process (a notebook, a test session) runs many flows
            _ORIGINS.clear()
        _ORIGINS[fr_id] = (fr.work_pool_name, created_by, dep)
    pool, created_by, dep = _ORIGINS[fr_id]
    return pool, dict(created_by) if created_by else None, dep


def run_info(trigger: Mapping[str, Any] | None = None) -> RunInfo:
    """Provenance of the current Prefect flow run, read from the run's own metadata."""
    from prefect.runtime import deployment, flow_run

    fr_id = flow_run.get_id()
    if not fr_id:
        return RunInfo(trigger=dict(trigger) if trigger else None)
    work_pool, created_by, deployment_name = _run_origin(fr_id)
    trig = dict(trigger) if trigger else {}
    if created_by:
        trig.setdefault("created_by", created_by)
    ui = flow_run.get_flow_run_ui_url()
    if not ui or not ui.startswith(("http://", "https://")):  # no UI known (ephemeral API): no link
        ui = None
    return RunInfo(
        flow_run_id=fr_id,
        flow_run_name=flow_run.get_name(),
        flow_name=flow_run.get_flow_name(),
        deployment_id=deployment.get_id(),
        deployment_name=deployment_name,
        work_pool=work_pool,
        ui_url=ui,
        trigger=trig or None,
    )


def as_is(value: _T) -> _T:
    """A task argument Prefect passes through untouched: ``quote(value)``, typed as ``value``.

    Prefect walks every task argument twice per task run (to find futures and record task inputs);
    for the configuration, STAC item dicts with hundreds of bands and plans that walk was the largest
    single cost of a warm run's task runs (py-spy, docs/EVENTS.md). Use it for anything but small
    scalars; never for an argument that *is* a future."""
    from prefect.utilities.annotations import quote

    return cast(_T, quote(value))


def emit(event: Mapping[str, Any]) -> None:
    """Emit an hsi event dict (see :mod:`hsi.events`) as a Prefect event."""
    from prefect.events import emit_event

    emit_event(
        event=event["event"],
        resource=event["resource"],
        related=event.get("related") or None,
        payload=event.get("payload") or None,
        id=uuid.UUID(event["id"]),
    )


ProgressSink = Callable[[str, int, int], None]
_sink: list[ProgressSink] = []


def set_progress_sink(sink: ProgressSink | None) -> None:
    """Install (or remove, with None) a process-local display of long steps, e.g. the CLI's progress
    bar. Runs on a worker have none; their progress is in the run's logs."""
    _sink[:] = [sink] if sink is not None else []


def report_progress(what: str, done: int, total: int) -> None:
    """Tell the installed progress display (if any) that ``done`` of ``total`` units of ``what`` are done."""
    for sink in _sink:
        try:
            sink(what, done, total)
        except Exception as e:  # a display must never fail the work
            logging.getLogger(__name__).debug("progress display failed: %s", e)


def progress_logger(logger: Any, what: str, step: int = 10) -> Callable[[int, int], None]:
    """A progress callback that logs every ``step`` percent of long work (and feeds the display)."""
    last = [-step]

    def cb(done: int, total: int) -> None:
        report_progress(what, done, total)
        pct = int(100 * done / max(total, 1))
        if pct >= last[0] + step or done == total:
            last[0] = pct - pct % step
            logger.info("%s: %d%% (%d/%d)", what, pct, done, total)

    return cb


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Task retry condition: retry what a retry may fix (network, 5xx, unknown errors), never
    invalid input or a definite refusal (401/403, malformed answers, missing items)."""
    from hsi.errors import HSIError, TransientError

    try:
        state.result()
    except TransientError:
        return True
    except HSIError:
        return False
    except Exception:
        return True
    return False


@contextmanager
def item_lease(
    collection: str, item_id: str, config: Any = None, wait_s: float = LEASE_WAIT_S
) -> Iterator[bool]:
    """Hold the lease of one output item (see :mod:`hsi.lease`); yields whether it was had in ``wait_s``.

    With a Prefect API server: a global concurrency limit of 1 slot named after the item (created on
    first use, deleted when no run holds it), held with a lease of ``LEASE_S`` seconds that this
    process renews while it runs, so a dead holder's lease expires (:mod:`hsi_pipeline.tasks.leases`).
    Without one: an ``flock``."""
    from prefect.settings import PREFECT_API_URL

    name = lease_name(collection, item_id)
    if not PREFECT_API_URL.value():
        with file_lease(services(config).work_dir, name, wait_s) as held:
            yield held
        return
    from hsi_pipeline.tasks.leases import prefect_item_lease

    with prefect_item_lease(name, services(config).work_dir, wait_s) as held:
        yield held


def reclaim_dead_runs(svc: Services) -> None:
    """What dead runs of this machine left: their scratch and unfinished uploads, and their Prefect
    leases (released at once rather than left to expire). Logged to the run."""
    from prefect.logging import get_run_logger
    from prefect.settings import PREFECT_API_URL

    from hsi_pipeline.tasks.leases import release_lease

    log = get_run_logger()
    for r in svc.reclaim_dead_runs(release_lease if PREFECT_API_URL.value() else None):
        log.info("reclaimed %s (%d bytes): %s", r.path, r.bytes, r.reason)
