"""Kill ``hsi activate`` at every fault point on both backends, rerun, and check the invariants.

See tests/faults/conftest.py for the backends and :func:`assert_clean`; docs/RELIABILITY.md holds
the table (``scripts/fault_table.py`` regenerates it from these tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import Backend, assert_clean, new_scene

pytestmark = pytest.mark.timeout(900)

POINTS = ["after-download", "mid-cog", "mid-upload", "after-upload", "mid-register", "after-register"]
KILLED = 137


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_fault_point_then_rerun(point: str, backend: Backend, tmp_path: Path) -> None:
    if point == "mid-upload" and backend.name == "static":
        point = "after-upload"  # a local copy has no parts; the kill lands after the upload instead
    big = point == "mid-upload" and backend.name == "pgstac-s3"  # a cube of more than one 5 MiB part
    item_id = new_scene(tmp_path, backend, *((128, 128) if big else ()))
    killed = backend.run("activate", item_id, fault=point)
    assert killed.returncode == KILLED, (killed.returncode, killed.stdout[-2000:], killed.stderr[-2000:])
    svc = backend.services()
    item = svc.catalog.get_item("aviris-ng-l2", item_id)
    # before the commit point nothing is registered; after it the item is complete
    assert (item is not None) == (
        point in ("mid-register", "after-register")
        and (point == "after-register" or backend.name == "static")
    ), point
    rerun = backend.run("activate", item_id)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    status = rerun.stdout.split("\t", 1)[0].split(" ")[0]  # "skipped (up to date)" -> "skipped"
    assert status == ("skipped" if item is not None else "activated"), rerun.stdout
    assert_clean(backend, item_id)


def test_clean_reclaims_a_killed_run_without_a_rerun(backend: Backend, tmp_path: Path) -> None:
    point = "mid-upload" if backend.name == "pgstac-s3" else "mid-cog"
    item_id = new_scene(tmp_path, backend, *((128, 128) if backend.name == "pgstac-s3" else ()))
    assert backend.run("activate", item_id, fault=point).returncode == KILLED
    runs = list((backend.work_dir / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "owner.json").is_file()
    svc = backend.services()
    if backend.name == "pgstac-s3":
        assert len(svc.store.incomplete_uploads(svc.store.root)) == 1  # type: ignore[attr-defined]
    out = backend.run("clean")
    assert out.returncode == 0, out.stderr
    removed = [ln for ln in out.stdout.splitlines() if ln.startswith("removed\t")]
    assert len(removed) == 1 and str(runs[0]) in removed[0] and "owner pid" in removed[0]
    assert not runs[0].exists()
    if backend.name == "pgstac-s3":
        assert any(ln.startswith("aborted\t") for ln in out.stdout.splitlines())
        assert svc.store.incomplete_uploads(svc.store.root) == []  # type: ignore[attr-defined]
    assert svc.catalog.get_item("aviris-ng-l2", item_id) is None
