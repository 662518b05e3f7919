"""Warm-start fallback (deployments/local/warm.py): when the fork server refuses a run (a garbage reply
or a closed connection), the client execs ``python -m prefect.engine <argv>`` itself, cold.

Regression test for the client calling ``_fallback()`` without ``argv`` (a TypeError instead of a cold
start). The flow run id reaches the engine only as an argument, so the run completes only when the
original argv is passed on. Uses the Prefect API of the ``stack`` fixture (or a private server); the
run's deployment is on a pool no worker polls, so only our client starts it.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.e2e_harness import ROOT, clean_env
from tests.integration.e2e_harness import prefect_api as rest
from tests.integration.moto_server import prefect_api

__all__ = ["prefect_api"]  # fixture re-exported for pytest
pytestmark = [pytest.mark.timeout(600)]

WARM = ROOT / "deployments" / "local" / "warm.py"
PROBE = textwrap.dedent("""
    import json, os
    from pathlib import Path
    from prefect import flow

    @flow(name="warm-fallback-probe")
    def probe(out: str) -> str:
        Path(out).write_text(json.dumps({"pid": os.getpid(), "mark": os.environ.get("HSI_MARK")}))
        return "ok"
""")


@pytest.fixture
def refusing_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A Unix socket that accepts one start request and refuses it (``request.param``: the reply)."""
    path = tmp_path / "refusing.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            hdr, fds, _, _ = socket.recv_fds(conn, 4, 3)
            for fd in fds:
                os.close(fd)
            left = struct.unpack("!I", hdr)[0]  # read the whole request, then refuse it
            while left > 0 and (chunk := conn.recv(min(left, 65536))):
                left -= len(chunk)
            if request.param:
                conn.sendall(request.param)

    t = threading.Thread(target=refuse, daemon=True)
    t.start()
    try:
        yield path
    finally:
        listener.close()
        t.join(timeout=10)


@pytest.mark.parametrize("refusing_server", [b"garbage, not a pid\n", b""], indirect=True,
                         ids=["garbage-reply", "closed"])  # fmt: skip
def test_refused_run_starts_cold_with_its_argv(
    tmp_path: Path, prefect_api: str, refusing_server: Path
) -> None:
    api = prefect_api
    project = tmp_path / "project"
    project.mkdir()
    (project / "probe_flow.py").write_text(PROBE)
    pool = f"hsi-test-nobody-{uuid.uuid4().hex[:6]}"  # no worker polls it
    rest("POST", f"{api}/work_pools/", json={"name": pool, "type": "process"})
    flow_id = rest("POST", f"{api}/flows/", json={"name": "warm-fallback-probe"}).json()["id"]
    dep = rest("POST", f"{api}/deployments/", json={
        "name": pool, "flow_id": flow_id, "entrypoint": "probe_flow.py:probe", "work_pool_name": pool,
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}],
    }).json()  # fmt: skip
    out = tmp_path / "probe.json"
    try:
        run_id = rest("POST", f"{api}/deployments/{dep['id']}/create_flow_run",
                      json={"parameters": {"out": str(out)}}).json()["id"]  # fmt: skip
        env = clean_env({"PREFECT_API_URL": api, "HSI_MARK": "cold"})  # no PREFECT__FLOW_RUN_ID: argv only
        client = subprocess.run([sys.executable, str(WARM), "run", "--socket", str(refusing_server), run_id],
                                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert client.returncode == 0, client.stderr[-3000:]
        assert "refused the run" in client.stderr and "starting the flow run cold" in client.stderr
        state: dict[str, Any] = rest("GET", f"{api}/flow_runs/{run_id}").json()["state"]
        assert state["type"] == "COMPLETED", state
        assert json.loads(out.read_text())["mark"] == "cold"
    finally:
        rest("DELETE", f"{api}/deployments/{dep['id']}")
        rest("DELETE", f"{api}/work_pools/{pool}")
