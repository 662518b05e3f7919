"""One section per service of the local stack: install, start, health, stop."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hsi_pipeline.deployments.local.common import (
    AWS_PROFILE,
    BUCKET,
    HOST,
    PG_BIN,
    PG_DB,
    PG_USER,
    POSTGIS_CONTROL,
    REGION,
    REQUIREMENTS,
    WORK_POOL,
    Layout,
    Proc,
    StackError,
    _clean_env,
    _http_json,
    _http_status,
    _is_root,
    _log,
    _port_open,
    _run,
    _write_private,
    wait_for,
)
from hsi_pipeline.deployments.local.warm import worker_command

# --------------------------------------------------------------------------------------------------
# secrets (generated once per state dir, 0600, never printed)


def _secrets(layout: Layout) -> dict[str, str]:
    if layout.secrets_file.exists():
        return json.loads(layout.secrets_file.read_text())
    data = {
        "pg_password": secrets.token_urlsafe(24),
        "s3_access_key": "HSI" + secrets.token_hex(8).upper(),
        "s3_secret_key": secrets.token_urlsafe(30),
    }
    _write_private(layout.secrets_file, json.dumps(data))
    return data


def _write_credentials(layout: Layout, sec: dict[str, str]) -> None:
    _write_private(
        layout.credentials_file,
        f"[{AWS_PROFILE}]\naws_access_key_id = {sec['s3_access_key']}\n"
        f"aws_secret_access_key = {sec['s3_secret_key']}\nregion = {REGION}\n",
    )
    _write_private(
        layout.s3_config,
        json.dumps(
            {
                "identities": [
                    {
                        "name": "hsi",
                        "credentials": [
                            {"accessKey": sec["s3_access_key"], "secretKey": sec["s3_secret_key"]}
                        ],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ),
    )


# --------------------------------------------------------------------------------------------------
# installation steps (skipped when already done)


def ensure_postgis() -> None:
    if POSTGIS_CONTROL.exists() and (PG_BIN / "initdb").exists():
        return
    pkgs = ["postgresql-15", "postgresql-15-postgis-3"]
    if not _is_root():
        raise StackError(f"PostgreSQL 15 + PostGIS 3 missing: run `sudo apt-get install -y {' '.join(pkgs)}`")
    _log(f"installing {' '.join(pkgs)} with apt-get (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], env=env)
    _run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs], env=env, timeout=1200)
    if not POSTGIS_CONTROL.exists():
        raise StackError(f"apt-get installed {pkgs} but {POSTGIS_CONTROL} is still missing")


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()


def ensure_stack_venv(layout: Layout) -> None:
    marker = layout.venv / ".hsi-requirements"
    want = _requirements_hash()
    if marker.exists() and marker.read_text() == want and (layout.venv / "bin" / "uvicorn").exists():
        return
    _log(f"creating the STAC virtualenv {layout.venv} (once)")
    if not (layout.venv / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", str(layout.venv)])
    py = str(layout.venv / "bin" / "python")
    uv = Path(sys.executable).parent / "uv"
    uv_s = str(uv) if uv.exists() else shutil.which("uv")
    if uv_s:
        _run(
            [uv_s, "pip", "install", "--compile-bytecode", "--python", py, "-r", str(REQUIREMENTS)],
            env=_clean_env(),
            timeout=1200,
        )
    else:
        _run([py, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], env=_clean_env(), timeout=1200)
    marker.write_text(want)


# --------------------------------------------------------------------------------------------------
# components


def _pg_user() -> str | None:
    """The OS user that owns and runs the cluster: ``postgres`` when we are root (initdb refuses root)."""
    if not _is_root():
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise StackError("user 'postgres' missing: install the postgresql-15 package") from e
    return "postgres"


def _pg_ready(layout: Layout) -> bool:
    p = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-q", "-h", HOST, "-p", str(layout.ports["postgres"])],
        capture_output=True,
    )
    return p.returncode == 0


def _psql(layout: Layout, sql: str, db: str = "postgres") -> str:
    p = _run(
        [
            str(PG_BIN / "psql"),
            "-X",
            "-q",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(layout.pgsock),
            "-p",
            str(layout.ports["postgres"]),
            "-U",
            "postgres",
            "-d",
            db,
            "-f",
            "-",
        ],
        input=sql,
        env=_clean_env(),
    )
    return p.stdout.strip()


def ensure_pg_dir(layout: Layout, user: str | None) -> None:
    """Give the cluster a directory ``user`` can reach. When the state dir sits below a directory the
    ``postgres`` user cannot traverse (a 0700 home, a ``mktemp -d``), the cluster lives in
    ``~postgres/hsi-stack/<hash of the state dir>`` and ``<state dir>/pg`` links to it."""
    link = layout.root / "pg"
    if user is None or link.exists() or link.is_symlink():
        return
    layout.root.mkdir(parents=True, exist_ok=True)
    if _run(["test", "-x", str(layout.root)], user=user, check=False).returncode == 0:
        return
    pw = pwd.getpwnam(user)
    home = Path(pw.pw_dir) / "hsi-stack" / hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    for d in (home.parent, home):
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o700)
    link.symlink_to(home)
    _log(f"{layout.root} is closed to user {user!r}: the cluster lives in {home} (linked from {link})")


def up_postgres(layout: Layout, sec: dict[str, str]) -> str:
    user = _pg_user()
    port = layout.ports["postgres"]
    ensure_pg_dir(layout, user)
    if not (layout.pgdata / "PG_VERSION").exists():
        layout.pg.mkdir(parents=True, exist_ok=True)
        layout.pgsock.mkdir(parents=True, exist_ok=True)
        if user:
            pw = pwd.getpwnam(user)
            for p in (layout.pg, layout.pgsock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(layout.pg, 0o700)
        _log(f"initdb {layout.pgdata}")
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(layout.pgdata),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            user=user,
            env=_clean_env(),
        )
        with open(layout.pgdata / "postgresql.conf", "a") as f:
            f.write(
                f"\n# hsi stack\nlisten_addresses = '{HOST}'\nport = {port}\n"
                f"unix_socket_directories = '{layout.pgsock}'\nmax_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
    if _pg_ready(layout):
        state = "running"
    else:
        if _port_open(port):
            raise StackError(f"port {port} is in use by another process (set HSI_STACK_PORT_POSTGRES)")
        layout.logs.mkdir(parents=True, exist_ok=True)
        # pg_ctl -w polls the server itself until it accepts connections
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(layout.pgdata),
                "-l",
                str(layout.pg / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            user=user,
            env=_clean_env(),
        )
        wait_for("postgres", lambda: _pg_ready(layout), 60, log_hint=layout.pg / "postgres.log")
        state = "started"
    marker = layout.pg / ".pgstac-migrated"
    want = _requirements_hash()
    if not (marker.exists() and marker.read_text() == want):
        pw_sql = sec["pg_password"].replace("'", "''")
        _psql(
            layout,
            f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN
    CREATE ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{pw_sql}';
  ELSE
    ALTER ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{pw_sql}';
  END IF;
END $$;""",
        )
        if _psql(layout, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'") != "1":
            _psql(layout, f"CREATE DATABASE {PG_DB} OWNER {PG_USER}")
        _log("pypgstac migrate")
        _run([str(layout.venv / "bin" / "pypgstac"), "migrate"], env=_clean_env(_pg_env(layout, sec)))
        marker.write_text(want)
    return state


def _pg_env(layout: Layout, sec: dict[str, str]) -> dict[str, str]:
    port = str(layout.ports["postgres"])
    return {
        # pypgstac and stac-fastapi-pgstac >= 5 (PostgresSettings)
        "PGHOST": HOST,
        "PGPORT": port,
        "PGUSER": PG_USER,
        "PGPASSWORD": sec["pg_password"],
        "PGDATABASE": PG_DB,
        # older stac-fastapi-pgstac names, harmless for 7.x
        "POSTGRES_HOST_READER": HOST,
        "POSTGRES_HOST_WRITER": HOST,
        "POSTGRES_PORT": port,
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASS": sec["pg_password"],
        "POSTGRES_DBNAME": PG_DB,
    }


def stop_postgres(layout: Layout) -> bool:
    if not (layout.pgdata / "PG_VERSION").exists():
        return False
    user = _pg_user()
    st = _run(
        [str(PG_BIN / "pg_ctl"), "-D", str(layout.pgdata), "status"], user=user, check=False, env=_clean_env()
    )
    if st.returncode != 0:
        return False
    _run(
        [str(PG_BIN / "pg_ctl"), "-D", str(layout.pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
        user=user,
        env=_clean_env(),
    )
    return True


def _stac_ok(layout: Layout) -> bool:
    return _http_status(layout.stac_url + "/_mgmt/ping") == 200


def up_stac(layout: Layout, sec: dict[str, str]) -> str:
    proc = Proc(layout, "stac-api")
    if proc.pid() and _stac_ok(layout):
        return "running"
    port = layout.ports["stac"]
    if not proc.pid():
        if _port_open(port):
            raise StackError(f"port {port} is in use by another process (set HSI_STACK_PORT_STAC)")
        cwd = layout.root / "stac"  # empty cwd: no stray .env is read by pydantic-settings
        cwd.mkdir(parents=True, exist_ok=True)
        env = _clean_env(
            {
                **_pg_env(layout, sec),
                "ENABLE_TRANSACTIONS_EXTENSIONS": "TRUE",
                "DB_MIN_CONN_SIZE": "1",
                "DB_MAX_CONN_SIZE": "10",
                "APP_HOST": HOST,
                "APP_PORT": str(port),
            }
        )
        proc.start(
            [
                str(layout.venv / "bin" / "uvicorn"),
                "stac_fastapi.pgstac.app:create_app",
                "--factory",
                "--host",
                HOST,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env,
            cwd,
        )
    return "started"


def _s3_client(layout: Layout, sec: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=layout.s3_endpoint,
        region_name=REGION,
        aws_access_key_id=sec["s3_access_key"],
        aws_secret_access_key=sec["s3_secret_key"],
        config=Config(
            s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}
        ),
    )


def _s3_ok(layout: Layout, sec: dict[str, str]) -> bool:
    names = [b["Name"] for b in _s3_client(layout, sec).list_buckets().get("Buckets", [])]
    return BUCKET in names


def up_seaweedfs(layout: Layout, sec: dict[str, str]) -> str:
    proc = Proc(layout, "seaweedfs")
    if proc.pid():
        return "running"
    p = layout.ports
    for name in ("s3", "weed_master", "weed_volume", "weed_filer", "weed_admin"):
        for port in (p[name], p[name] + 10000):  # http and gRPC (+10000)
            if _port_open(port):
                raise StackError(
                    f"port {port} (SeaweedFS {name}{' gRPC' if port != p[name] else ''}) is in use "
                    f"by another process (set HSI_STACK_PORT_{name.upper()})"
                )
    layout.weed_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(layout.venv / "bin" / "weed"),
        "mini",
        f"-dir={layout.weed_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.port={p['s3']}",
        f"-master.port={p['weed_master']}",
        f"-volume.port={p['weed_volume']}",
        f"-filer.port={p['weed_filer']}",
        f"-admin.port={p['weed_admin']}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={layout.s3_config}",
        f"-bucket={BUCKET}",
        "-master.telemetry=false",
    ]
    proc.start(argv, _clean_env(), layout.weed_dir)
    return "started"


def _ensure_bucket(layout: Layout, sec: dict[str, str]) -> None:
    s3 = _s3_client(layout, sec)
    names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if BUCKET not in names:
        s3.create_bucket(Bucket=BUCKET)


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


def _prefect_bin() -> str:
    cand = Path(sys.executable).parent / "prefect"
    if cand.exists():
        return str(cand)
    found = shutil.which("prefect")
    if not found:
        raise StackError("the `prefect` command was not found next to this Python or on PATH")
    return found


def _prefect_ok(layout: Layout) -> bool:
    return _http_status(layout.prefect_api + "/health") == 200


PREFECT_DB = "prefect"  # the Prefect server's database in the stack's PostgreSQL


def ensure_prefect_db(layout: Layout, name: str = PREFECT_DB) -> None:
    """A Prefect server's own database in the stack's PostgreSQL (idempotent; ``name``: another
    server's, e.g. a benchmark's private one)."""
    if _psql(layout, f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
        _psql(layout, f"CREATE DATABASE {name} OWNER {PG_USER}")


def drop_prefect_db(layout: Layout, name: str) -> None:
    """Drop a private Prefect server's database (never the stack's own)."""
    if name == PREFECT_DB:
        raise StackError("refusing to drop the stack's own Prefect database")
    _psql(layout, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
        [_prefect_bin(), "server", "start", "--host", HOST, "--port", str(port)],
        _clean_env(env),
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
               _clean_env(_prefect_env(layout)), cwd)  # fmt: skip
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
    env = _clean_env(
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
            *_worker_limit(),
        ],
        env,
        cwd,
    )
    return "started"


def _worker_limit() -> list[str]:
    """``--limit`` = the pool's concurrency limit: the worker itself never runs more at once. The
    server-side pool limit alone was exceeded by one, twice, in a 12-scene burst
    (tests/integration/test_burst_stack.py; cause not established, the worker polls every 0.25 s)."""
    from hsi_pipeline.deployments.local.warm import pool_concurrency

    n = pool_concurrency()
    return ["--limit", str(n)] if n else []


# --------------------------------------------------------------------------------------------------
# Dask cluster: a `distributed` scheduler and N single-process workers (`hsi stack up --dask-workers N`)

DASK_SCHEDULER = "dask-scheduler"
DASK_WORKER = "dask-worker-"  # + 1..N: one recorded process (nanny + worker) each


def _dask_bin() -> str:
    cand = Path(sys.executable).parent / "dask"
    if cand.exists():
        return str(cand)
    found = shutil.which("dask")
    if not found:
        raise StackError("the `dask` command was not found next to this Python: run scripts/setup.sh")
    return found


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
        _dask_bin(),
        "scheduler",
        "--host",
        HOST,
        "--port",
        str(layout.ports["dask"]),
        "--dashboard-address",
        f"{HOST}:{layout.ports['dask_dashboard']}",
    ]
    proc.start(argv, _clean_env({"DASK_TEMPORARY_DIRECTORY": str(layout.dask_dir)}), cwd)
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
            _dask_bin(),
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
        proc.start(argv, _clean_env({"PREFECT_LOGGING_EXTRA_LOGGERS": "hsi"}), cwd)
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
