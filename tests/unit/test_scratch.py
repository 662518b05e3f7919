"""Per-run scratch (hsi.scratch), partial files of a local store, and the file lease (hsi.lease)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hsi.lease import file_lease, lease_name
from hsi.scratch import OWNER_FILE, RUNS_DIR, open_run, owner_token, reclaim, run_scratch, token_alive
from hsi.storage.local import LocalStore

# a child process that opens a run, writes into it and dies like kill -9 (no cleanup)
_DIE_IN_RUN = """
import os, sys
from hsi.scratch import open_run
s = open_run(sys.argv[1], "activate-x")
(s.sub("out") / "cube.tif").write_bytes(b"x" * 4096)
print(s.path, flush=True)
os._exit(137)
"""


def _dead_run(work: Path) -> Path:
    p = subprocess.run([sys.executable, "-c", _DIE_IN_RUN, str(work)], capture_output=True, text=True)
    assert p.returncode == 137, p.stderr
    return Path(p.stdout.strip())


def test_a_run_dir_records_its_owner_and_is_removed_when_the_run_ends(tmp_path: Path) -> None:
    with run_scratch(tmp_path, "activate-a") as s:
        owner = json.loads((s.path / OWNER_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["run_id"] == s.run_id and owner["proc_start"]
        assert s.owner.alive() is True
        (s.sub("out") / "f").write_text("x")
    assert not s.path.exists()


def test_reclaim_removes_the_scratch_of_a_dead_owner_only(tmp_path: Path) -> None:
    dead = _dead_run(tmp_path)
    assert (dead / "out" / "cube.tif").is_file()
    live = open_run(tmp_path, "activate-live")  # this process: alive
    undone: list[Path] = []
    out = reclaim(tmp_path, undo=lambda d: undone.append(d) or [f"upload of {d.name}"])
    assert [r.path for r in out] == [str(dead)] and out[0].bytes > 4096
    assert "dead" in out[0].reason and out[0].undone == [f"upload of {dead.name}"] and undone == [dead]
    assert not dead.exists() and live.path.is_dir()
    assert reclaim(tmp_path) == []  # nothing more to do
    live.close()
    assert list((tmp_path / RUNS_DIR).iterdir()) == []


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path: Path) -> None:
    s = open_run(tmp_path, "x")
    rec = json.loads((s.path / OWNER_FILE).read_text())
    rec["proc_start"] = rec["proc_start"] - 1  # same pid, different process start: another process
    (s.path / OWNER_FILE).write_text(json.dumps(rec))
    out = reclaim(tmp_path)
    assert [r.path for r in out] == [str(s.path)]


def test_scratch_of_another_host_is_kept_unless_everything(tmp_path: Path) -> None:
    s = open_run(tmp_path, "x")
    rec = json.loads((s.path / OWNER_FILE).read_text())
    rec["host"] = "elsewhere"
    (s.path / OWNER_FILE).write_text(json.dumps(rec))
    assert reclaim(tmp_path) == []
    assert [r.path for r in reclaim(tmp_path, everything=True)] == [str(s.path)]


def test_local_store_deletes_partial_files_of_dead_writers_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "assets")
    d = tmp_path / "assets" / "c" / "i"
    d.mkdir(parents=True)
    mine = d / f".i.tif.{owner_token()}.abc.part"
    mine.write_text("live writer")
    dead_token = owner_token().rsplit("~", 2)[0] + "~999999999~1"
    dead = d / f".i.tif.{dead_token}.def.part"
    dead.write_text("dead writer")
    assert token_alive(owner_token()) is True and token_alive(dead_token) is False
    assert store.abort_stale_uploads(store.root, older_than_s=3600) == [str(dead)]
    assert mine.exists() and not dead.exists()
    store.put_file(mine, store.uri("c", "i", "i.tif"))
    assert list(store.list(store.root)) == [str(d / "i.tif")]  # partial files are never listed


def test_file_lease_is_exclusive_and_released_when_the_holder_ends(tmp_path: Path) -> None:
    name = lease_name("aviris-ng-l2", "aviris-ng-ang/x")
    assert name == "hsi-item-aviris-ng-l2-aviris-ng-ang_x"
    with file_lease(tmp_path, name) as held:
        assert held
        with file_lease(tmp_path, name, wait_s=0) as second:
            assert not second  # another holder: not had (the caller works anyway, idempotently)
    with file_lease(tmp_path, name, wait_s=0) as again:
        assert again
