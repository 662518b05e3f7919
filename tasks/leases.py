"""The per-item lease with a Prefect API server: a global concurrency limit of one slot, held by lease.

Prefect's ``concurrency()`` context manager goes through a per-process singleton acquisition service
keyed by limit names. In a long-lived process (a notebook, ``hsi run`` over several scenes, the test
suite) a second acquisition of the same item's limit could wait forever, and a limit that another
run had just deleted was cached as "no limit" for the rest of the process. So the lease is taken
here with the synchronous client: ``increment-with-lease`` (retrying on 423 for ``wait_s``), a
daemon thread renewing it every ``LEASE_S / 3`` seconds, and ``decrement-with-lease`` at exit.

The lease id is recorded (:func:`hsi.lease.record_holder`) so that the next run on this machine
releases it at once if this process dies (:func:`hsi.lease.dead_holders`), instead of waiting for
the lease to expire.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL

from hsi.lease import LEASE_S, Holder, dead_holders, record_holder, release_dead_holders

__all__ = ["prefect_item_lease", "release_dead_leases", "release_lease"]

log = logging.getLogger(__name__)

LOCKED = 423


def _ensure_limit(client: SyncPrefectClient, name: str) -> None:
    with suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _acquire(client: SyncPrefectClient, name: str, wait_s: float) -> uuid.UUID | None:
    """The lease id, or None when another holder kept the slot for ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            resp = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_S
            )
        except httpx.HTTPStatusError as e:
            if e.response.status_code != LOCKED:
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # the server says when to ask again (from the slot's average occupancy)
            time.sleep(min(float(e.response.headers.get("Retry-After", 1.0)), left))
            continue
        body = resp.json()
        if body.get("limits"):
            return uuid.UUID(body["lease_id"])
        _ensure_limit(client, name)  # another run deleted the limit as we acquired: make it again


def _renew(lease_id: uuid.UUID, stop: threading.Event) -> None:
    """Renew the lease until ``stop``; a failed renewal is logged and tried again."""
    while not stop.wait(LEASE_S / 3):
        try:
            with get_client(sync_client=True) as client:
                client.renew_concurrency_lease(lease_id=lease_id, lease_duration=LEASE_S)
        except Exception as e:  # the API may be briefly away; the lease outlives a few misses
            log.warning("lease %s: renewal failed (%s); retrying", lease_id, e)


def release_dead_leases(
    work_dir: Path, name: str | None = None, client: SyncPrefectClient | None = None
) -> list[Holder]:
    """Release the Prefect leases recorded by dead runs of this machine (of ``name``, or all)."""
    dead = dead_holders(work_dir, name)
    if not dead:
        return []
    with ExitStack() as stack:
        c = client or stack.enter_context(get_client(sync_client=True))
        return release_dead_holders(work_dir, lambda h: release_lease(h, c), name, dead)


def release_lease(h: Holder, client: SyncPrefectClient | None = None) -> None:
    """Release the lease of a dead holder through Prefect's client (``client``, or one of its own)."""
    with ExitStack() as stack:
        c = client or stack.enter_context(get_client(sync_client=True))
        c.release_concurrency_slots_with_lease(uuid.UUID(h.lease_id))
    log.info("%s: released the lease of a dead run (%s)", h.name, h.record.name)


@contextmanager
def prefect_item_lease(name: str, work_dir: Path, wait_s: float) -> Iterator[bool]:
    """Hold the one-slot limit ``name``; yields whether it was had within ``wait_s`` seconds."""
    with get_client(sync_client=True) as client:
        _ensure_limit(client, name)
        # a run of this machine that died holding the lease: release it now rather than wait for expiry
        release_dead_leases(work_dir, name, client)
        lease = _acquire(client, name, wait_s)
    if lease is None:
        log.warning("%s: another run still holds the lease after %.0f s; working anyway", name, wait_s)
        yield False
        return
    record = record_holder(work_dir, name, str(lease), str(PREFECT_API_URL.value() or ""))
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lease, stop), name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        try:
            with get_client(sync_client=True) as client:
                client.release_concurrency_slots_with_lease(lease)
                record.unlink(missing_ok=True)
                # no limit per item left behind once nobody holds it
                with suppress(ObjectNotFound):
                    if client.read_global_concurrency_limit_by_name(name).active_slots == 0:
                        client.delete_global_concurrency_limit_by_name(name)
        except Exception as e:  # the lease expires by itself; the record lets the next run release it
            log.warning("%s: could not release lease %s (%s); it expires in %.0f s", name, lease, e, LEASE_S)
