"""The CLI's local execution path, end to end: real ``hsi`` subprocesses, a real shared Prefect server.

* 50 consecutive pipeline commands with every core busy: no failure;
* ``kill -9`` of ``hsi activate`` mid-write: nothing of ours is left but the shared server (which
  ``hsi server status`` reports), the killed run is CRASHED after the next command, a rerun succeeds;
* 6 concurrent first commands start exactly one server and all succeed on it.

Each test isolates the server's state dir (``HSI_SERVER_DIR``) and stops its server at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from clirun import (
    HSI,
    cli_env,
    cli_runs,
    cpu_hog,
    hsi,
    marked_pids,
    new_mark,
    ok,
    process_group,
    server_status,
    synth,
    write_config,
)

pytestmark = pytest.mark.timeout(3600)
N_COMMANDS = int(
    os.environ.get("HSI_CLI_STRESS_COMMANDS", "50")
)  # the issue asks for 50; fewer to try the test


@pytest.fixture
def local(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An isolated user: env (no PREFECT_API_URL, own server state dir), a config, a marker; stops the server."""
    mark = new_mark()
    env = cli_env(tmp_path / "server", mark)
    cfg = write_config(tmp_path / "data")
    yield {"env": env, "cfg": cfg, "mark": mark, "cwd": tmp_path}
    ok(hsi("server", "stop", env=env, cwd=tmp_path))
    assert marked_pids(mark) == set(), "a process of this test outlived `hsi server stop`"


def test_50_pipeline_commands_with_every_core_busy(local: dict[str, Any]) -> None:
    env, cfg, cwd = local["env"], str(local["cfg"]), local["cwd"]
    hdr, item = synth(cwd / "raw", env, seed=5)
    commands = [
        ("index", str(hdr), "-c", cfg),
        ("activate", item, "--force", "-c", cfg),
        ("product", "index:NDVI", item, "--force", "-c", cfg),
    ]
    failures = []
    with cpu_hog():
        for i in range(N_COMMANDS):
            args = commands[i % 3]
            p = hsi(*args, env=env, cwd=cwd)
            if p.returncode != 0:
                failures.append(f"{args}: {p.returncode}: {p.stderr[-500:]}")
    assert failures == []
    st = server_status(env, cwd)
    assert st["state"] == "running"
    runs = cli_runs(st["url"])
    names = sorted(r["name"] for r in runs)
    assert len(runs) >= N_COMMANDS and all(r["state_type"] == "COMPLETED" for r in runs), names
    assert sum(n.startswith("activate-") for n in names) == len(range(1, N_COMMANDS, 3))
    assert sum(n.startswith("product-") for n in names) == len(range(2, N_COMMANDS, 3))
    # one server for all the commands
    assert (Path(st["state_dir"]) / "server.log").read_text().count("hsi starts:") == 1


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen[str]) -> Path:
    """Poll until a file matching ``pattern`` exists below ``root`` (the process must still run)."""
    while True:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, (
            f"hsi exited ({proc.returncode}) before writing: {proc.stderr.read()[-2000:]}"
        )  # type: ignore[union-attr]
        time.sleep(0.05)  # polling for a file to appear (the condition), not a time-based synchronisation


