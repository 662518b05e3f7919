"""Outages: S3 unreachable during an activation ends in bounded time with one clear line and no leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.faults.conftest import Backend, new_scene
from tests.integration.moto_server import free_port

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("backend", ["pgstac-s3"], indirect=True)
def test_s3_down_fails_with_one_clear_line_and_leaves_nothing(backend: Backend, tmp_path: Path) -> None:
    item_id = new_scene(tmp_path, backend)
    doc = yaml.safe_load(backend.config.read_text())
    doc["storage"]["endpoint_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens: S3 is down
    down = tmp_path / "down.yaml"
    down.write_text(yaml.safe_dump(doc))
    res = Backend(backend.name, down, backend.prefect_api, backend.work_dir).run("activate", item_id)
    assert res.returncode == 5  # a service could not be reached (cli/common.py EXIT_UNAVAILABLE)
    ours = [ln for ln in res.stderr.splitlines() if ln.startswith("failed\t")]
    assert len(ours) == 1 and ours[0].startswith(f"failed\t{item_id}: "), res.stderr[-3000:]
    assert "cannot reach S3" in ours[0] and "\n" not in ours[0]
    svc = backend.services()
    assert svc.catalog.get_item("aviris-ng-l2", item_id) is None
    runs = backend.work_dir / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # the failed run removed its own scratch
    print(f"S3 down: {len(res.stderr.splitlines())} stderr lines; ours: {ours[0]}")


@pytest.mark.parametrize("backend", ["pgstac-s3"], indirect=True)
def test_stac_api_down_fails_with_one_clear_line_and_leaves_nothing(backend: Backend, tmp_path: Path) -> None:
    item_id = new_scene(tmp_path, backend)
    doc = yaml.safe_load(backend.config.read_text())
    doc["catalog"]["url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens: the STAC API is down
    doc["catalog"]["retries"] = 1
    doc["catalog"]["timeout_s"] = 5
    down = tmp_path / "down.yaml"
    down.write_text(yaml.safe_dump(doc))
    res = Backend(backend.name, down, backend.prefect_api, backend.work_dir).run("activate", item_id)
    assert res.returncode == 5, res.stderr[-3000:]  # a service could not be reached
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "Traceback" not in res.stderr, res.stderr[-3000:]
    store = backend.services().store
    assert list(store.list(store.root)) == []  # nothing was uploaded
    assert store.incomplete_uploads(store.root) == []  # type: ignore[attr-defined]
    runs = backend.work_dir / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.parametrize("backend", ["static"], indirect=True)
def test_prefect_api_down_fails_with_one_clear_line_and_leaves_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    item_id = new_scene(tmp_path, backend)
    dead = f"http://127.0.0.1:{free_port()}/api"  # nothing listens: the configured Prefect API is down
    res = Backend(backend.name, backend.config, dead, backend.work_dir).run("activate", item_id)
    assert res.returncode == 5, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Prefect API" in lines[0] and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert backend.services().catalog.get_item("aviris-ng-l2", item_id) is None
    runs = backend.work_dir / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
