"""Warm flow-run starts for process workers: a fork server with Prefect and the flows pre-imported.

A Prefect process worker starts every flow run as a new Python process; before the flow body runs,
that process imports Prefect (~1.4 s here) and the entrypoint's modules (rasterio, pystac, hsi:
~0.8 s more), and Prefect 3.9's default launcher does it twice (a workspace supervisor, then the
engine). That is most of the time between an event and the flow's start.

This module removes it the way gunicorn's ``--preload`` or Android's zygote do:

* ``python deployments/local/warm.py serve --socket S`` imports Prefect's engine and the pipeline's
  flow modules once, stays single-threaded, and listens on the Unix socket ``S``.
* The work pool's job ``command`` is ``python deployments/local/warm.py run --socket S``
  (:func:`pool_command`; ``hsi stack up`` sets it as the pool's default). That client is stdlib
  only (starts in ~30 ms): it passes its stdin/stdout/stderr file descriptors, environment, working
  directory and arguments to the server, which forks; the child adopts them and runs
  ``python -m prefect.engine`` in-process (``runpy``), so it reads the flow run, runs the
  deployment's pull steps (none for the generated process-pool deployments), loads the entrypoint
  (already imported: milliseconds) and starts. Prefect's logging configuration is rebuilt only when
  the run's settings differ from the server's (~0.15 s otherwise spent per run).
* The client lives as long as the run: it forwards SIGTERM/SIGINT/SIGHUP to the run's process
  group (Prefect's cancellation kills the PID it started, i.e. the client), and exits with the
  run's exit status (re-raising a signal death), so the worker sees what it would have seen.
  If the client dies, the server kills the run's group.
* If the server is not running (or answers badly), the client ``exec``s ``python -m prefect.engine``
  itself: slower, never wrong.

Each run is still its own process (a fork: memory, GDAL state and crashes are isolated); the
server never runs flow code and never starts a thread, so forking it is safe.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: modules imported once by the server (the flow entrypoints' modules and what they import)
DEFAULT_PRELOAD = (
    "hsi_pipeline.flows.activate",
    "hsi_pipeline.flows.index",
    "hsi_pipeline.flows.product",
    "hsi_pipeline.flows.on_demand",
    "hsi_pipeline.flows.batch",
    # imported on first use by the runs (the CLI keeps them off its start-up path): spectral indices,
    # the STAC API client, TOA reflectance, netCDF granules
    "spyndex",
    "pystac_client",
    "hsi.catalog.stacapi",
    "hsi.toa",
    "hsi.netcdf",
    "hsi.sources.emit",
)
#: called by the server after the imports (``module:function``): caches the runs inherit (botocore's
#: S3 model and endpoint data: each run's S3 client is then built in ~20 ms instead of ~0.2 s)
WARM_UPS = (
    "hsi.storage.s3:warm_up",
    # one verified TLS context for Prefect's clients; Prefect's client schemas built
    "hsi_pipeline.deployments.local.prefect_warmups:share_tls_contexts",
    "hsi_pipeline.deployments.local.prefect_warmups:complete_prefect_models",
)
_HDR = struct.Struct("!I")
STOP_GRACE_S = 10.0  # on SIGTERM: how long running flow runs get to stop before SIGKILL
_MAX_REQUEST = 16 << 20  # environment + argv; a real one is a few kB


def pool_command(socket_path: str | Path) -> str:
    """The work-pool job ``command`` that starts a flow run through the server at ``socket_path``."""
    import shlex

    return shlex.join([sys.executable, str(Path(__file__).resolve()), "run", "--socket", str(socket_path)])


POOL_CONCURRENCY_ENV = "HSI_POOL_CONCURRENCY"


def pool_concurrency() -> int | None:
    """Flow runs the local pool runs at once: ``HSI_POOL_CONCURRENCY`` (0 = no limit), default twice the
    CPUs and at least 4. A burst of new scenes then queues in Prefect (SCHEDULED) instead of forking
    dozens of runs that starve each other and the API server (seen in the soak: 40 runs on 2 cores,
    API read timeouts); parents waiting on deployment runs (``hsi reprocess``) still leave slots."""
    raw = os.environ.get(POOL_CONCURRENCY_ENV, "").strip()
    if raw:
        n = int(raw)
        return n if n > 0 else None
    return max(4, 2 * (os.cpu_count() or 1))


def ensure_pool(api_url: str, pool: str, command: str, *, timeout: float = 30.0) -> None:
    """Create or update the process work pool ``pool`` so its runs start with ``command``, with
    :func:`pool_concurrency` as its concurrency limit."""
    import httpx
    from prefect.workers.process import ProcessWorker

    tpl = ProcessWorker.get_default_base_job_template()
    tpl["variables"]["properties"]["command"]["default"] = command
    limit = pool_concurrency()
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout) as c:
        r = c.post(
            "/work_pools/",
            json={"name": pool, "type": "process", "base_job_template": tpl, "concurrency_limit": limit},
        )
        if r.status_code == 409:
            r = c.patch(f"/work_pools/{pool}", json={"base_job_template": tpl, "concurrency_limit": limit})
        if r.status_code >= 400:
            raise RuntimeError(
                f"cannot set up work pool {pool!r} at {api_url}: HTTP {r.status_code} {r.text[:300]}"
            )


# --------------------------------------------------------------------------------------------- client


def _recv_line(sock: socket.socket, buf: bytearray) -> str | None:
    while b"\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


def _fallback(reason: str, argv: Sequence[str]) -> int:
    print(f"hsi warm start: {reason}; starting the flow run cold (python -m prefect.engine)", file=sys.stderr,
          flush=True)  # fmt: skip
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv])
    return 1  # not reached


def run_client(socket_path: str, argv: Sequence[str] = ()) -> int:
    """Start one flow run through the server (or cold, if it is unreachable); return its exit status."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
        req = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": list(argv)}).encode()
        socket.send_fds(sock, [_HDR.pack(len(req))], [0, 1, 2])
        sock.sendall(req)
    except OSError as e:
        sock.close()
        return _fallback(f"server {socket_path} unreachable ({e.strerror or e})", argv)
    buf = bytearray()
    first = _recv_line(sock, buf)
    if not first or not first.startswith("pid "):
        sock.close()
        return _fallback(f"server {socket_path} refused the run ({first or 'connection closed'})", argv)
    pid = int(first.split()[1])

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    while True:
        try:
            line = _recv_line(sock, buf)
            break
        except InterruptedError:  # pragma: no cover (PEP 475 retries recv itself)
            continue
    sock.close()
    if not line or not line.startswith("exit "):
        print(
            f"hsi warm start: lost the server {socket_path} while run pid {pid} was running", file=sys.stderr
        )
        return 1
    status = int(line.split()[1])
    if status < 0:  # killed by a signal: die the same way, so the worker reads the same status
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


