"""Shared pieces of the local stack: constants, layout of the state dir, process and HTTP helpers."""

from __future__ import annotations

import contextlib
import json
import os
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
    # the Dask cluster (`hsi stack up --dask-workers N`): scheduler and its HTTP/dashboard port
    "dask": 8786,
    "dask_dashboard": 8787,
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
        """The cluster's directory: ``<root>/pg``, or where that link points when the ``postgres``
        user cannot traverse the state dir (see ``services.ensure_pg_dir``)."""
        p = self.root / "pg"
        return p.resolve() if p.is_symlink() else p

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
    def dask_address(self) -> str:
        return f"tcp://{HOST}:{self.ports['dask']}"

    @property
    def dask_dashboard(self) -> str:
        return f"http://{HOST}:{self.ports['dask_dashboard']}"

    @property
    def dask_dir(self) -> Path:
        return self.root / "dask"

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


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 0.25,
    log_hint: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> float:
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
            raise StackError(
                f"{what} exited during start-up; last lines of {log_hint}:\n{_log_tail(log_hint)}"
            )
        if time.monotonic() >= deadline:
            hint = f"; see {log_hint}" if log_hint else ""
            raise StackError(f"{what} not ready after {timeout:.0f} s{hint}")
        time.sleep(interval)


def _run(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    input: str | None = None,
    check: bool = True,
    cwd: Path | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    if user and _is_root():
        argv = ["runuser", "-u", user, "--", *argv]
        # the caller's working directory may be closed to that user (a 0700 home, a mktemp -d)
        cwd = cwd or Path("/")
    p = subprocess.run(argv, env=env, input=input, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        tail = (p.stderr or p.stdout or "").strip()[-2000:]
        raise StackError(f"command failed ({p.returncode}): {' '.join(argv[:4])} ...\n{tail}")
    return p


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PREFECT_PROFILE"}
        and not k.startswith(("PG", "POSTGRES_", "AWS_"))
    }
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
            p = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        # pid == pgid (new session): down signals the whole group, so children go too
        self.pidfile.write_text(
            json.dumps({"pid": p.pid, "start": _proc_start_time(p.pid), "argv": argv[:3]})
        )
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


def venv_command(name: str) -> str:
    """The console script ``name`` next to this Python (the project's venv), else on PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise StackError(
            f"the `{name}` command was not found next to this Python or on PATH: run scripts/setup.sh"
        )
    return found
