"""Operating the catalog over time (issue 14 must-shows 1 and 2, failures and replay, lineage on a
static catalog): ``hsi plan`` / ``hsi reprocess`` / ``hsi replay --failed`` / ``hsi lineage`` through
the CLI, flows run in this process against a real (test) Prefect API.

Two tiny synthetic AVIRIS-NG scenes, configured products NDVI and tree mortality.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hsi.config import load_config
from hsi.failures import get_failure, list_failures
from hsi.products.registry import default_registry
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.validation import validate_item
from hsi_pipeline.cli.main import app
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.index import index_scenes
from hsi_pipeline.flows.product import run_product

pytestmark = pytest.mark.usefixtures("prefect_harness")

SCENES = ("ang20230101t000100", "ang20230102t000200")
A, B = (f"aviris-ng-{s}" for s in SCENES)
PRODUCTS = ("index:NDVI", "tree-mortality")
runner = CliRunner()


def hsi(*args: str) -> Any:
    """Run ``hsi ...``; JSON output parsed when ``--json`` is among the arguments."""
    res = runner.invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, f"hsi {' '.join(args)} -> {res.exit_code}\n{res.output}"
    return json.loads(res.stdout) if "--json" in args else res.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ops")
    cfg = root / "hsi.yaml"
    cfg.write_text(yaml.safe_dump({
        "storage": {"root": str(root / "assets")}, "catalog": {"url": str(root / "catalog")},
        "work_dir": str(root / "work"),
        "sources": {"aviris-ng": {"products": [{"product": p} for p in PRODUCTS]}},
    }))  # fmt: skip
    hdrs = [
        synthesize(root / "raw" / s, width=32, height=40, scene_id=s, seed=i) for i, s in enumerate(SCENES)
    ]
    assert {r["item_id"] for r in index_scenes(hrefs=[str(h) for h in hdrs], config=str(cfg))} == {A, B}
    return {"config": str(cfg), "svc": Services.from_config(load_config(cfg)), "root": root}


def plan(env: dict[str, Any], *extra: str) -> dict[str, Any]:
    return hsi("plan", "-c", env["config"], "--json", *extra)  # type: ignore[no-any-return]


def states(p: dict[str, Any]) -> dict[str, str]:
    return {r["item_id"]: r["state"] for r in p["rows"]}


def items(env: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every item of the catalog: ``collection/id`` -> properties (read back and validated)."""
    out = {}
    for it in env["svc"].catalog.search():
        validate_item(it)
        out[f"{it.collection_id}/{it.id}"] = it.properties
    return out


@contextlib.contextmanager
def bumped_tree_mortality() -> Iterator[str]:
    """tree-mortality registered with version 9.9.9 (the old one is restored afterwards)."""
    reg = default_registry()
    old = reg.get("tree-mortality")
    reg.register(dataclasses.replace(old, version="9.9.9"), replace=True)
    try:
        yield old.version
    finally:
        reg.register(old, replace=True)


def test_missing_then_reprocess_missing_publishes_everything_with_versions(env: dict[str, Any]) -> None:
    p = plan(env)
    assert p["summary"] == {"missing": 6, "stale": 0, "failed": 0, "up-to-date": 0, "total": 6}
    assert hsi("reprocess", "-c", env["config"], "--missing", "--dry-run", "--json")["jobs"][0]["activate"]
    out = hsi("reprocess", "-c", env["config"], "--missing", "--direct", "--json")
    assert out["mode"] == "direct" and len(out["rows"]) == 6
    assert {r["status"] for r in out["rows"]} == {"activated", "published"}
    assert plan(env)["summary"]["up-to-date"] == 6
    got = items(env)
    assert len(got) == 8  # 2 raw + 2 activated + 4 products, each once
    for key, props in got.items():
        if "-raw/" in key:
            continue
        assert props["processing:version"] == props["hsi:algorithm"]["version"]  # what changed is visible
        assert props["processing:datetime"].endswith("Z")


def test_version_bump_lists_exactly_those_stale_and_reprocess_stale_updates_keys(env: dict[str, Any]) -> None:
    with bumped_tree_mortality() as old_version:
        _bump_and_reprocess(env, old_version)
    # back to the registered version: the same two are stale again, and reprocessing restores them
    assert {r["item_id"] for r in plan(env)["rows"] if r["state"] == "stale"} == {
        f"{A}-tree-mortality", f"{B}-tree-mortality"}  # fmt: skip
    hsi("reprocess", "-c", env["config"], "--stale", "--direct", "--json")
    assert plan(env)["summary"]["up-to-date"] == 6


def _bump_and_reprocess(env: dict[str, Any], bumped_tree_mortality: str) -> None:
    before = items(env)
    p = plan(env)
    stale = {r["item_id"]: r for r in p["rows"] if r["state"] == "stale"}
    assert set(stale) == {f"{A}-tree-mortality", f"{B}-tree-mortality"}  # exactly those
    assert all(f"algorithm version {bumped_tree_mortality} -> 9.9.9" in r["reason"] for r in stale.values())
    assert p["summary"]["stale"] == 2 and p["summary"]["up-to-date"] == 4
    out = hsi("reprocess", "-c", env["config"], "--stale", "--direct", "--json")
    assert sorted((r["scene"], r["target"], r["status"]) for r in out["rows"]) == [
        (A, "tree-mortality", "published"), (B, "tree-mortality", "published")]  # fmt: skip
    after_plan = plan(env)
    assert after_plan["summary"]["stale"] == 0 and after_plan["summary"]["up-to-date"] == 6
    after = items(env)
    assert after.keys() == before.keys()  # item count unchanged: replaced, never duplicated
    for sid in (A, B):
        k = f"hsi-tree-mortality/{sid}-tree-mortality"
        row = next(r for r in after_plan["rows"] if r["item_id"] == f"{sid}-tree-mortality")
        assert after[k]["hsi:product_key"] == row["expected_key"] != before[k]["hsi:product_key"]
        assert after[k]["processing:version"] == "9.9.9"
        n = f"hsi-index-ndvi/{sid}-index-ndvi"
        assert after[n]["hsi:product_key"] == before[n]["hsi:product_key"]  # untouched
        assert after[n]["processing:datetime"] == before[n]["processing:datetime"]


