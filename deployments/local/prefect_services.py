"""The stack's Prefect processes: the server (on the stack's PostgreSQL), its databases, the warm
flow-run starter and the pool's worker. Install, start, health."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hsi_pipeline.deployments.local.common import (
    HOST,
    PG_USER,
    WORK_POOL,
    Layout,
    Proc,
    StackError,
    _http_json,
    _http_status,
    _port_open,
    clean_env,
    venv_command,
)
from hsi_pipeline.deployments.local.services import psql
from hsi_pipeline.deployments.local.warm import worker_command


def _prefect_env(layout: Layout) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(layout.prefect_home),
        "PREFECT_API_URL": layout.prefect_api,
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(layout.ports["prefect"]),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": layout.prefect_api,
        "DO_NOT_TRACK": "1",
    }


def _prefect_ok(layout: Layout) -> bool:
    return _http_status(layout.prefect_api + "/health") == 200


PREFECT_DB = "prefect"  # the Prefect server's database in the stack's PostgreSQL


def ensure_prefect_db(layout: Layout, name: str = PREFECT_DB) -> None:
    """A Prefect server's own database in the stack's PostgreSQL (idempotent; ``name``: another
    server's, e.g. a benchmark's private one)."""
    if psql(layout, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
        psql(layout, f"CREATE DATABASE {name} OWNER {PG_USER}")


def drop_prefect_db(layout: Layout, name: str) -> None:
    """Drop a private Prefect server's database (never the stack's own)."""
    if name == PREFECT_DB:
        raise StackError("refusing to drop the stack's own Prefect database")
    psql(layout, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def prefect_db_url(layout: Layout, sec: dict[str, str], name: str = PREFECT_DB) -> str:
    from urllib.parse import quote

    return (
        f"postgresql+asyncpg://{PG_USER}:{quote(sec['pg_password'], safe='')}@{HOST}:"
        f"{layout.ports['postgres']}/{name}"
    )


def up_prefect(layout: Layout, sec: dict[str, str] | None = None) -> str:
    """The Prefect server: on the stack's PostgreSQL when ``sec`` is given (bursts of runs and
    events make SQLite answer "database is locked"), else on SQLite under ``prefect_home``."""
    proc = Proc(layout, "prefect-server")
    if proc.pid():
        return "running"
    port = layout.ports["prefect"]
    if _port_open(port):
        raise StackError(f"port {port} is in use by another process (set HSI_STACK_PORT_PREFECT)")
    layout.prefect_home.mkdir(parents=True, exist_ok=True)
    env = _prefect_env(layout)
    if sec is not None:
        ensure_prefect_db(layout)
        env.update(
            PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_db_url(layout, sec),
            PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE="10",
            PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW="20",
        )
    proc.start(
        [venv_command("prefect"), "server", "start", "--host", HOST, "--port", str(port)],
        clean_env(env),
        layout.prefect_home,
    )
    return "started"


def _worker_online(layout: Layout, since: float | None = None) -> bool:
    """A worker of the pool is ONLINE (and, with ``since``, has sent a heartbeat after that epoch time)."""
    from datetime import datetime

    workers = _http_json(f"{layout.prefect_api}/work_pools/{WORK_POOL}/workers/filter", {})
    for w in workers or []:
        if w.get("status") != "ONLINE":
            continue
        if since is None:
            return True
        hb = w.get("last_heartbeat_time")
        if hb and datetime.fromisoformat(hb.replace("Z", "+00:00")).timestamp() >= since - 1.0:
            return True
    return False


def flow_starter_socket(layout: Layout) -> Path:
    return layout.run / "flow-starter.sock"


def flow_starter_ok(layout: Layout) -> bool:
    """The warm flow-run starter (deployments/local/warm.py) is running and has configured the pool."""
    return Proc(layout, "flow-starter").pid() is not None and flow_starter_socket(layout).is_socket()


def up_flow_starter(layout: Layout, cwd: Path) -> str:
    """Start the warm flow-run starter; once ready it makes the pool's runs start through it (warm.py)."""
    proc = Proc(layout, "flow-starter")
    if proc.pid():
        return "running"
    warm = Path(__file__).resolve().with_name("warm.py")
    proc.start([sys.executable, str(warm), "serve", "--socket", str(flow_starter_socket(layout)), "--pool", WORK_POOL],
               clean_env(_prefect_env(layout)), cwd)  # fmt: skip
    return "started"


#: The pool worker's default poll interval: a triggered run waits for the next poll (half of it on
#: average), and the event path's start target (median <= 1 s) needs 0.25 s. Idle, the polls cost the
#: Prefect server ~7% of a core (measured: 2.98 CPU s per 30 s with the worker, 0.77 without) and the
#: worker ~3%: ``HSI_WORKER_POLL_SECONDS`` trades start latency for idle CPU (a laptop on battery).
WORKER_QUERY_SECONDS = 0.25
WORKER_POLL_ENV = "HSI_WORKER_POLL_SECONDS"


def worker_query_seconds() -> float:
    """The worker's poll interval: ``HSI_WORKER_POLL_SECONDS`` (seconds, > 0), else 0.25 s."""
    raw = os.environ.get(WORKER_POLL_ENV, "").strip()
    if not raw:
        return WORKER_QUERY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 60:
        raise StackError(
            f"{WORKER_POLL_ENV}={raw!r}: give the worker's poll interval in seconds, e.g. 1 (0 < s <= 60)"
        )
    return value


def up_worker(layout: Layout, cwd: Path) -> str:
    proc = Proc(layout, "prefect-worker")
    if proc.pid():
        return "running"
    env = clean_env(
        {
            **_prefect_env(layout),
            "PREFECT_WORKER_QUERY_SECONDS": str(worker_query_seconds()),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        }
    )
    proc.start(
        [
            *worker_command([]),  # `prefect` with the fork server's shared TLS contexts (warm.py)
            "worker",
            "start",
            "--pool",
            WORK_POOL,
            "--type",
            "process",
            "--name",
            "hsi-local-worker",
            *worker_limit(),
        ],
        env,
        cwd,
    )
    return "started"


def worker_limit() -> list[str]:
    """``--limit`` = the pool's concurrency limit: the worker itself never runs more at once. The
    server-side pool limit alone was exceeded by one, twice, in a 12-scene burst
    (tests/integration/test_burst_stack.py; cause not established, the worker polls every 0.25 s)."""
    from hsi_pipeline.deployments.local.warm import pool_concurrency

    n = pool_concurrency()
    return ["--limit", str(n)] if n else []
