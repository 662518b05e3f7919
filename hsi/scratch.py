"""Per-run scratch directories that the next run reclaims when their owner died.

Every run (an activation, a product, a raw fetch) works below ``<work_dir>/runs/<run id>/``, whose
``owner.json`` records the process (pid, host, the process start time, so a reused pid is not taken
for the owner) and when the run began. The run deletes its directory when it ends, successful or
not; a run killed with ``kill -9`` cannot, so :func:`reclaim` (called when a run starts, and by
``hsi clean``) deletes the directories whose owner is no longer alive, after undoing what they
recorded: unfinished S3 multipart uploads (``*.mpu.json``, see :mod:`hsi.storage.s3`) are aborted.

The same owner token names the temporary files of :class:`hsi.storage.local.LocalStore`
(``.<name>.<token>.<random>.part``), so a partial object left in a store by a dead writer is
recognised and deleted (:func:`token_alive`).

A directory owned by another host is never judged here (its owner may be alive) unless it is older
than ``foreign_max_age_s``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

__all__ = [
    "OWNER_FILE",
    "RUNS_DIR",
    "Owner",
    "Reclaimed",
    "RunScratch",
    "du",
    "open_run",
    "owner_token",
    "reclaim",
    "run_scratch",
    "token_alive",
]

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
OWNER_FILE = "owner.json"
FOREIGN_MAX_AGE_S = 7 * 24 * 3600.0
# legacy scratch (before per-run directories): <work_dir>/out/<item>-<hex>, <work_dir>/products/<pid>-<hex>
_LEGACY_DIRS = ("out", "products")


@cache
def _host() -> str:
    return socket.gethostname()


def _proc_start(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux), or None when no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    proc_start: int | None  # clock ticks since boot (None where /proc is absent)
    started: str  # ISO time the run began
    run_id: str = ""

    @classmethod
    def me(cls, run_id: str = "") -> Owner:
        pid = os.getpid()
        return cls(pid, _host(), _proc_start(pid), datetime.now(UTC).isoformat(), run_id)

    def alive(self) -> bool | None:
        """True/False on this host; None (unknown) for another host."""
        if self.host != _host():
            return None
        if not _pid_alive(self.pid):
            return False
        if self.proc_start is None:
            return True
        return _proc_start(self.pid) == self.proc_start


def owner_token() -> str:
    """``<host>~<pid>~<start ticks>`` of this process (safe in a file name)."""
    pid = os.getpid()
    return f"{_host().replace('.', '_').replace('~', '_')}~{pid}~{_proc_start(pid) or 0}"


def token_alive(token: str) -> bool | None:
    """Whether the process named by :func:`owner_token` still runs (None: another host or no token)."""
    parts = token.split("~")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    host, pid, start = parts[0], int(parts[1]), int(parts[2])
    if host != _host().replace(".", "_").replace("~", "_"):
        return None
    return Owner(pid, _host(), start or None, "").alive()


@dataclass
class RunScratch:
    """The scratch directory of one run; ``sub(name)`` makes a subdirectory, ``close()`` removes all."""

    path: Path
    owner: Owner

    @property
    def run_id(self) -> str:
        return self.path.name

    def sub(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> RunScratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_run(work_dir: Path | str, prefix: str = "run") -> RunScratch:
    """Create ``<work_dir>/runs/<prefix>-<random>/`` with its owner record (this process)."""
    runs = Path(work_dir) / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in prefix)[:80]
    run_id = f"{safe}-{uuid.uuid4().hex[:10]}"
    path = runs / run_id
    path.mkdir()
    owner = Owner.me(run_id)
    tmp = path / f".{OWNER_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(owner)))
    os.replace(tmp, path / OWNER_FILE)
    return RunScratch(path, owner)


@contextmanager
def run_scratch(work_dir: Path | str, prefix: str = "run") -> Iterator[RunScratch]:
    """:func:`open_run` as a context manager that always removes the directory."""
    s = open_run(work_dir, prefix)
    try:
        yield s
    finally:
        s.close()


def read_owner(run_dir: Path) -> Owner | None:
    try:
        return Owner(**json.loads((run_dir / OWNER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Reclaimed:
    path: str
    bytes: int
    reason: str
    undone: list[str] = field(default_factory=list)  # e.g. aborted multipart uploads


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _age_s(p: Path) -> float:
    try:
        return time.time() - p.stat().st_mtime
    except OSError:
        return 0.0


def _why_dead(run_dir: Path, grace_s: float, foreign_max_age_s: float, everything: bool) -> str | None:
    """Why ``run_dir`` may be deleted (None: keep it)."""
    owner = read_owner(run_dir)
    if owner is None:
        # being created right now (owner.json is written just after mkdir), or from a crashed mkdir
        return "no owner record" if _age_s(run_dir) > grace_s else None
    alive = owner.alive()
    if alive is False:
        return f"owner pid {owner.pid} is dead"
    if alive is None and (everything or _age_s(run_dir) > foreign_max_age_s):
        return f"owned by host {owner.host}, older than the limit" if not everything else "--all"
    return None


def reclaim(
    work_dir: Path | str,
    *,
    undo: Callable[[Path], list[str]] | None = None,
    grace_s: float = 600.0,
    foreign_max_age_s: float = FOREIGN_MAX_AGE_S,
    everything: bool = False,
) -> list[Reclaimed]:
    """Delete the run directories below ``work_dir`` whose owner is dead (``everything``: every one not
    owned by a live process of this host). ``undo(run_dir)`` runs first (e.g. aborts the multipart
    uploads the run recorded) and returns what it undid. Legacy scratch (``out/``, ``products/``,
    ``.*`` staging directories of ``extract/``) older than ``grace_s`` goes too."""
    work = Path(work_dir)
    out: list[Reclaimed] = []
    runs = work / RUNS_DIR
    if runs.is_dir():
        for d in sorted(runs.iterdir()):
            if not d.is_dir():
                continue
            why = _why_dead(d, grace_s, foreign_max_age_s, everything)
            if why is None:
                continue
            undone: list[str] = []
            if undo is not None:
                try:
                    undone = undo(d)
                except Exception as e:  # keep the directory: its record is needed to retry the undo
                    log.warning("could not undo run %s (%s); kept for the next run", d.name, e)
                    continue
            size = du(d)
            shutil.rmtree(d, ignore_errors=True)
            out.append(Reclaimed(str(d), size, why, undone))
    legacy = [work / name for name in _LEGACY_DIRS]
    for parent in legacy:
        if not parent.is_dir():
            continue
        for d in sorted(parent.iterdir()):
            if everything or _age_s(d) > grace_s:
                size = du(d) if d.is_dir() else d.stat().st_size
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
                out.append(Reclaimed(str(d), size, "legacy scratch (before per-run directories)"))
    extract = work / "extract"
    if extract.is_dir():
        for d in sorted(extract.glob(".*")):  # half-extracted staging of a killed run
            if d.is_dir() and (everything or _age_s(d) > grace_s):
                size = du(d)
                shutil.rmtree(d, ignore_errors=True)
                out.append(Reclaimed(str(d), size, "unfinished extraction"))
    for r in out:
        log.info("reclaimed %s (%d bytes): %s", r.path, r.bytes, r.reason)
    return out
