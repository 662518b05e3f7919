"""The local execution path of the ``hsi`` command line: which Prefect API a command uses, the shared
background server, crash bookkeeping, and the up-to-date fast path.

Every flow-invoking command runs its flows inside :func:`prefect_api`. The API is, in this order:

1. ``PREFECT_API_URL`` when it is set in the environment;
2. the configuration's ``prefect_api_url`` (``hsi.yaml``; e.g. the stack's server);
3. one shared local Prefect server that ``hsi`` starts in the background on first use and reuses
   (SQLite, state in ``$HSI_SERVER_DIR`` or ``$XDG_STATE_HOME/hsi/server``). A lock makes concurrent
   first commands start exactly one; readiness is polled on ``/api/health``. ``hsi server
   status|stop`` reports and stops it.

Flow runs made by the CLI carry the tags ``hsi-cli`` and ``hsi-cli-pid:<host>:<pid>:<start>``. On
entry, runs of this host still RUNNING/PENDING whose CLI process is gone (killed) are set CRASHED.

:func:`activation_up_to_date` / :func:`product_up_to_date` answer "is the item current?" from the
catalog with the ``hsi`` library alone, so a second ``hsi activate``/``hsi product`` returns before
Prefect is imported. This module imports neither Prefect nor heavy libraries at import time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hsi.errors import HSIError, TransientError

__all__ = [
    "CLI_TAG", "ServerError", "ServerInfo", "activation_up_to_date", "ensure_server", "mark_crashed_runs",
    "prefect_api", "product_up_to_date", "read_server", "server_dir", "server_status", "stop_server",
]  # fmt: skip

CLI_TAG = "hsi-cli"
PID_TAG_PREFIX = "hsi-cli-pid:"
SERVER_DIR_ENV = "HSI_SERVER_DIR"
SERVER_PORT_ENV = "HSI_SERVER_PORT"  # preferred port of the shared server (default 4280, else any free)
START_TIMEOUT_ENV = "HSI_SERVER_START_TIMEOUT"  # seconds to wait for a cold server (default 600)
DEFAULT_PORT = 4280
DEFAULT_START_TIMEOUT_S = 600.0
_POLL_S = 0.25
_QUIET_ENV = {  # telemetry off, no offline ERROR line, client and server alike
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


class ServerError(HSIError):
    """The shared local Prefect server could not be started or reached (message names the log)."""


class ApiUnavailableError(ServerError, TransientError):
    """A configured Prefect API (``PREFECT_API_URL`` or ``prefect_api_url``) does not answer."""


API_CHECK_S = 15.0  # how long a configured Prefect API may take to answer /health before we give up


# ------------------------------------------------------------------------------------ processes
def _proc_start(pid: int) -> str:
    """An identity of process ``pid`` that survives pid reuse: its start time in clock ticks ('' if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after "(comm)"


def _alive(pid: int, start: str = "") -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _proc_start(pid)
    if now == "":  # no /proc (not Linux): trust the signal
        return not Path("/proc/self/stat").exists()
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z" and (not start or now == start)


# -------------------------------------------------------------------------------------- server
def server_dir() -> Path:
    """State directory of the shared server: ``$HSI_SERVER_DIR``, else ``$XDG_STATE_HOME/hsi/server``."""
    explicit = os.environ.get(SERVER_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser().resolve() / "hsi" / "server"


@dataclass(frozen=True)
class ServerInfo:
    url: str  # API URL (…/api)
    pid: int
    pid_start: str
    port: int
    started: float  # epoch seconds
    log: str

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")


def _info_path(d: Path) -> Path:
    return d / "server.json"


def read_server(d: Path | None = None) -> ServerInfo | None:
    """The recorded server of state dir ``d`` (None when none was started or it is gone)."""
    d = d or server_dir()
    try:
        info = ServerInfo(**json.loads(_info_path(d).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if _alive(info.pid, info.pid_start) else None


def _healthy(url: str, timeout: float = 2.0) -> bool:
    import urllib.request  # imported where used: the up-to-date fast path needs no HTTP client

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:  # noqa: S310 - our own http URL
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_port() -> int:
    want = int(os.environ.get(SERVER_PORT_ENV) or DEFAULT_PORT)
    for port in (want, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServerError("no free local port for the Prefect server")


def _server_env(d: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(_QUIET_ENV)
    env.update(
        PREFECT_HOME=str(d / "home"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{d / 'prefect.db'}",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    return env


def _start(d: Path, timeout: float) -> ServerInfo:
    port = _free_port()
    log = d / "server.log"
    import subprocess

    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} hsi starts: {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=d,
            env=_server_env(d),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `hsi server stop` ends it and its children
        )
    url = f"http://127.0.0.1:{port}/api"
    info = ServerInfo(url, proc.pid, _proc_start(proc.pid), port, time.time(), str(log))
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if proc.poll() is not None:
            raise ServerError(
                f"the local Prefect server exited ({proc.returncode}) while starting; see {log}"
            )
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            raise ServerError(
                f"the local Prefect server did not answer on {url} within {timeout:g} s "
                f"(set {START_TIMEOUT_ENV} to wait longer); see {log}"
            )
        time.sleep(_POLL_S)  # polling a condition (the health endpoint), not synchronising by time
    _info_path(d).write_text(json.dumps(asdict(info)))
    return info


def ensure_server(notify: Callable[[str], None] | None = None) -> ServerInfo:
    """The shared local server, started in the background when none runs (one, even when racing)."""
    d = server_dir()
    info = read_server(d)
    if info is not None and _healthy(info.url):
        return info
    with _locked(d):
        info = read_server(d)  # another command may have started it while we waited for the lock
        if info is not None:
            deadline = time.monotonic() + _start_timeout()
            while not _healthy(info.url):  # alive but busy: wait for it rather than start a second one
                if time.monotonic() > deadline or not _alive(info.pid, info.pid_start):
                    break
                time.sleep(_POLL_S)
            else:
                return info
            _terminate(info.pid)
        info = _start(d, _start_timeout())
    if notify is not None:
        notify(
            f"started a local Prefect server in the background: UI {info.ui} "
            f"(`hsi server status`, `hsi server stop`)"
        )
    return info


def _start_timeout() -> float:
    try:
        return float(os.environ.get(START_TIMEOUT_ENV) or DEFAULT_START_TIMEOUT_S)
    except ValueError:
        return DEFAULT_START_TIMEOUT_S


def _terminate(pid: int, grace: float = 10.0) -> None:
    """TERM the process group of ``pid``, KILL what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
            if not _group_alive(pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return True
    for p in Path("/proc").iterdir():  # zombies of the group do not count
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_server() -> ServerInfo | None:
    """Stop the shared server (and its children); the stopped server, or None when none ran."""
    d = server_dir()
    with _locked(d):
        info = read_server(d)
        if info is not None:
            _terminate(info.pid)
            if _alive(info.pid, info.pid_start):  # never claim a stop that did not happen
                raise ServerError(f"the local Prefect server (pid {info.pid}) did not stop; see {info.log}")
        with contextlib.suppress(FileNotFoundError):
            _info_path(d).unlink()
    return info


def server_status() -> dict[str, Any]:
    """What ``hsi server status`` reports: state, URL, pid, uptime, state dir, database size, log."""
    d = server_dir()
    info = read_server(d)
    db = sum(p.stat().st_size for p in d.glob("prefect.db*") if p.is_file())  # with its -wal/-shm files
    out: dict[str, Any] = {
        "state": "stopped",
        "url": None,
        "ui": None,
        "pid": None,
        "uptime_s": None,
        "state_dir": str(d),
        "db_bytes": db,
        "log": str(d / "server.log"),
    }
    if info is not None:
        out.update(
            state="running" if _healthy(info.url) else "starting or unresponsive",
            url=info.url,
            ui=info.ui,
            pid=info.pid,
            uptime_s=round(time.time() - info.started, 1),
        )
    return out


# ------------------------------------------------------------------------------ crashed runs
def _pid_tag(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{PID_TAG_PREFIX}{socket.gethostname()}:{pid}:{_proc_start(pid)}"


def _api(url: str, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{url.rstrip('/')}/{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    for attempt in range(5):  # a busy SQLite server answers 503 "retry later", as Prefect's client retries
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the Prefect API URL
                raw = r.read()
            return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503) or attempt == 4:
                raise
            time.sleep(0.5 * 2**attempt)  # back-off before a retry the server asked for
    return None


def mark_crashed_runs(url: str) -> list[str]:
    """Set CRASHED the runs of this host's CLI processes that are gone but left runs RUNNING/PENDING.

    Returns the ids of the runs marked. Runs of live processes and of other hosts are left alone.
    """
    host = socket.gethostname()
    runs = _api(url, "POST", "flow_runs/filter", {
        "flow_runs": {"tags": {"all_": [CLI_TAG]},
                      "state": {"type": {"any_": ["RUNNING", "PENDING", "SCHEDULED", "CANCELLING"]}}},
        "limit": 200,
    }) or []  # fmt: skip
    marked = []
    for run in runs:
        tag = next((t for t in run.get("tags", []) if t.startswith(PID_TAG_PREFIX)), None)
        if tag is None:
            continue
        parts = tag.removeprefix(PID_TAG_PREFIX).rsplit(":", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _alive(int(parts[1]), parts[2]):
            continue
        msg = f"the hsi command (pid {parts[1]}) that ran this flow ended without reporting a final state"
        for tr in _api(url, "POST", "task_runs/filter", {
            "flow_runs": {"id": {"any_": [run["id"]]}},
            "task_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING"]}}},
        }) or []:  # fmt: skip
            _api(url, "POST", f"task_runs/{tr['id']}/set_state",
                 {"state": {"type": "CRASHED", "name": "Crashed", "message": msg}, "force": True})  # fmt: skip
        _api(url, "POST", f"flow_runs/{run['id']}/set_state",
             {"state": {"type": "CRASHED", "name": "Crashed", "message": msg}, "force": True})  # fmt: skip
        marked.append(str(run["id"]))
    return marked


# ----------------------------------------------------------------------------- the API context
def resolve_api_url(cfg: Any, notify: Callable[[str], None] | None = None) -> str:
    """``PREFECT_API_URL``, else the configuration's ``prefect_api_url``, else the shared local server.

    ``cfg``: a loaded ``PipelineConfig``, or a configuration path (None: ``$HSI_CONFIG``, else the default).
    """
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        if cfg is None or isinstance(cfg, str | Path):
            from hsi.config import load_config

            cfg = load_config(str(cfg) if cfg else os.environ.get("HSI_CONFIG") or None)
        url = cfg.prefect_api_url
    if url:  # a configured API: it must answer (bounded), else one line and exit 5
        _require_healthy(str(url).rstrip("/"))
        return str(url).rstrip("/")
    return ensure_server(notify).url


def _require_healthy(url: str) -> None:
    """A configured API must answer ``/health`` within :data:`API_CHECK_S` (bounded, one clear line)."""
    deadline = time.monotonic() + API_CHECK_S
    while not _healthy(url, timeout=5.0):
        if time.monotonic() >= deadline:
            where = (
                "PREFECT_API_URL"
                if os.environ.get("PREFECT_API_URL")
                else "prefect_api_url of the configuration"
            )
            raise ApiUnavailableError(
                f"the Prefect API at {url} ({where}) does not answer: start it (`hsi stack up`), or unset it "
                "to use the shared local server (`hsi server start`)"
            )
        time.sleep(_POLL_S)  # polling a condition (the health endpoint), not synchronising by time


@contextlib.contextmanager
def prefect_api(cfg: Any, notify: Callable[[str], None] | None = None) -> Iterator[str]:
    """Run the flows of a command against the resolved Prefect API (see the module docstring).

    Sets ``PREFECT_API_URL`` for this process before Prefect is imported, marks runs of killed CLI
    processes CRASHED, and tags the runs made inside with ``hsi-cli`` and this process's pid tag.
    """
    url = resolve_api_url(cfg, notify)
    # restored on exit: an in-process caller (a notebook, CliRunner) must not keep pointing at this API
    saved = {k: os.environ.get(k) for k in (*_QUIET_ENV, "PREFECT_API_URL")}
    for k, v in _QUIET_ENV.items():
        os.environ.setdefault(k, v)
    os.environ["PREFECT_API_URL"] = url
    try:
        try:
            mark_crashed_runs(url)
        except (OSError, ValueError) as e:  # bookkeeping must not stop the work; say what was skipped
            if notify is not None:
                notify(f"could not check {url} for runs of killed hsi commands: {e}")
        from prefect import tags
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}), tags(CLI_TAG, _pid_tag()):
            yield url
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


# --------------------------------------------------------------------------------- fast path
def _services(cfg: Any) -> Any:
    from hsi.services import Services

    return Services.from_config(cfg)


def _reclaim_dead_runs(svc: Any) -> None:
    """The planning tasks' housekeeping without Prefect: dead runs' scratch and uploads, and their
    item leases, released through the API that granted them (plain HTTP, as for crashed runs)."""
    from hsi.lease import Holder

    def release(h: Holder) -> None:
        if h.api_url:
            _api(
                h.api_url, "POST", "v2/concurrency_limits/decrement-with-lease", {"lease_id": h.lease_id}, 5.0
            )

    svc.reclaim_dead_runs(release)


def _fast_path_possible(cfg: Any) -> bool:
    # credentials from a Prefect block need Prefect: leave those configurations to the flow
    return not (cfg.storage.credentials_block or any(i.credentials_block for i in cfg.inputs))


def activation_up_to_date(cfg: Any, item_id: str, collection: str | None = None) -> dict[str, Any] | None:
    """The flow's ``skipped`` result when ``item_id``'s activated item is current (same key, assets
    complete), from the catalog alone; None when the work is needed or this cannot tell cheaply."""
    if not _fast_path_possible(cfg):
        return None
    try:
        from hsi import activation as act
        from hsi.cog_profile import CogProfile

        svc = _services(cfg)
        _reclaim_dead_runs(svc)  # what killed runs left, as the flow's planning task does
        raw = act.find_raw_item(svc, item_id, collection)
        plan = act.plan_activation(svc, raw, CogProfile())  # also repairs a static catalog's link
    except Exception:  # anything unusual: the flow decides and reports it
        return None
    if plan.skip is None:
        return None
    return {"status": "skipped", "reason": plan.skip, "collection": plan.collection, "item_id": plan.item_id,
            "product_key": plan.key}  # fmt: skip


def product_up_to_date(
    cfg: Any,
    product: str,
    item_id: str,
    params: Mapping[str, Any] | None = None,
    collection: str | None = None,
) -> dict[str, Any] | None:
    """The flow's ``skipped`` result when the product item of ``product`` on ``item_id`` is current."""
    if not _fast_path_possible(cfg):
        return None
    try:
        from hsi import production as prod

        svc = _services(cfg)
        _reclaim_dead_runs(svc)  # what killed runs left, as the flow's planning task does
        activated = prod.find_activated_item(svc, item_id, collection)
        plan = prod.plan_product(svc, activated, product, params or None)
        reason = prod.check_done(svc, plan)
        if reason is None:
            return None
        stored = svc.catalog.get_item(plan.collection, plan.item_id)
    except Exception:
        return None
    asset = stored.assets["data"].href if stored is not None and "data" in stored.assets else ""
    return {"status": "skipped", "reason": reason, "collection": plan.collection, "item_id": plan.item_id,
            "product_key": plan.key, "asset": asset, "product": plan.product}  # fmt: skip


@contextlib.contextmanager
def cli_api(cfg: Any) -> Iterator[str]:
    """:func:`prefect_api` for a command: notices on stderr, a server that cannot start is one line, exit 1."""
    import typer

    def notify(msg: str) -> None:
        typer.secho(msg, err=True, fg="cyan")

    try:
        ctx = prefect_api(cfg, notify)
        url = ctx.__enter__()
    except ServerError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(5 if isinstance(e, TransientError) else 1) from e
    with contextlib.ExitStack() as stack:
        stack.push(ctx)
        yield url