# --------------------------------------------------------------------------------------------- server


class Server:
    """The fork server. Single-threaded: a selector over the listener, client connections and SIGCHLD."""

    def __init__(self, socket_path: str | Path, preload: Sequence[str] = DEFAULT_PRELOAD,
                 pool: str | None = None) -> None:  # fmt: skip
        self.path = Path(socket_path)
        self.preload = list(preload)
        self.pool = pool
        self.children: dict[int, socket.socket | None] = {}  # run pid -> its client (None: gone)
        self.stopping = False
        self.kill_at = 0.0  # when stopping: runs still alive at this time get SIGKILL
        self.own_fds: list[int] = []  # the server's listener, wake-up pipe and selector: closed in each run

    def _import(self) -> None:
        t0 = time.monotonic()
        for mod in (
            "prefect",
            "prefect.engine",
            "prefect.flow_engine",
            "prefect.deployments.steps",
            *self.preload,
        ):
            importlib.import_module(mod)
        for warm in WARM_UPS:
            mod, _, fn = warm.partition(":")
            getattr(importlib.import_module(mod), fn)()
        print(f"hsi warm start: preloaded {', '.join(self.preload)} in {time.monotonic() - t0:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip

    def serve(self) -> int:
        self._import()
        if self.pool:
            api = os.environ.get("PREFECT_API_URL")
            if not api:
                raise RuntimeError("--pool needs PREFECT_API_URL")
            ensure_pool(api, self.pool, pool_command(self.path))
            print(
                f"hsi warm start: work pool {self.pool!r} starts its runs through {self.path}",
                file=sys.stderr,
            )
        if threading.active_count() != 1:
            raise RuntimeError(
                f"start-up left threads running ({threading.enumerate()}); forking would be unsafe"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)  # the socket starts runs with the caller's environment: owner only
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(64)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._on_signal)
        sel = selectors.DefaultSelector()
        self.own_fds = [listener.fileno(), wake_r, wake_w, sel.fileno()]
        sel.register(listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        print(f"hsi warm start: serving on {self.path} (pid {os.getpid()})", file=sys.stderr, flush=True)
        try:
            while not (self.stopping and not self.children):
                if self.stopping and listener.fileno() >= 0:  # new runs start cold from now on
                    sel.unregister(listener)
                    listener.close()
                    self.path.unlink(missing_ok=True)
                if self.stopping and time.monotonic() >= self.kill_at:
                    for pid in list(self.children):
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGKILL)
                for key, _ in sel.select(timeout=1.0 if self.stopping else None):
                    if key.data == "accept" and not self.stopping:
                        self._accept(listener, sel)
                    elif key.data == "signal":
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                        self._reap(sel)
                    elif isinstance(key.data, int):  # a client connection became readable: it went away
                        self._client_gone(key.fileobj, key.data, sel)  # type: ignore[arg-type]
        finally:
            signal.set_wakeup_fd(-1)
            listener.close()
            self.path.unlink(missing_ok=True)
        return 0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
            self.stopping = (
                True  # runs get SIGTERM now (Prefect marks them) and SIGKILL after the grace period
            )
            self.kill_at = time.monotonic() + STOP_GRACE_S
            for pid in list(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector) -> None:
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(2)  # the client sends at once; a silent peer must not stall the server
            msg, fds, _flags, _addr = socket.recv_fds(conn, _HDR.size, 3)
            if len(msg) != _HDR.size or len(fds) != 3:
                raise ValueError("expected a length header and 3 file descriptors")
            (n,) = _HDR.unpack(msg)
            if n > _MAX_REQUEST:
                raise ValueError(f"request of {n} bytes")
            data = bytearray()
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise ValueError("connection closed mid-request")
                data += chunk
            req = json.loads(data)
            env, cwd, argv = dict(req["env"]), str(req["cwd"]), [str(a) for a in req.get("argv", [])]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"hsi warm start: bad request: {e}", file=sys.stderr, flush=True)
            with contextlib.suppress(OSError):
                conn.sendall(f"error {type(e).__name__}\n".encode())
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the run
            try:
                peers = [c.fileno() for c in (conn, *self.children.values()) if c is not None]
                _child(fds, env, cwd, argv, [*peers, *self.own_fds])
            finally:
                os._exit(70)  # _child never returns; this guards against a bug escaping into the server loop
        for fd in fds:
            os.close(fd)
        conn.setblocking(True)
        conn.sendall(f"pid {pid}\n".encode())
        self.children[pid] = conn
        sel.register(conn, selectors.EVENT_READ, pid)

    def _reap(self, sel: selectors.BaseSelector) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue
            conn = self.children.pop(pid)
            if conn is None:  # its client went away
                continue
            code = os.waitstatus_to_exitcode(status)
            sel.unregister(conn)
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {code}\n".encode())
            conn.close()

    def _client_gone(self, conn: socket.socket, pid: int, sel: selectors.BaseSelector) -> None:
        try:
            alive = conn.recv(1, socket.MSG_PEEK)
        except OSError:
            alive = b""
        if alive:  # clients never send after the request; drop stray bytes
            conn.recv(4096)
            return
        sel.unregister(conn)
        print(
            f"hsi warm start: the client of run pid {pid} went away; killing the run",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.children[pid] = None  # reaped later; its exit status has nowhere to go
        conn.close()


def _logging_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What Prefect's logging configuration reads besides the settings: ``PREFECT_LOGGING_*`` overrides."""
    return {k: v for k, v in environ.items() if k.startswith("PREFECT_LOGGING_")}


def _child(fds: list[int], env: dict[str, str], cwd: str, argv: list[str], close: list[int]) -> None:
    """In the forked run: adopt the client's stdio, environment and directory; run Prefect's engine."""
    code: Any = 0
    try:
        signal.set_wakeup_fd(-1)
        for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)  # own group: cancellation reaches the run and anything it spawned
        for fd in close:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        import prefect.context
        import prefect.logging.configuration as logconf

        before = prefect.context.GLOBAL_SETTINGS_CONTEXT.settings, _logging_env(os.environ)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        prefect.context.refresh_global_settings_context()  # settings come from the run's environment
        after = prefect.context.GLOBAL_SETTINGS_CONTEXT.settings, _logging_env(os.environ)
        if not logconf.PROCESS_LOGGING_CONFIG or after != before:
            # the server's logging configuration was made from other settings: make the run's (~0.15 s)
            logconf.setup_logging(incremental=False)
        import runpy

        sys.modules.pop("prefect.engine", None)  # run a fresh __main__ instance, as `python -m` would
        sys.argv = ["prefect.engine", *argv]
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def worker_command(args: Sequence[str]) -> list[str]:
    """argv that runs ``prefect <args>`` (e.g. ``worker start --pool P``) with the shared TLS context and
    the settings memo of :mod:`hsi_pipeline.deployments.local.prefect_warmups`: for each flow run it submits, a process worker makes
    several Prefect clients (its executor, the cancellation observer), each loading the CA bundle
    (~30 ms), and renders its settings twice (~0.1 s each)."""
    return [sys.executable, str(Path(__file__).resolve()), "prefect", *args]