def test_forced_activation_makes_products_stale_and_downstream_redoes_them(env: dict[str, Any]) -> None:
    assert activate_scene(item_id=A, force=True, config=env["config"])["status"] == "activated"
    p = plan(env)
    stale = {r["item_id"]: r["reason"] for r in p["rows"] if r["state"] == "stale"}
    assert set(stale) == {f"{A}-index-ndvi", f"{A}-tree-mortality"}
    assert all("activated again" in why for why in stale.values())
    before = items(env)
    # the activation alone (no --downstream) leaves the products stale
    hsi("reprocess", "-c", env["config"], "--collection", "aviris-ng-l2", "--scene", A, "--direct", "--json")
    assert {r["item_id"] for r in plan(env)["rows"] if r["state"] == "stale"} == set(stale)
    out = hsi("reprocess", "-c", env["config"], "--collection", "aviris-ng-l2", "--scene", A, "--downstream",
              "--direct", "--json")  # fmt: skip
    assert sorted((r["stage"], r["target"], r["status"]) for r in out["rows"]) == [
        ("activate", A, "activated"), ("product", "index:NDVI", "published"),
        ("product", "tree-mortality", "published")]  # fmt: skip
    assert plan(env)["summary"] == {"missing": 0, "stale": 0, "failed": 0, "up-to-date": 6, "total": 6}
    after = items(env)
    assert after.keys() == before.keys()
    act = after[f"aviris-ng-l2/{A}"]["processing:datetime"]
    for prod in ("hsi-index-ndvi", "hsi-tree-mortality"):
        assert after[f"{prod}/{A}-{prod[4:]}"]["processing:datetime"] > act  # redone after the activation
        assert after[f"{prod}/{B}-{prod[4:]}"] == before[f"{prod}/{B}-{prod[4:]}"]  # B untouched


def test_failure_is_planned_with_its_reason_and_replay_runs_it_once(env: dict[str, Any]) -> None:
    svc = env["svc"]
    cube = Path(svc.catalog.get_item("aviris-ng-l2", B).assets["cube"].href)
    cube.unlink()  # the scene's cube is lost: a new product on it fails
    with pytest.raises(Exception, match=cube.name):
        run_product(item_id=B, product="index:NDWI", config=env["config"])
    rec = get_failure(svc, "hsi-index-ndwi", f"{B}-index-ndwi")
    assert rec is not None and rec.stage == "product" and cube.name in rec.reason and rec.flow_run_id
    p = plan(env, "--product", "index:NDWI")
    row = next(r for r in p["rows"] if r["item_id"] == f"{B}-index-ndwi")
    assert row["state"] == "failed" and cube.name in row["reason"] and row["failed_at"] == rec.failed_at
    assert states(p)[f"{A}-index-ndwi"] == "missing"
    assert activate_scene(item_id=B, force=True, config=env["config"])["status"] == "activated"  # repaired
    out = hsi("replay", "--failed", "-c", env["config"], "--direct", "--json")
    assert [(r["target"], r["status"]) for r in out["rows"]] == [
        (f"hsi-index-ndwi/{B}-index-ndwi", "published")
    ]
    assert list(list_failures(svc)) == []  # cleared by the successful run
    assert states(plan(env, "--product", "index:NDWI"))[f"{B}-index-ndwi"] == "up-to-date"
    assert "0 failure(s)" in hsi("replay", "--failed", "-c", env["config"])  # nothing left: no run


def test_lineage_up_and_down_from_the_catalog(env: dict[str, Any]) -> None:
    down = hsi("lineage", f"aviris-ng-raw/{A}", "--down", "-c", env["config"], "--json")
    assert {(e["from"], e["to"]) for e in down["edges"]} == {
        (f"aviris-ng-raw/{A}", f"aviris-ng-l2/{A}"),
        (f"aviris-ng-l2/{A}", f"hsi-index-ndvi/{A}-index-ndvi"),
        (f"aviris-ng-l2/{A}", f"hsi-tree-mortality/{A}-tree-mortality"),
    }
    assert {n["kind"] for n in down["nodes"]} == {"raw", "activated", "product"}
    up = hsi("lineage", f"hsi-index-ndvi/{A}-index-ndvi", "--up", "-c", env["config"], "--json")
    assert {(e["from"], e["to"]) for e in up["edges"]} == {
        (f"aviris-ng-raw/{A}", f"aviris-ng-l2/{A}"), (f"aviris-ng-l2/{A}", f"hsi-index-ndvi/{A}-index-ndvi")}  # fmt: skip
    text = hsi("lineage", f"aviris-ng-l2/{A}", "-c", env["config"])
    assert f"<- aviris-ng-raw/{A}" in text and f"-> hsi-tree-mortality/{A}-tree-mortality" in text
    res = runner.invoke(app, ["lineage", "nope/nothing", "-c", env["config"]])
    assert res.exit_code == 1 and "nothing" in res.output and "Traceback" not in res.output
