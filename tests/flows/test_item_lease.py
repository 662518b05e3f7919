"""The per-item lease on a real Prefect API: exclusive, reusable in one process, released on exit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from hsi.lease import lease_name
from hsi_pipeline.tasks.leases import prefect_item_lease

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(120)]


def _limits() -> dict[str, int]:
    with get_client(sync_client=True) as c:
        return {lim.name: lim.active_slots for lim in c.read_global_concurrency_limits(limit=200)}


def test_the_same_item_twice_in_one_process_then_concurrently(tmp_path: Path) -> None:
    name = lease_name("aviris-ng-l2", "aviris-ng-ang20240101t000200")
    for _ in range(2):  # a notebook or `hsi run` takes the same item's lease again: no hang
        with prefect_item_lease(name, tmp_path, wait_s=30) as held:
            assert held and _limits()[name] == 1
            assert len(list((tmp_path / "leases").glob("*.held"))) == 1
        assert name not in _limits()  # no limit per item left behind
        assert list((tmp_path / "leases").glob("*.held")) == []
    # while one holder works, a second one waits; it gets the lease once the first releases
    entered, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with prefect_item_lease(name, tmp_path, wait_s=30) as held:
            order.append(("first", held))
            entered.set()
            release.wait(30)

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(30)
    with prefect_item_lease(name, tmp_path, wait_s=0.5) as held:  # held by the first: gives up
        assert not held
    release.set()
    with prefect_item_lease(name, tmp_path, wait_s=30) as held:
        order.append(("second", held))
    t.join()
    assert order == [("first", True), ("second", True)]
    assert name not in _limits()
