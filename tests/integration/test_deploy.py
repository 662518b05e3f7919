"""``hsi deploy --apply`` against the shared stack's Prefect server: the deployments and automations the
config implies exist (read back through the API) and ``prefect deployment run`` of each completes on
the stack's process worker.

The config's source is ``envi`` so the automations never react to other tests' aviris events on the
shared server; everything created here is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hsi.sources.synthetic import synthesize

try:
    from tests.integration.e2e_harness import ng_scene_id, prefect_api, wait_for
except ImportError:  # pragma: no cover
    from e2e_harness import ng_scene_id, prefect_api, wait_for  # type: ignore[no-redef]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
EXPECTED = [
    "activate/new-scene",
    "activate/activate",
    "index/index",
    "product/run-product",
    "on-demand/on-demand",
    "products-batch/products-batch",
    "products/envi",
]


@pytest.fixture(scope="module")
def applied(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("deploy")
    api = str(stack["prefect_api"]).rstrip("/")
    cfg = {
        "storage": {"root": f"s3://{stack['s3_bucket']}/test/deploy-{ng_scene_id()[-6:]}",
                    "endpoint_url": stack["s3_endpoint"], "region": stack["s3_region"],
                    "aws_profile": stack["aws_profile"], "shared_credentials_file": stack["shared_credentials_file"]},
        "catalog": {"url": stack["stac_api"]},
        "sources": {"envi": {"patterns": ["**/*_envi_img"], "products": [{"product": "index:NDVI"}]}},
        "engine": {"work_pool": stack["work_pool"]},
        "work_dir": str(tmp / "work"),
    }  # fmt: skip
    path = tmp / "hsi.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PREFECT_API_URL": api}
    p = subprocess.run([sys.executable, "-m", "hsi_pipeline.cli.main", "deploy", "--apply", "--config", str(path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    created: dict[str, Any] = {
        "api": api,
        "tmp": tmp,
        "config": path,
        "out": p.stdout,
        "deployments": {},
        "stac_api": str(stack["stac_api"]).rstrip("/"),
    }
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        for name in EXPECTED:
            r = prefect_api("GET", f"{api}/deployments/name/{name}")
            assert r.status_code == 200, f"{name}: {r.text}"
            created["deployments"][name] = r.json()
        autos = prefect_api("POST", f"{api}/automations/filter", json={}).json()
        created["automations"] = {
            a["name"]: a for a in autos if a["name"] in ("hsi-new-scene", "hsi-products-envi")
        }
        yield created
    finally:
        for a in created.get("automations", {}).values():
            httpx.delete(f"{api}/automations/{a['id']}", timeout=10)
        for d in created["deployments"].values():
            httpx.delete(f"{api}/deployments/{d['id']}", timeout=10)


def test_apply_creates_the_deployments_and_automations_the_config_implies(applied: dict[str, Any]) -> None:
    deps, autos = applied["deployments"], applied["automations"]
    assert [
        ln.split("\t")[1] for ln in applied["out"].splitlines() if ln.startswith("deployment\t")
    ] == EXPECTED
    for d in deps.values():
        assert d["work_pool_name"] == "hsi-process"
        assert d["job_variables"]["env"]["HSI_CONFIG"] == str(applied["config"].resolve())
        # a process pool's runs start in the checkout (the job's working_dir): no pull step
        assert d["pull_steps"] == [] and d["job_variables"]["working_dir"] == str(ROOT)
    assert deps["products/envi"]["parameters"] == {"products": [{"product": "index:NDVI", "params": {}}]}
    assert set(autos) == {"hsi-new-scene"}  # the products run in the activation run (run_products)
    assert deps["activate/activate"]["parameters"] == {"run_products": True}
    new = autos["hsi-new-scene"]
    assert new["trigger"]["expect"] == ["hsi.raw.available"] and new["trigger"]["match"] == {
        "hsi.source": ["envi"]
    }
    (action,) = new["actions"]
    assert action["type"] == "run-deployment" and action["deployment_id"] == deps["activate/new-scene"]["id"]
    assert action["parameters"]["uri"] == "{{ event.payload.uri }}"
    assert action["parameters"]["run_products"] is True
    assert action["parameters"]["trigger"]["automation_id"] == "{{ automation.id | string }}"


def _run(api: str, name: str, params: dict[str, Any]) -> str:
    p = subprocess.run([PREFECT, "deployment", "run", name, "--params", json.dumps(params)], cwd=ROOT,
                       env={**os.environ, "PREFECT_API_URL": api}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"UUID:\s*([0-9a-f-]{36})", p.stdout)
    assert m, p.stdout
    return m.group(1)


def _final(api: str, run_id: str) -> dict[str, Any] | None:
    r = prefect_api("GET", f"{api}/flow_runs/{run_id}").json()
    return r if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def _wait(api: str, runs: dict[str, str]) -> None:
    for name, rid in runs.items():
        fr = wait_for(lambda rid=rid: _final(api, rid), timeout=400, interval=1.0, what=f"run of {name}")
        assert fr["state_type"] == "COMPLETED", f"{name}: {fr['state']}"


def test_prefect_deployment_run_of_each_completes_on_the_worker(applied: dict[str, Any]) -> None:
    api, tmp = applied["api"], applied["tmp"]
    a, b = ng_scene_id(), ng_scene_id()
    hdr_a = synthesize(tmp / a, source="aviris-ng", level="l2", width=24, height=32, scene_id=a, seed=2)
    hdr_b = synthesize(tmp / b, source="aviris-ng", level="l2", width=24, height=32, scene_id=b, seed=3)
    item = f"aviris-ng-{a}"
    _wait(api, {"index/index": _run(api, "index/index", {"hrefs": [str(hdr_a)]})})
    _wait(api, {"activate/activate": _run(api, "activate/activate", {"item_id": item})})
    _wait(api, {
        "product/run-product": _run(api, "product/run-product", {"item_id": item, "product": "index:NDVI"}),
        "products/envi": _run(api, "products/envi", {"item_id": item, "collection": "aviris-ng-l2"}),
        "activate/new-scene": _run(api, "activate/new-scene", {"uri": str(hdr_b), "source": "aviris-ng"}),
    })  # fmt: skip
    # on demand over this scene's footprint and acquisition second only (the shared catalog holds others)
    when = f"20{a[5:7]}-{a[7:9]}-{a[9:11]}T{a[12:14]}:{a[14:16]}:{a[16:18]}Z"
    item_json = httpx.get(f"{applied['stac_api']}/collections/aviris-ng-raw/items/{item}", timeout=10).json()
    _wait(
        api,
        {
            "on-demand/on-demand": _run(
                api,
                "on-demand/on-demand",
                {
                    "products": ["index:NDVI", "index:NDWI_GAO"],
                    "bbox": item_json["bbox"],
                    "start": when,
                    "end": when,
                    "sources": ["aviris-ng"],
                },
            )
        },
    )
    ndwi = httpx.get(
        f"{applied['stac_api']}/collections/hsi-index-ndwi_gao/items/{item}-index-ndwi_gao", timeout=10
    )
    assert ndwi.status_code == 200, ndwi.text
