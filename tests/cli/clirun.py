"""Helpers for CLI tests that run the real ``hsi`` entry point as subprocesses against a real Prefect server."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

HSI = str(Path(sys.executable).parent / "hsi")
MARK = "HSI_TEST_MARK"  # every process a test starts carries it: /proc/<pid>/environ finds our processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(server_dir: Path, mark: str) -> dict[str, str]:
    """The environment of a user without PREFECT_API_URL, the shared server's state isolated in ``server_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "HSI_CONFIG"}
    env.update(HSI_SERVER_DIR=str(server_dir), HSI_SERVER_PORT=str(free_port()), **{MARK: mark})
    env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    return env


def write_config(root: Path, **extra: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "storage": {"root": str(root / "assets")},
        "catalog": {"url": str(root / "catalog")},
        "work_dir": str(root / "work"),
        **extra,
    }
    path = root / "hsi.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def hsi(*args: str, env: dict[str, str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HSI, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"{p.args} exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def synth(out: Path, env: dict[str, str], seed: int, width: int = 16, height: int = 32) -> tuple[Path, str]:
    """A tiny synthetic AVIRIS-NG L2 scene; (header path, raw item id)."""
    p = hsi(
        "synth",
        str(out),
        "--width",
        str(width),
        "--height",
        str(height),
        "--seed",
        str(seed),
        env=env,
        cwd=out.parent,
    )
    hdr = Path(ok(p).strip().splitlines()[-1])
    scene = hdr.name.split("_")[0]
    return hdr, f"aviris-ng-{scene}"


def marked_pids(mark: str) -> set[int]:
    """Live (non-zombie) processes whose environment carries ``MARK=mark``."""
    needle = f"{MARK}={mark}".encode()
    out = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (p / "environ").read_bytes().split(b"\0"):
                state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    out.add(int(p.name))
    return out


def process_group(pgid: int) -> set[int]:
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.add(int(p.name))
    return out


def server_status(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    return json.loads(ok(hsi("server", "status", "--json", env=env, cwd=cwd)))


def cli_runs(api: str, pid: int | None = None) -> list[dict[str, Any]]:
    """Flow runs the CLI made (tag ``hsi-cli``), only those of process ``pid`` when given."""
    body = {"flow_runs": {"tags": {"all_": ["hsi-cli"]}}, "limit": 200, "sort": "START_TIME_DESC"}
    r = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=60)
    r.raise_for_status()
    runs: list[dict[str, Any]] = r.json()
    if pid is None:
        return runs
    prefix = f"hsi-cli-pid:{socket.gethostname()}:{pid}:"
    return [fr for fr in runs if any(t.startswith(prefix) for t in fr["tags"])]


@contextlib.contextmanager
def cpu_hog() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One busy process per core, stopped on exit."""
    n = os.cpu_count() or 1
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def new_mark() -> str:
    return uuid.uuid4().hex