def test_kill_9_mid_write_leaves_only_the_shared_server(local: dict[str, Any]) -> None:
    env, cfg, cwd, mark = local["env"], str(local["cfg"]), local["cwd"], local["mark"]
    hdr, item = synth(cwd / "raw", env, seed=11, width=64, height=1024)  # ~110 MB cube: seconds of writing
    ok(hsi("index", str(hdr), "-c", cfg, env=env, cwd=cwd))  # starts the shared server
    server = server_status(env, cwd)
    assert server["state"] == "running"
    before = marked_pids(mark)
    assert before == process_group(server["pid"]), "only the shared server runs between commands"

    proc = subprocess.Popen(
        [HSI, "activate", item, "-c", cfg], env=env, cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # the COG sink's private directory next to the cube it writes (.<name>.tif.<random>/: the
    # encoded tiles, the header's template); it exists only while the COG is being written
    staging = _wait_for("work/runs/*/**/.*.tif.*", local["cfg"].parent, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert staging.exists()  # it was killed mid-write, not after

    # nothing of ours is left but the shared server, which `hsi server status` reports
    assert marked_pids(mark) == process_group(server["pid"])
    st = server_status(env, cwd)
    assert (st["state"], st["pid"], st["url"]) == ("running", server["pid"], server["url"])

    killed = cli_runs(server["url"], proc.pid)
    assert [r["name"] for r in killed] == [f"activate-{item}"]
    assert killed[0]["state_type"] == "RUNNING"

    # the next command (any pipeline command) marks the killed run CRASHED ...
    ok(hsi("index", str(hdr), "-c", cfg, env=env, cwd=cwd))
    crashed = cli_runs(server["url"], proc.pid)[0]
    assert crashed["state_type"] == "CRASHED", crashed["state"]
    assert f"pid {proc.pid}" in crashed["state"]["message"]
    # ... and the rerun succeeds
    out = ok(hsi("activate", item, "-c", cfg, env=env, cwd=cwd))
    assert out.startswith(f"activated\taviris-ng-l2/{item}\t")
    assert marked_pids(mark) == process_group(server["pid"])


def test_6_concurrent_first_commands_share_one_server(local: dict[str, Any]) -> None:
    env, cfg, cwd = local["env"], str(local["cfg"]), local["cwd"]
    scenes = [synth(cwd / f"raw{i}", env, seed=100 + i) for i in range(6)]
    assert server_status(env, cwd)["state"] == "stopped"

    def run(args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return hsi(*args, env=env, cwd=cwd)

    with ThreadPoolExecutor(6) as pool:  # 6 first commands at once: one server starts
        indexed = list(pool.map(run, [("index", str(h), "-c", cfg) for h, _ in scenes]))
    for p in indexed:
        ok(p)
    st = server_status(env, cwd)
    assert st["state"] == "running"
    assert (Path(st["state_dir"]) / "server.log").read_text().count("hsi starts:") == 1
    with ThreadPoolExecutor(6) as pool:
        activated = list(pool.map(run, [("activate", item, "-c", cfg) for _, item in scenes]))
    for p, (_, item) in zip(activated, scenes, strict=True):
        assert ok(p).startswith(f"activated\taviris-ng-l2/{item}\t")
    assert server_status(env, cwd)["pid"] == st["pid"]

    runs = cli_runs(st["url"])
    assert sorted(r["name"] for r in runs if r["name"].startswith("activate-")) == sorted(
        f"activate-{item}" for _, item in scenes
    )
    assert len(runs) == 12 and {r["state_type"] for r in runs} == {"COMPLETED"}

    # a second activate of an up-to-date item answers from the catalog: no flow run, no server needed
    ok(hsi("server", "stop", env=env, cwd=cwd))
    out = ok(hsi("activate", scenes[0][1], "-c", cfg, env=env, cwd=cwd))
    assert out.startswith(f"skipped (up to date)\taviris-ng-l2/{scenes[0][1]}\t")
    assert server_status(env, cwd)["state"] == "stopped"


def test_a_server_that_does_not_come_up_is_one_line_naming_its_log(local: dict[str, Any]) -> None:
    env, cfg, cwd, mark = dict(local["env"]), str(local["cfg"]), local["cwd"], local["mark"]
    hdr, _ = synth(cwd / "raw", env, seed=7)
    env["HSI_SERVER_START_TIMEOUT"] = "0.2"  # no Prefect server answers that fast
    p = hsi("index", str(hdr), "-c", cfg, env=env, cwd=cwd)
    assert p.returncode == 1
    log = Path(env["HSI_SERVER_DIR"]) / "server.log"
    assert p.stderr.strip().splitlines() == [
        f"error: the local Prefect server did not answer on http://127.0.0.1:{env['HSI_SERVER_PORT']}/api "
        f"within 0.2 s (set HSI_SERVER_START_TIMEOUT to wait longer); see {log}"
    ]
    assert "hsi starts:" in log.read_text()
    assert marked_pids(mark) == set()  # the half-started server was stopped
    assert server_status(env, cwd)["state"] == "stopped"
