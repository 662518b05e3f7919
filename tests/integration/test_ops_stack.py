"""Operating the catalog against the stack (issue 14 must-shows 3, 4 and 5, and reprocessing through
deployments): a private Prefect server + process worker running this checkout's flows with the
generated deployments and automations, raw objects in a moto bucket, outputs in the stack's SeaweedFS
(private prefix) and STAC API.

* backfill of N raw objects (``HSI_BACKFILL_N``, default 6 to keep CI cheap; 100 for the full must-show) -> N
  activated items and their products; a second backfill posts nothing and starts no run;
* the bridge's DLQ: a malformed message (kept with its reason, then fixed) and a message for a key no
  source matches (kept, then the pattern is configured) -> replay -> exactly one run each;
* ``hsi lineage`` gives the same graph on the demo's static catalog and on the STAC API.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from hsi.bridge import rules_from_config
from hsi.config import load_config
from hsi.services import Services
from hsi.sources.synthetic import synthesize, synthetic_scene_id
from hsi.stac.product import product_collection, product_item_id
from hsi_pipeline.cli.main import app
from hsi_pipeline.deployments.bridge.consumer import REASON_ATTRIBUTE, BridgeProcessor, PrefectEvents
from hsi_pipeline.deployments.bridge.replay import COUNT_ATTRIBUTE, replay_dlq
from tests.integration.e2e_harness import (
    PrivatePrefect,
    flow_runs,
    ng_scene_id,
    pipeline_config,
    prefect_api,
    runs_ended,
    stack_prefect_db,
    wait_for,
)  # fmt: skip
from tests.integration.moto_server import aws_env, moto_endpoint

__all__ = ["aws_env", "moto_endpoint"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PRODUCT = "index:NDVI"
N = int(os.environ.get("HSI_BACKFILL_N", "6"))
runner = CliRunner()


def hsi(*args: str) -> Any:
    res = runner.invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, f"hsi {' '.join(args)} -> {res.exit_code}\n{res.output}"
    return json.loads(res.stdout) if "--json" in args else res.stdout


@pytest.fixture(scope="module")
def pipeline(stack: dict[str, Any], moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:  # fmt: skip
    import boto3

    from hsi_pipeline.deployments.generate import apply

    tmp = tmp_path_factory.mktemp("ops-stack")
    run_id = ng_scene_id()[-6:]
    bucket = f"archive-{run_id}"
    # Prefect on the stack's PostgreSQL, as `hsi stack up` runs it: a 100-scene backfill is a burst
    with stack_prefect_db(Path(stack["root"]), f"ops_{run_id}") as db_url:
        prefect = PrivatePrefect(tmp / "prefect", db_url=db_url)
        prefect.start_server(timeout=300)  # a loaded 2-core machine takes minutes
        try:
            prefect.start_worker()
            kw = {"endpoint_url": moto_endpoint, "region_name": "us-east-1", "aws_access_key_id": "testing",
                  "aws_secret_access_key": "testing"}  # fmt: skip
            s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
            s3.create_bucket(Bucket=bucket)
            dlq = sqs.create_queue(QueueName=f"dlq-{run_id}")["QueueUrl"]
            path = pipeline_config(tmp / "hsi.yaml", stack=stack, moto=moto_endpoint, bucket=bucket,
                                   api=prefect.api, products=[{"product": PRODUCT}], run_id=run_id)  # fmt: skip
            cfg = load_config(path)
            apply(cfg, config_path=path, api_url=prefect.api)
            yield {"api": prefect.api, "s3": s3, "sqs": sqs, "dlq": dlq, "bucket": bucket, "cfg": cfg,
                   "path": str(path), "tmp": tmp, "catalog": Services.from_config(cfg).catalog,
                   "stack": stack}  # fmt: skip
        finally:
            prefect.stop()


def _put_scene(p: dict[str, Any], prefix: str, *, archive: bool = False) -> tuple[str, str]:
    """A tiny synthetic scene in the bucket: (item id, key of the data object, or of the archive
    renamed ``<scene id>.tgz``: a name no built-in source pattern matches)."""
    sid = ng_scene_id()
    path = synthesize(p["tmp"] / "raw" / sid, width=24, height=32, scene_id=sid, seed=1, archive=archive)
    if archive:
        key = f"{prefix}/{sid}.tgz"
        p["s3"].upload_file(str(path), p["bucket"], key)
        return f"aviris-ng-{sid}", key
    data = path.with_suffix("")
    p["s3"].upload_file(str(path), p["bucket"], f"{prefix}/{path.name}")
    p["s3"].upload_file(str(data), p["bucket"], f"{prefix}/{data.name}")
    return f"aviris-ng-{sid}", f"{prefix}/{data.name}"


def _done(p: dict[str, Any], item_id: str) -> bool:
    cat = p["catalog"]
    return (cat.get_item("aviris-ng-l2", item_id) is not None
            and cat.get_item(product_collection(PRODUCT), product_item_id(item_id, PRODUCT)) is not None)  # fmt: skip


def _activation_runs(p: dict[str, Any], uri: str) -> list[dict[str, Any]]:
    return [r for r in flow_runs(p["api"], flow_name="activate") if r["parameters"].get("uri") == uri]


def test_backfill_activates_every_scene_once_and_a_second_backfill_starts_nothing(
    pipeline: dict[str, Any],
) -> None:
    p = pipeline
    scenes = dict(_put_scene(p, "archive/2025") for _ in range(N))
    p["s3"].put_object(Bucket=p["bucket"], Key="archive/2025/README.txt", Body=b"not a scene")
    prefix = f"s3://{p['bucket']}/archive"
    first = hsi("backfill", prefix, "-c", p["path"], "--batch", "7", "--json")
    assert first["listed"] == 2 * N + 1 and first["scenes"] == N and first["done"] == 0
    assert first["emitted"] == N and sorted(first["emitted_items"]) == sorted(scenes)
    assert any("README.txt" in s["key"] for s in first["skipped"])
    wait_for(lambda: all(_done(p, i) for i in scenes), timeout=300 + 60 * N, interval=2.0,
             what=f"{N} activated items and their {PRODUCT} products")  # fmt: skip
    uris = {f"s3://{p['bucket']}/{key}" for key in scenes.values()}

    runs = runs_ended(
        lambda: [r for r in flow_runs(p["api"], flow_name="activate") if r["parameters"].get("uri") in uris],
        N,
        what=f"the {N} activate runs to end",
    )
    for key in scenes.values():
        (run,) = [
            r for r in runs if r["parameters"].get("uri") == f"s3://{p['bucket']}/{key}"
        ]  # one per scene
        assert run["state_type"] == "COMPLETED"
    before = len(flow_runs(p["api"], flow_name="activate"))
    second = hsi("backfill", prefix, "-c", p["path"], "--json")
    assert (second["scenes"], second["done"], second["emitted"], second["already_emitted"]) == (N, N, 0, 0)
    assert len(flow_runs(p["api"], flow_name="activate")) == before  # nothing posted, no run started


def test_reprocess_through_deployments_replaces_the_items(pipeline: dict[str, Any]) -> None:
    p = pipeline
    item_id, _ = _put_scene(p, "archive/reprocess")
    hsi("backfill", f"s3://{p['bucket']}/archive/reprocess", "-c", p["path"], "--json")
    wait_for(lambda: _done(p, item_id), timeout=300, interval=2.0, what=f"{item_id} done")
    prod = p["catalog"].get_item(product_collection(PRODUCT), product_item_id(item_id, PRODUCT))
    plan = hsi("plan", "-c", p["path"], "--scene", item_id, "--json")  # on the STAC API
    assert [(r["stage"], r["state"]) for r in plan["rows"]] == [
        ("activate", "up-to-date"),
        ("product", "up-to-date"),
    ]
    assert all(r["current_key"] == r["expected_key"] != "" for r in plan["rows"])
    out = hsi("reprocess", "-c", p["path"], "--collection", "aviris-ng-l2", "--scene", item_id, "--downstream",
              "--limit", "2", "--json")  # fmt: skip
    assert out["mode"] == "deployments"
    assert sorted((r["stage"], r["status"]) for r in out["rows"]) == [
        ("activate", "done"),
        ("product", "done"),
    ]
    body = {"flow_runs": {"tags": {"all_": ["hsi-reprocess"]}}, "limit": 200}
    runs = {r["id"]: r for r in prefect_api("POST", f"{p['api']}/flow_runs/filter", json=body).json()}
    assert {r["flow_run"] for r in out["rows"]} <= set(runs)
    again = p["catalog"].get_item(product_collection(PRODUCT), product_item_id(item_id, PRODUCT))
    assert again.properties["processing:datetime"] > prod.properties["processing:datetime"]
    assert again.properties["hsi:flow_run"]["id"] in runs  # the replaced item was made by the reprocess run
    found = list(p["catalog"].search(collections=[product_collection(PRODUCT)], ids=[again.id]))
    assert len(found) == 1  # replaced, never duplicated
    assert hsi("plan", "-c", p["path"], "--scene", item_id, "--json")["summary"]["up-to-date"] == 2


def _s3_message(bucket: str, key: str) -> str:
    now = datetime.now(UTC).isoformat()  # within the bridge's 30-day look-up window of event ids
    return json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "eventTime": now,
                                    "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})  # fmt: skip


def _dlq(p: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message in the DLQ (received, then made visible again)."""
    out: list[dict[str, Any]] = []
    while msgs := p["sqs"].receive_message(QueueUrl=p["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                           VisibilityTimeout=60, MessageAttributeNames=["All"]).get("Messages"):  # fmt: skip
        out += msgs
    for m in out:
        p["sqs"].change_message_visibility(
            QueueUrl=p["dlq"], ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    return out


def test_dlq_replay_gives_one_run_per_message_or_a_recorded_reason(pipeline: dict[str, Any]) -> None:
    p = pipeline
    ok_id, ok_key = _put_scene(p, "landing")
    odd_id, odd_key = _put_scene(p, "odd", archive=True)
    good = _s3_message(p["bucket"], ok_key)
    p["sqs"].send_message(QueueUrl=p["dlq"], MessageBody=good[:40])  # malformed (truncated)
    p["sqs"].send_message(QueueUrl=p["dlq"], MessageBody=_s3_message(p["bucket"], odd_key))  # unknown key

    def processor(cfg: Any) -> BridgeProcessor:
        return BridgeProcessor(p["s3"], PrefectEvents(p["api"]), rules=rules_from_config(cfg),
                               catalog_href=cfg.catalog.url)  # fmt: skip

    first = replay_dlq(p["sqs"], p["dlq"], processor(p["cfg"]))
    assert sorted(o.outcome for o in first) == ["kept", "kept"]
    reasons = sorted(o.reason for o in first)
    assert any("not JSON" in r for r in reasons) and any("matches no source pattern" in r for r in reasons)
    kept = _dlq(p)
    assert len(kept) == 2  # nothing lost: both back on the DLQ with their reason and a count
    assert sorted(m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in kept) == reasons
    assert {m["MessageAttributes"][COUNT_ATTRIBUTE]["StringValue"] for m in kept} == {"1"}
    # the operator fixes the malformed message: the repaired notification replaces it
    bad = next(m for m in kept if "not JSON" in m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"])
    p["sqs"].delete_message(QueueUrl=p["dlq"], ReceiptHandle=bad["ReceiptHandle"])
    p["sqs"].send_message(QueueUrl=p["dlq"], MessageBody=good)
    second = replay_dlq(p["sqs"], p["dlq"], processor(p["cfg"]))
    assert sorted(o.outcome for o in second) == ["kept", "posted"]  # the unknown key still has no source
    # the key's pattern is configured: the replay posts it
    doc = yaml.safe_load(Path(p["path"]).read_text())
    doc["sources"]["aviris-ng"]["patterns"] = ["**/ang*_rfl_*_img", "**/ang*.tar.gz", "odd/ang*.tgz"]
    (p["tmp"] / "hsi2.yaml").write_text(yaml.safe_dump(doc))
    third = replay_dlq(p["sqs"], p["dlq"], processor(load_config(p["tmp"] / "hsi2.yaml")))
    assert [o.outcome for o in third] == ["posted"] and third[0].previous_reason.endswith(
        "matches no source pattern"
    )
    assert _dlq(p) == []  # the DLQ is empty: every message ended as a run
    for item_id, key in ((ok_id, ok_key), (odd_id, odd_key)):
        uri = f"s3://{p['bucket']}/{key}"
        wait_for(lambda u=uri: [r for r in _activation_runs(p, u) if r["state_type"] == "COMPLETED"], timeout=300,
                 interval=2.0, what=f"the run of {uri}")  # fmt: skip
        assert len(_activation_runs(p, uri)) == 1  # exactly one run
        assert p["catalog"].get_item("aviris-ng-l2", item_id) is not None
    # the same notifications delivered to the DLQ again: already accepted, nothing doubled
    p["sqs"].send_message(QueueUrl=p["dlq"], MessageBody=good)
    again = replay_dlq(p["sqs"], p["dlq"], processor(p["cfg"]))
    assert [o.outcome for o in again] == ["duplicate"]
    assert len(_activation_runs(p, f"s3://{p['bucket']}/{ok_key}")) == 1


def test_lineage_is_the_same_graph_on_the_demo_static_catalog_and_the_stac_api(
    pipeline: dict[str, Any], tmp_path: Path
) -> None:
    from hsi_pipeline.flows.demo import demo

    p = pipeline
    seed = random.randrange(100_000, 900_000)
    static = tmp_path / "static.yaml"
    static.write_text(yaml.safe_dump({"storage": {"root": str(tmp_path / "assets")},
                                      "catalog": {"url": str(tmp_path / "catalog")},
                                      "work_dir": str(tmp_path / "static" / "work")}))  # fmt: skip
    api_doc = yaml.safe_load(Path(p["path"]).read_text())
    api_doc["work_dir"] = str(tmp_path / "api" / "work")
    api = tmp_path / "api.yaml"
    api.write_text(yaml.safe_dump(api_doc))
    with temporary_settings({PREFECT_API_URL: p["api"]}):
        for cfg in (static, api):
            demo(config=str(cfg), width=24, height=32, seed=seed, products=["index:NDVI", "tree-mortality"])
    item_id = f"aviris-ng-{synthetic_scene_id('aviris-ng', seed)}"
    out = {}
    for name, cfg in (("static", static), ("api", api)):
        down = hsi("lineage", f"aviris-ng-raw/{item_id}", "--down", "-c", str(cfg), "--json")
        up = hsi("lineage", f"hsi-tree-mortality/{item_id}-tree-mortality", "--up", "-c", str(cfg), "--json")
        out[name] = [({(n["collection"], n["id"], n["kind"], n["version"]) for n in g["nodes"]},
                      {(e["from"], e["to"]) for e in g["edges"]}) for g in (down, up)]  # fmt: skip
    assert out["static"] == out["api"]
    nodes, edges = out["api"][0]
    assert len(nodes) == 4 and len(edges) == 3  # raw -> activated -> NDVI, tree mortality
    assert (f"aviris-ng-l2/{item_id}", f"hsi-index-ndvi/{item_id}-index-ndvi") in edges
