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
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hsi.scratch import owner_token, token_alive

__all__ = [
    "LEASE_S",
    "LEASE_WAIT_S",
    "Holder",
    "dead_holders",
    "file_lease",
    "lease_name",
    "record_holder",
    "release_dead_holders",
]

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


@dataclass(frozen=True)
class Holder:
    """A recorded lease holder: its record file, the lease id and the Prefect API that granted it."""

    record: Path
    name: str
    lease_id: str
    api_url: str


def record_holder(work_dir: Path | str, name: str, lease_id: str, api_url: str = "") -> Path:
    """Record that this process holds lease ``lease_id`` of ``name``; the caller removes the file."""
    d = Path(work_dir) / "leases"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}~{owner_token()}.held"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"lease_id": lease_id, "api_url": api_url}))
    os.replace(tmp, path)
    return path


def dead_holders(work_dir: Path | str, name: str | None = None) -> list[Holder]:
    """The recorded holders (of ``name``, or of every lease) that are dead processes of this host."""
    d = Path(work_dir) / "leases"
    out: list[Holder] = []
    for path in sorted(d.glob(f"{name or '*'}~*.held")) if d.is_dir() else []:
        held_name, _, token = path.name[: -len(".held")].partition("~")
        if (name and held_name != name) or token_alive(token) is not False:
            continue
        try:
            doc = json.loads(path.read_text())
            out.append(Holder(path, held_name, str(doc["lease_id"]), str(doc.get("api_url") or "")))
        except FileNotFoundError:  # another run released it first
            continue
        except (ValueError, KeyError, TypeError):  # unreadable: nothing to release, just the file
            out.append(Holder(path, held_name, "", ""))
    return out


def release_dead_holders(
    work_dir: Path | str,
    release: Callable[[Holder], object] | None,
    name: str | None = None,
    holders: list[Holder] | None = None,
) -> list[Holder]:
    """Release (``release(holder)``, errors logged) and forget the leases of dead holders of this host.

    ``release=None``: only forget the records; their leases then expire by themselves (``LEASE_S``).
    ``holders``: the caller's :func:`dead_holders` list (not looked up again)."""
    done = []
    for h in dead_holders(work_dir, name) if holders is None else holders:
        if release is not None and h.lease_id:
            try:
                release(h)
            except Exception as e:  # the lease expires anyway
                log.warning("%s: could not release the lease of a dead run (%s)", h.name, e)
                continue
        h.record.unlink(missing_ok=True)
        done.append(h)
    return done
