"""Warm flow-run starts (deployments/local/warm.py) with a real Prefect server and process worker.

A probe flow (written to a temporary project directory and deployed through the REST API with a
``set_working_directory`` pull step) records what its process sees: pid, parent pid, working
directory, a job-variable environment value and whether the heavy modules were already imported.
The tests check that runs of a pool configured by the starter are forked from it (parent = the
starter, rasterio already imported) yet behave exactly like cold runs: parameters, environment,
pull steps, logs in the API, failures, cancellation; that the client forwards signals and a dead
client takes its run down; that bad requests do not hurt the server; and that runs still start
(cold) when the starter is gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.e2e_harness import POOL, ROOT, PrivatePrefect, prefect_api
from tests.integration.moto_server import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WARM = ROOT / "deployments" / "local" / "warm.py"
PROBE = textwrap.dedent("""
    import json, logging, os, sys, threading
    from pathlib import Path
    from prefect import flow, get_run_logger

    @flow(name="probe")
    def probe(out: str, tag: str = "", block: bool = False, fail: bool = False) -> str:
        Path(out).write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
                                         "mark": os.environ.get("HSI_MARK"), "warm": "rasterio" in sys.modules,
                                         "level": logging.getLogger("prefect.flow_runs").getEffectiveLevel()}))
        get_run_logger().info("probe %s in pid %s", tag, os.getpid())
        if fail:
            raise ValueError(f"probe {tag} failed on purpose")
        if block:
            threading.Event().wait()  # until cancelled
        return tag
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("warm")
    project = tmp / "project"
    project.mkdir()
    (project / "probe_flow.py").write_text(PROBE)
    prefect = PrivatePrefect(tmp / "prefect")
    prefect.start_server()
    try:
        prefect.start_worker(warm=True)
        api = prefect.api
        flow_id = prefect_api("POST", f"{api}/flows/", json={"name": "probe"}).json()["id"]
        dep = prefect_api("POST", f"{api}/deployments/", json={
            "name": "probe", "flow_id": flow_id, "entrypoint": "probe_flow.py:probe", "work_pool_name": POOL,
            "job_variables": {"env": {"HSI_MARK": "from-job-variables"}},
            "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}],
        })  # fmt: skip
        assert dep.status_code in (200, 201), dep.text
        # as `hsi deploy` makes them for a process pool: the job's working_dir, no pull step; and a
        # logging setting of its own (the run must not inherit the starter's logging configuration)
        debug = prefect_api("POST", f"{api}/deployments/", json={
            "name": "probe-debug", "flow_id": flow_id, "entrypoint": "probe_flow.py:probe",
            "work_pool_name": POOL, "pull_steps": [],
            "job_variables": {"env": {"HSI_MARK": "debug", "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "DEBUG"},
                              "working_dir": str(project)},
        })  # fmt: skip
        assert debug.status_code in (200, 201), debug.text
        yield {"prefect": prefect, "api": api, "tmp": tmp, "project": project, "deployment": dep.json()["id"],
               "debug": debug.json()["id"]}  # fmt: skip
    finally:
        prefect.stop()


def _run(w: dict[str, Any], tag: str, deployment: str = "deployment", **params: Any) -> tuple[str, Path]:
    out = w["tmp"] / f"{tag}.json"
    r = prefect_api("POST", f"{w['api']}/deployments/{w[deployment]}/create_flow_run",
                   json={"parameters": {"out": str(out), "tag": tag, **params}})  # fmt: skip
    assert r.status_code in (200, 201), r.text
    return r.json()["id"], out


def _state(w: dict[str, Any], run_id: str) -> dict[str, Any]:
    return prefect_api("GET", f"{w['api']}/flow_runs/{run_id}").json()["state"]


def _final(w: dict[str, Any], run_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(lambda: (s := _state(w, run_id)) and s["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
                    and s, timeout=timeout, interval=0.25, what=f"flow run {run_id} final")  # fmt: skip


def _logs(w: dict[str, Any], run_id: str) -> list[str]:
    r = prefect_api("POST", f"{w['api']}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}})
    return [x["message"] for x in r.json()]


def test_pool_starts_runs_through_the_starter(warm: dict[str, Any]) -> None:
    pool = prefect_api("GET", f"{warm['api']}/work_pools/{POOL}").json()
    command = pool["base_job_template"]["variables"]["properties"]["command"]["default"]
    assert str(WARM) in command and str(warm["prefect"].starter_socket) in command
    # a burst queues in Prefect rather than forking a run per scene at once
    assert pool["concurrency_limit"] == max(4, 2 * (os.cpu_count() or 1))


def test_runs_are_forked_warm_and_behave_like_cold_runs(warm: dict[str, Any]) -> None:
    runs = [_run(warm, f"ok{i}") for i in range(3)]
    starter_pid = warm["prefect"].starter.pid
    pids = set()
    for run_id, out in runs:
        state = _final(warm, run_id)
        assert state["type"] == "COMPLETED", state
        seen = json.loads(out.read_text())
        assert seen["ppid"] == starter_pid  # forked by the starter ...
        assert seen["warm"] is True  # ... with the pipeline's modules already imported
        assert seen["cwd"] == str(warm["project"])  # the deployment's pull step ran
        assert seen["mark"] == "from-job-variables"  # the job's environment, not the starter's
        assert seen["level"] == logging.INFO  # Prefect's default, as the starter has it
        pids.add(seen["pid"])
        needle = f"in pid {seen['pid']}"
        wait_for(
            lambda rid=run_id, n=needle: any(n in m for m in _logs(warm, rid)),
            timeout=30,
            what="the run's log in the API",
        )  # shipped in batches, may land after the final state
        # the run's process is gone once it finished (it may still be exiting when its logs land)
        wait_for(lambda p=seen["pid"]: not _alive(p), timeout=30, what=f"run process {seen['pid']} gone")
    assert len(pids) == 3  # one process per run


def test_a_run_in_its_working_dir_with_its_own_logging_settings(warm: dict[str, Any]) -> None:
    """No pull step (the job's working_dir, as generated for process pools), and a run whose settings
    differ from the starter's gets its own logging configuration, not the one the fork inherited."""
    run_id, out = _run(warm, "debug", deployment="debug")
    assert _final(warm, run_id)["type"] == "COMPLETED"
    seen = json.loads(out.read_text())
    assert seen["ppid"] == warm["prefect"].starter.pid and seen["mark"] == "debug"
    assert seen["cwd"] == str(warm["project"])  # the worker started it in the job's working_dir
    assert seen["level"] == logging.DEBUG


def test_failure_is_reported_as_in_a_cold_run(warm: dict[str, Any]) -> None:
    run_id, _ = _run(warm, "bad", fail=True)
    state = _final(warm, run_id)
    assert state["type"] == "FAILED"
    assert "probe bad failed on purpose" in state["message"]


def test_cancellation_stops_the_forked_run(warm: dict[str, Any]) -> None:
    run_id, out = _run(warm, "blocked", block=True)
    wait_for(
        lambda: out.exists() and _state(warm, run_id)["type"] == "RUNNING", timeout=120, what="run running"
    )
    pid = json.loads(out.read_text())["pid"]
    r = prefect_api("POST", f"{warm['api']}/flow_runs/{run_id}/set_state",
                   json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})  # fmt: skip
    assert r.status_code in (200, 201), r.text
    state = _final(warm, run_id, timeout=120)
    assert state["type"] == "CANCELLED", state
    wait_for(lambda: not _alive(pid), timeout=60, what=f"run process {pid} gone")


def _client(warm: dict[str, Any], run_id: str) -> subprocess.Popen[bytes]:
    env = {**warm["prefect"]._env(), "PREFECT__FLOW_RUN_ID": run_id, "HSI_MARK": "by-hand"}
    return subprocess.Popen([sys.executable, str(WARM), "run", "--socket", str(warm["prefect"].starter_socket)],
                            env=env, cwd=warm["tmp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def _manual_run(warm: dict[str, Any], tag: str) -> tuple[str, Path]:
    """A flow run no worker picks up (its deployment is on a pool without workers)."""
    api = warm["api"]
    prefect_api("POST", f"{api}/work_pools/", json={"name": "nobody", "type": "process"})
    flow_id = prefect_api("POST", f"{api}/flows/", json={"name": "probe"}).json()["id"]
    dep = prefect_api("POST", f"{api}/deployments/", json={
        "name": "probe-by-hand", "flow_id": flow_id, "entrypoint": "probe_flow.py:probe", "work_pool_name": "nobody",
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(warm["project"])}}],
    }).json()  # fmt: skip
    out = warm["tmp"] / f"{tag}.json"
    r = prefect_api("POST", f"{api}/deployments/{dep['id']}/create_flow_run",
                   json={"parameters": {"out": str(out), "tag": tag, "block": True}})  # fmt: skip
    return r.json()["id"], out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_client_signals_reach_the_run(warm: dict[str, Any], sig: signal.Signals) -> None:
    """SIGTERM to the client is forwarded to the run; a SIGKILLed client takes its run down."""
    run_id, out = _manual_run(warm, f"signal-{sig.name}")
    client = _client(warm, run_id)
    try:
        wait_for(lambda: out.exists(), timeout=120, what="run started")
        seen = json.loads(out.read_text())
        assert seen["ppid"] == warm["prefect"].starter.pid and seen["mark"] == "by-hand"
        client.send_signal(sig)
        client.wait(timeout=60)
        wait_for(lambda: not _alive(seen["pid"]), timeout=60, what=f"run {seen['pid']} gone after {sig.name}")
        if sig == signal.SIGTERM:
            assert client.returncode != 0
    finally:
        if client.poll() is None:
            client.kill()


def test_bad_requests_do_not_hurt_the_server(warm: dict[str, Any]) -> None:
    path = str(warm["prefect"].starter_socket)
    for payload in (b"", b"garbage without descriptors"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            if payload:
                s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            answer = s.recv(100)
            assert answer == b"" or answer.startswith(b"error")
    run_id, out = _run(warm, "after-garbage")
    assert _final(warm, run_id)["type"] == "COMPLETED"
    assert json.loads(out.read_text())["ppid"] == warm["prefect"].starter.pid


def test_runs_start_cold_without_the_starter(warm: dict[str, Any]) -> None:
    """Last: stop the starter while a run is in flight (it is stopped with it, no orphan); the pool
    still points at the starter, and runs still complete (cold start)."""
    prefect: PrivatePrefect = warm["prefect"]
    run_id, out = _manual_run(warm, "in-flight")
    client = _client(warm, run_id)
    try:
        wait_for(lambda: out.exists(), timeout=120, what="in-flight run started")
        in_flight = json.loads(out.read_text())["pid"]
        prefect.starter.send_signal(signal.SIGTERM)
        assert prefect.starter.wait(timeout=60) == 0
        assert not _alive(in_flight)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert not prefect.starter_socket.exists()
    run_id, out = _run(warm, "cold")
    assert _final(warm, run_id)["type"] == "COMPLETED"
    seen = json.loads(out.read_text())
    assert seen["ppid"] != prefect.starter.pid and seen["mark"] == "from-job-variables"
