"""The stack's Dask cluster: a ``distributed`` scheduler and N single-process workers
(``hsi stack up --dask-workers N``). Start, health, stop."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from hsi_pipeline.deployments.local.common import (
    HOST,
    Layout,
    Proc,
    StackError,
    _http_json,
    _port_open,
    clean_env,
    venv_command,
)

DASK_SCHEDULER = "dask-scheduler"
DASK_WORKER = "dask-worker-"  # + 1..N: one recorded process (nanny + worker) each


def dask_worker_names(layout: Layout) -> list[str]:
    """Names of the Dask workers the stack has recorded (running or left by a crash), in order."""
    names = [p.stem for p in layout.run.glob(f"{DASK_WORKER}*.json")] if layout.run.exists() else []
    return sorted(names, key=lambda n: int(n.removeprefix(DASK_WORKER) or 0))


def dask_counts(layout: Layout) -> dict[str, Any] | None:
    """The scheduler's counters (``workers``, ``cores``, ``processing``...) from its HTTP server, or None."""
    try:
        out = _http_json(layout.dask_dashboard + "/json/counts.json", timeout=2.0)
    except OSError:
        return None
    return out if isinstance(out, dict) else None


def dask_dashboard_note() -> str | None:
    """Why the dashboard page is not there (bokeh missing), or None when it is."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return "dashboard needs bokeh (not installed): `.venv/bin/uv pip install 'bokeh>=3.1'`"
    return None


def up_dask_scheduler(layout: Layout, cwd: Path) -> str:
    proc = Proc(layout, DASK_SCHEDULER)
    if proc.pid():
        return "running"
    for key, what in (("dask", "Dask scheduler"), ("dask_dashboard", "Dask dashboard")):
        if _port_open(layout.ports[key]):
            raise StackError(
                f"port {layout.ports[key]} ({what}) is in use by another process "
                f"(set HSI_STACK_PORT_{key.upper()})"
            )
    layout.dask_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        venv_command("dask"),
        "scheduler",
        "--host",
        HOST,
        "--port",
        str(layout.ports["dask"]),
        "--dashboard-address",
        f"{HOST}:{layout.ports['dask_dashboard']}",
    ]
    proc.start(argv, clean_env({"DASK_TEMPORARY_DIRECTORY": str(layout.dask_dir)}), cwd)
    return "started"


def dask_connected_names(layout: Layout) -> set[str]:
    """Names of the workers connected to the scheduler (empty when it does not answer)."""
    try:
        ident = _http_json(layout.dask_dashboard + "/json/identity.json", timeout=2.0)
    except OSError:
        return set()
    return {str(w.get("name")) for w in (ident or {}).get("workers", {}).values()}


def up_dask_workers(layout: Layout, n: int, nthreads: int, cwd: Path) -> tuple[str, set[str]]:
    """Workers 1..n (those not running are started; a crash-left record is replaced); workers beyond
    ``n`` left by an earlier ``up`` are stopped. Each runs in ``cwd`` (the project: flows import).
    Returns (what was done, the Dask names of the workers started now: ``dask-worker-<i>-<token>``,
    new on every start, so a replaced worker is told from the dead one the scheduler may still list)."""
    started, stopped = 0, 0
    fresh: set[str] = set()
    for name in dask_worker_names(layout):
        if int(name.removeprefix(DASK_WORKER)) > n:
            stopped += Proc(layout, name).stop(timeout=20)
    for i in range(1, n + 1):
        proc = Proc(layout, f"{DASK_WORKER}{i}")
        if proc.pid():
            continue
        argv = [
            venv_command("dask"),
            "worker",
            layout.dask_address,
            "--name",
            f"{DASK_WORKER}{i}-{secrets.token_hex(3)}",
            "--nthreads",
            str(nthreads),
            "--nworkers",
            "1",
            "--host",
            HOST,
            "--no-dashboard",
            "--local-directory",
            str(layout.dask_dir),
        ]
        # hsi's log lines (e.g. the product's "windows over Dask ... dashboard ...") reach Prefect runs
        proc.start(argv, clean_env({"PREFECT_LOGGING_EXTRA_LOGGERS": "hsi"}), cwd)
        fresh.add(argv[4])
        started += 1
    if not started and not stopped:
        return "running", fresh
    return f"started {started}" + (f", stopped {stopped}" if stopped else ""), fresh


def down_dask(layout: Layout) -> dict[str, bool]:
    """Stop the workers, then the scheduler."""
    out = {name: Proc(layout, name).stop(timeout=20) for name in dask_worker_names(layout)}
    out[DASK_SCHEDULER] = Proc(layout, DASK_SCHEDULER).stop(timeout=20)
    return out
