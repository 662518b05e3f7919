"""6 concurrent activations of one scene against the shared stack: 1 does the work, 5 wait and skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.conftest import ROOT, Backend, assert_clean, new_scene

pytestmark = pytest.mark.timeout(1200)


@pytest.mark.parametrize("backend", ["pgstac-s3"], indirect=True)
def test_six_concurrent_activations_of_one_scene_do_the_work_once(backend: Backend, tmp_path: Path) -> None:
    item_id = new_scene(tmp_path, backend)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSI_", "PREFECT_API"))}
    env.update({"PREFECT_API_URL": backend.prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING"})
    cmd = [sys.executable, "-m", "hsi_pipeline.cli.main", "activate", item_id, "-c", str(backend.config)]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=1100) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [o[1][-1500:] for o in outs]
    statuses = sorted(o[0].split("\t", 1)[0].split(" ")[0] for o in outs)
    assert statuses == ["activated"] + ["skipped"] * 5, outs
    svc = backend.services()
    found = [i.id for i in svc.catalog.search(collections=["aviris-ng-l2"], ids=[item_id])]
    assert found == [item_id]
    assert_clean(backend, item_id)
    # the per-item concurrency limit is not left behind on the Prefect server
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hsi.lease import lease_name

    with temporary_settings({PREFECT_API_URL: backend.prefect_api}), get_client(sync_client=True) as c:
        names = {lim.name for lim in c.read_global_concurrency_limits(limit=200)}
    assert lease_name("aviris-ng-l2", item_id) not in names
