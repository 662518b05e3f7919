"""``hsi deploy --apply`` against a fresh private Prefect server that has no work pool: the pool is
created, every deployment exists (read back through the API), the worker command is printed; and a
configuration whose data lies inside the code checkout is refused before anything is created.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

try:
    from tests.integration.e2e_harness import PrivatePrefect, clean_env, prefect_api
except ImportError:  # pragma: no cover
    from e2e_harness import PrivatePrefect, clean_env, prefect_api  # type: ignore[no-redef]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
HSI = str(Path(sys.executable).parent / "hsi")
POOL = "hsi-fresh-pool"
EXPECTED = ["activate/new-scene", "activate/activate", "index/index", "product/run-product",
            "on-demand/on-demand", "products/envi"]  # fmt: skip


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePrefect]:
    server = PrivatePrefect(home=tmp_path_factory.mktemp("fresh-prefect"))
    server.start_server(timeout=600)  # a busy 2-core machine starts it slowly
    try:
        yield server
    finally:
        server.stop()


def _config(tmp: Path, data: Path) -> Path:
    cfg = {
        "storage": {"root": str(data / "assets")},
        "catalog": {"url": str(data / "catalog")},
        "work_dir": str(data / "work"),
        "sources": {"envi": {"patterns": ["**/*_envi_img"], "products": [{"product": "index:NDVI"}]}},
        "engine": {"work_pool": POOL},
    }
    path = tmp / "hsi.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hsi(args: list[str], api: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env({"PREFECT_API_URL": api})
    return subprocess.run([HSI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_apply_creates_the_pool_and_deployments_and_prints_the_worker_command(
    fresh: PrivatePrefect, tmp_path: Path
) -> None:
    assert prefect_api("GET", f"{fresh.api}/work_pools/{POOL}").status_code == 404
    config = _config(tmp_path, tmp_path / "data")
    p = _hsi(["deploy", "--apply", "-c", str(config)], fresh.api, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"work pool\t{POOL}\tcreated (process)" in p.stdout
    pool = prefect_api("GET", f"{fresh.api}/work_pools/{POOL}")
    assert pool.status_code == 200 and pool.json()["type"] == "process"
    assert pool.json()["base_job_template"]["variables"]["properties"]["command"]  # a usable template
    for name in EXPECTED:
        r = prefect_api("GET", f"{fresh.api}/deployments/name/{name}")
        assert r.status_code == 200, f"{name}: {r.text}"
        assert r.json()["work_pool_name"] == POOL
        assert f"deployment\t{name}" in p.stdout
    worker = [ln.strip() for ln in p.stdout.splitlines() if "worker start" in ln]
    assert worker and worker[0].endswith(f"worker start --pool {POOL}") and fresh.api in worker[0]
    again = _hsi(["deploy", "--apply", "-c", str(config)], fresh.api, tmp_path)  # pool exists: not re-created
    assert again.returncode == 0 and "created" not in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize("where", ["default", "inside"])
def test_apply_refuses_data_inside_the_checkout(fresh: PrivatePrefect, tmp_path: Path, where: str) -> None:
    args = ["deploy", "--apply"]
    if where == "inside":
        args += ["-c", str(_config(tmp_path, ROOT / "hsi-data-deploy-test"))]
    before = prefect_api("POST", f"{fresh.api}/deployments/count", json={}).json()
    p = _hsi(args, fresh.api, tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "inside the code checkout" in lines[0] and "--allow-inside-checkout" in lines[0]
    )
    assert "Traceback" not in p.stderr
    assert prefect_api("POST", f"{fresh.api}/deployments/count", json={}).json() == before
    assert not (ROOT / "hsi-data-deploy-test").exists()
