"""CLI runs under ``--config <stack config>`` go to the configured Prefect API (``prefect_api_url``), not to a
local server: they appear, completed and tagged with the CLI process, in the stack's Prefect API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hsi.sources.synthetic import synthesize
from tests.integration.e2e_harness import ng_scene_id

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from clirun import HSI, cli_env, cli_runs, new_mark  # noqa: E402

pytestmark = pytest.mark.timeout(1800)


def _hsi(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``hsi``; (its pid, stdout). Fails the test on a non-zero exit."""
    p = subprocess.Popen(
        [HSI, *args], env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, f"{args}: {p.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    return p.pid, out


def test_cli_runs_under_stack_config_appear_in_its_prefect_api(
    pipeline_config: Any, s3_store: Any, stack: dict[str, Any], tmp_path: Path
) -> None:
    assert pipeline_config.prefect_api_url == stack["prefect_api"]
    cfg = tmp_path / "hsi.stack.yaml"
    cfg.write_text(yaml.safe_dump(pipeline_config.model_dump(mode="json", exclude_none=True)))
    env = cli_env(tmp_path / "server", new_mark())  # no PREFECT_API_URL exported
    sid = ng_scene_id()  # a scene id no other test or user of the shared stack has
    hdr = synthesize(tmp_path / "raw", source="aviris-ng", level="l2", width=16, height=32, scene_id=sid)
    item = f"aviris-ng-{sid}"

    pid, out = _hsi("index", str(hdr), "-c", str(cfg), env=env, cwd=tmp_path)
    assert f"aviris-ng-raw/{item}" in out
    runs = cli_runs(stack["prefect_api"], pid)
    assert [(r["flow_id"] is not None, r["state_type"]) for r in runs] == [(True, "COMPLETED")]
    assert runs[0]["parameters"]["hrefs"] == [str(hdr)]

    pid, out = _hsi("activate", item, "-c", str(cfg), env=env, cwd=tmp_path)
    assert out.startswith(f"activated\taviris-ng-l2/{item}\t")
    runs = cli_runs(stack["prefect_api"], pid)
    assert [(r["name"], r["state_type"]) for r in runs] == [(f"activate-{item}", "COMPLETED")]
    # the configured API was used: no local server was started
    assert not (tmp_path / "server" / "server.json").exists()