def run_prefect_cli(args: Sequence[str]) -> int:
    from hsi_pipeline.deployments.local.prefect_warmups import (
        memoize_settings_environment,
        share_tls_contexts,
    )

    share_tls_contexts()
    memoize_settings_environment()
    from prefect.cli import app

    sys.argv = ["prefect", *args]
    app()  # exits with the command's status
    return 0


def _project_path() -> None:
    """``sys.path`` of the server and the worker: the project root, not this script's directory (its
    modules, e.g. ``services``, are not top-level packages)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != here]
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["prefect"]:  # everything after it is Prefect's CLI
        _project_path()
        return run_prefect_cli(raw[1:])
    ap = argparse.ArgumentParser(
        prog="warm.py", description="Warm flow-run starts for Prefect process workers."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve", help="run the fork server")
    sv.add_argument("--socket", required=True)
    sv.add_argument("--preload", nargs="*", default=list(DEFAULT_PRELOAD), help="modules to import once")
    sv.add_argument("--pool", help="process work pool (on $PREFECT_API_URL) to start through this server")
    rn = sub.add_parser("run", help="start one flow run through the server (the work pool's command)")
    rn.add_argument("--socket", required=True)
    rn.add_argument("args", nargs="*", help="passed to prefect.engine")
    sub.add_parser("prefect", help="run Prefect's CLI with shared TLS contexts: prefect worker start ...")
    ns = ap.parse_args(raw)
    if ns.cmd == "serve":
        _project_path()
        return Server(ns.socket, ns.preload, ns.pool).serve()
    return run_client(ns.socket, ns.args)


if __name__ == "__main__":
    sys.exit(main())
