"""A short lease per output item, so concurrent runs of the same item do the work once.

The flow takes the lease of ``<collection>/<item id>`` after its "up to date?" check says no, checks
again once it holds it (a run that waited finds the item done and skips), does the work, releases.
Two implementations, chosen at the edge (``tasks/runtime.item_lease``):

* with a Prefect API server, a Prefect global concurrency limit of 1 slot named after the item, held
  with a lease that the holder renews while it runs and that expires when the holder dies;
* without one (the embedded default, all runs on one machine), :func:`file_lease`: an ``flock`` on
  ``<work_dir>/leases/<name>.lock``, which the kernel releases when the holder dies.

A Prefect lease of a run that died expires only after ``LEASE_S`` (plus the server's repossessor
interval). So that the next run on the same machine does not wait that long, the holder records its
lease id in ``<work_dir>/leases/<name>~<owner token>.held`` (:func:`record_holder`); a run about to
wait first releases the leases whose recorded holder is known dead (:func:`dead_holders`). Holders on
other hosts are never judged: their leases expire.

A lease that cannot be had within ``wait_s`` is not an error: the run goes on without it (the work
is idempotent; at worst it is done twice, as without a lease).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hsi.scratch import owner_token, token_alive

__all__ = ["LEASE_S", "LEASE_WAIT_S", "dead_holders", "file_lease", "lease_name", "record_holder"]

log = logging.getLogger(__name__)

LEASE_S = 60.0  # a dead holder's lease expires after this (Prefect leases; renewed while alive)
LEASE_WAIT_S = 3600.0  # how long a run waits for another run of the same item before working anyway


def lease_name(collection: str, item_id: str) -> str:
    """``hsi-item-<collection>-<item id>`` (safe characters; long names end with a hash)."""
    raw = f"{collection}-{item_id}"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", raw)
    if len(safe) > 100:
        safe = safe[:80] + "-" + hashlib.sha256(raw.encode()).hexdigest()[:16]
    return f"hsi-item-{safe}"


@contextmanager
def file_lease(work_dir: Path | str, name: str, wait_s: float = LEASE_WAIT_S) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``<work_dir>/leases/<name>.lock``; yields whether it was had."""
    d = Path(work_dir) / "leases"
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline, delay, held = time.monotonic() + wait_s, 0.05, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning(
                        "%s: another run still holds the lease after %.0f s; working anyway", name, wait_s
                    )
                    break
                time.sleep(delay)  # waiting for another process; the kernel has no flock timeout
                delay = min(delay * 2, 2.0)
        yield held
    finally:
        os.close(fd)  # releases the lock


def record_holder(work_dir: Path | str, name: str, lease_id: str) -> Path:
    """Record that this process holds lease ``lease_id`` of ``name``; the caller removes the file."""
    d = Path(work_dir) / "leases"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}~{owner_token()}.held"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(lease_id)
    os.replace(tmp, path)
    return path


def dead_holders(work_dir: Path | str, name: str) -> list[tuple[Path, str]]:
    """``(record, lease id)`` of the recorded holders of ``name`` that are dead processes of this host."""
    d = Path(work_dir) / "leases"
    out: list[tuple[Path, str]] = []
    for path in sorted(d.glob(f"{name}~*.held")) if d.is_dir() else []:
        token = path.name[len(name) + 1 : -len(".held")]
        if token_alive(token) is False:
            try:
                out.append((path, path.read_text().strip()))
            except FileNotFoundError:  # another run released it first
                continue
    return out
