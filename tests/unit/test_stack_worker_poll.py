"""The local worker's poll interval (``HSI_WORKER_POLL_SECONDS``): the default the event path's start
target needs, an override for idle CPU, and a mistaken value answered before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hsi_pipeline.deployments.local.common import StackError
from hsi_pipeline.deployments.local.prefect_services import WORKER_POLL_ENV, worker_query_seconds

ROOT = Path(__file__).resolve().parents[2]


def test_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_POLL_ENV, raising=False)
    assert worker_query_seconds() == 0.25
    monkeypatch.setenv(WORKER_POLL_ENV, " 1.5 ")
    assert worker_query_seconds() == 1.5
    for bad in ("fast", "0", "-1", "120"):
        monkeypatch.setenv(WORKER_POLL_ENV, bad)
        with pytest.raises(StackError, match=f"{WORKER_POLL_ENV}='{bad}': give the worker's poll interval"):
            worker_query_seconds()


def test_stack_up_answers_a_bad_value_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    env = {**os.environ, "HSI_STACK_DIR": str(state), WORKER_POLL_ENV: "fast"}
    p = subprocess.run([sys.executable, "-m", "hsi_pipeline.cli.stack", "up", "--config-out", str(tmp_path / "c.yaml")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [f"hsi stack up failed: {WORKER_POLL_ENV}='fast': give the worker's poll interval in seconds, "
                     "e.g. 1 (0 < s <= 60)"], p.stderr  # fmt: skip
    assert "Traceback" not in p.stdout + p.stderr
    assert not (state / "pg").exists() and not (tmp_path / "c.yaml").exists()  # nothing was set up
