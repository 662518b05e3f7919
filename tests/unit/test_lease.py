"""hsi.lease: flock leases and the holder records that let a run release a dead run's Prefect lease."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hsi.lease import dead_holders, file_lease, lease_name, record_holder, release_dead_holders


def test_a_live_holder_is_not_dead_and_a_dead_one_is(tmp_path: Path) -> None:
    name = lease_name("aviris-ng-l2", "ang20240101t000500")
    mine = record_holder(tmp_path, name, "11111111-1111-1111-1111-111111111111")
    assert mine.is_file() and dead_holders(tmp_path, name) == []  # this process is alive
    code = (
        "import sys; from hsi.lease import record_holder; "
        "print(record_holder(sys.argv[1], sys.argv[2], '22222222-2222-2222-2222-222222222222'))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), name], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    theirs = Path(out.stdout.strip())
    assert theirs.is_file() and theirs != mine
    dead = dead_holders(tmp_path, name)
    assert [(h.record, h.name, h.lease_id) for h in dead] == [
        (theirs, name, "22222222-2222-2222-2222-222222222222")
    ]
    assert dead_holders(tmp_path) == dead  # every lease: the same one dead holder
    released: list[str] = []
    assert release_dead_holders(tmp_path, lambda h: released.append(h.lease_id)) == dead
    assert released == ["22222222-2222-2222-2222-222222222222"] and not theirs.exists() and mine.exists()
    # another item's records are not this item's, even when one name is a prefix of the other
    assert dead_holders(tmp_path, name[:-1]) == []


def test_a_record_from_another_host_is_never_judged(tmp_path: Path) -> None:
    name = lease_name("c", "i")
    (tmp_path / "leases").mkdir()
    (tmp_path / "leases" / f"{name}~elsewhere~1~1.held").write_text("33333333-3333-3333-3333-333333333333")
    (tmp_path / "leases" / f"{name}~garbage.held").write_text("x")
    assert dead_holders(tmp_path, name) == []


def test_file_lease_is_exclusive_and_released_on_exit(tmp_path: Path) -> None:
    with file_lease(tmp_path, "x") as held:
        assert held
        with file_lease(tmp_path, "x", wait_s=0.2) as again:  # a second fd of this process: blocked
            assert not again
    with file_lease(tmp_path, "x", wait_s=0.2) as held:
        assert held
