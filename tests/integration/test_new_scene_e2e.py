"""New-scene analysis end to end, with nothing but events (issue 5 must-shows 1, 2 and 5).

A synthetic scene put into a moto bucket (S3 -> SQS notification) -> the bridge -> hsi.raw.available
-> the generated ``activate/new-scene`` deployment (index inline + activate + the configured products, in
one run) on a real Prefect server and process worker -> hsi.scene.activated and hsi.product.published ->
the activated and product items in the stack's STAC API. The Prefect server is private to this module (own port and home) so it can be stopped
for the outage test without disturbing the shared stack.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hsi.config import load_config
from hsi.events import RAW_AVAILABLE
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.product import product_collection, product_item_id
from tests.integration.e2e_harness import (
    Bridge,
    PrivatePrefect,
    events,
    flow_runs,
    landing_bucket,
    ng_scene_id,
    pipeline_config,
    prefect_api,
    runs_ended,
    wait_for,
)  # fmt: skip
from tests.integration.moto_server import aws_env, moto_endpoint

__all__ = ["aws_env", "moto_endpoint"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PRODUCT = "index:NDVI"
DONE_S = 300  # deadline for one scene: worker start-up + index + activate + product


@pytest.fixture(scope="module")
def pipeline(stack: dict[str, Any], moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:  # fmt: skip
    from hsi_pipeline.deployments.generate import apply

    tmp = tmp_path_factory.mktemp("e2e")
    run_id = ng_scene_id()[-6:]
    bucket = f"landing-{run_id}"
    prefect = PrivatePrefect(tmp / "prefect")
    prefect.start_server()
    try:
        prefect.start_worker()
        s3, sqs, queue = landing_bucket(moto_endpoint, bucket)
        path = pipeline_config(tmp / "hsi.yaml", stack=stack, moto=moto_endpoint, bucket=bucket, api=prefect.api,
                               products=[{"product": PRODUCT}], run_id=run_id)  # fmt: skip
        cfg = load_config(path)
        apply(cfg, config_path=path, api_url=prefect.api)
        autos = {
            a["name"]: a for a in prefect_api("POST", f"{prefect.api}/automations/filter", json={}).json()
        }
        assert "hsi-new-scene" in autos
        assert "hsi-products-aviris-ng" not in autos  # the products run in the activation run
        yield {"prefect": prefect, "api": prefect.api, "s3": s3, "sqs": sqs, "queue": queue, "bucket": bucket,
               "cfg": cfg, "tmp": tmp, "autos": autos, "catalog": Services.from_config(cfg).catalog}  # fmt: skip
    finally:
        prefect.stop()


def _scene(tmp: Path, *, archive: bool = False) -> tuple[str, Path]:
    sid = ng_scene_id()
    path = synthesize(tmp / sid, source="aviris-ng", level="l2", width=32, height=40, scene_id=sid, seed=5,
                      archive=archive)  # fmt: skip
    return sid, path


def _put_envi(p: dict[str, Any], hdr: Path, prefix: str = "incoming") -> str:
    """Header first, then data (the data's notification emits); returns the data key."""
    data = hdr.with_suffix("")
    p["s3"].upload_file(str(hdr), p["bucket"], f"{prefix}/{hdr.name}")
    p["s3"].upload_file(str(data), p["bucket"], f"{prefix}/{data.name}")
    return f"{prefix}/{data.name}"


def _done(p: dict[str, Any], sid: str) -> tuple[Any, Any] | None:
    item_id = f"aviris-ng-{sid}"
    act = p["catalog"].get_item("aviris-ng-l2", item_id)
    prod = p["catalog"].get_item(product_collection(PRODUCT), product_item_id(item_id, PRODUCT))
    return (act, prod) if act is not None and prod is not None else None


def _runs(p: dict[str, Any], flow: str, key: str, value: str) -> list[dict[str, Any]]:
    return [r for r in flow_runs(p["api"], flow_name=flow) if r["parameters"].get(key) == value]


def _ended_run(p: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    """The one activation run with parameter ``key`` = ``value``, once it has ended (its products are
    published before the run's final state is set)."""
    (run,) = runs_ended(lambda: _runs(p, "activate", key, value), 1, timeout=DONE_S, interval=0.5,
                        what=f"the activate run of {value}")  # fmt: skip
    return run


def _queue_empty(p: dict[str, Any]) -> bool:
    a = p["sqs"].get_queue_attributes(QueueUrl=p["queue"], AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]  # fmt: skip
    return a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_envi_pair_in_bucket_ends_as_activated_and_product_items(pipeline: dict[str, Any]) -> None:
    p = pipeline
    sid, hdr = _scene(p["tmp"])
    with Bridge(p["cfg"], p["sqs"], p["s3"], p["queue"], p["api"]):
        key = _put_envi(p, hdr)
        act, prod = wait_for(lambda: _done(p, sid), timeout=DONE_S, interval=1.0, what=f"items of {sid}")
    item_id = f"aviris-ng-{sid}"
    (raw_ev,) = events(p["api"], RAW_AVAILABLE, f"stac.item.aviris-ng-raw.{item_id}")
    trig = act.properties["hsi:flow_run"]["trigger"]
    assert trig["event_id"] == raw_ev["id"] and trig["event"] == RAW_AVAILABLE
    assert (
        trig["automation"] == "hsi-new-scene" and trig["automation_id"] == p["autos"]["hsi-new-scene"]["id"]
    )
    assert prod.properties["hsi:flow_run"]["trigger"] == trig  # computed in the same triggered run
    run = _ended_run(p, "uri", f"s3://{p['bucket']}/{key}")  # the triggered run indexes and activates
    assert run["parameters"]["source"] == "aviris-ng" and run["state_type"] == "COMPLETED"
    assert run["name"] == f"activate-{key.rsplit('/', 1)[-1]}"
    assert act.properties["hsi:flow_run"]["id"] == run["id"]
    assert act.properties["hsi:flow_run"]["deployment_name"] == "new-scene"
    assert prod.properties["hsi:flow_run"]["id"] == run["id"]
    assert prod.properties["hsi:flow_run"]["deployment_name"] == "new-scene"
    # the run's origin is read from the API once (tasks/runtime._run_origin) and holds for both items
    for it in (act, prod):
        fr = it.properties["hsi:flow_run"]
        assert fr["work_pool"] == run["work_pool_name"] and fr["work_pool"]
        assert fr["trigger"].get("created_by") == trig.get("created_by")
    inputs = prod.properties["hsi:inputs"]
    assert [i["id"] for i in inputs] == [item_id] and inputs[0]["collection"] == "aviris-ng-l2"
    assert _runs(p, "products", "item_id", item_id) == [] and _runs(p, "product", "item_id", item_id) == []
    pub_id = f"stac.item.{product_collection(PRODUCT)}.{product_item_id(item_id, PRODUCT)}"
    (published,) = wait_for(lambda: events(p["api"], "hsi.product.published", pub_id), what="published event")
    assert published["payload"]["product_key"] == prod.properties["hsi:product_key"]


def test_redelivered_and_multipart_notifications_give_one_run_each(pipeline: dict[str, Any]) -> None:
    p = pipeline
    s3, sqs, queue, bucket = p["s3"], p["sqs"], p["queue"], p["bucket"]
    dup, dup_path = _scene(p["tmp"], archive=True)
    mp, mp_path = _scene(p["tmp"], archive=True)
    s3.upload_file(str(dup_path), bucket, f"arch/{dup_path.name}")  # small: a single PUT

    def take() -> str | None:
        for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            if "ObjectCreated" in m["Body"]:
                return m["Body"]
        return None

    body = wait_for(take, what="the notification")
    for _ in range(3):  # the same notification delivered 3 times
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    key = f"arch/{mp_path.name}"
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=mp_path.read_bytes()
    )
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})  # fmt: skip
    with Bridge(p["cfg"], sqs, s3, queue, p["api"]) as bridge:
        for sid in (dup, mp):
            wait_for(lambda sid=sid: _done(p, sid), timeout=DONE_S, interval=1.0, what=f"items of {sid}")
        wait_for(lambda: _queue_empty(p), what="queue drained")
        posted = list(bridge.processor.recent._items)
    assert len(posted) == 2, posted  # one event per object version
    for sid, obj in ((dup, f"arch/{dup_path.name}"), (mp, key)):
        item_id = f"aviris-ng-{sid}"
        # exactly one activation run per object: the triggered run (it indexed inline; no run by item id)
        run = _ended_run(p, "uri", f"s3://{bucket}/{obj}")
        assert run["state_type"] == "COMPLETED" and run["parameters"].get("item_id") is None
        assert len(_runs(p, "activate", "item_id", item_id)) == 0
        assert len(_runs(p, "products", "item_id", item_id)) == 0  # the products ran in the activation run
        assert len(_runs(p, "product", "item_id", item_id)) == 0
        assert len(events(p["api"], RAW_AVAILABLE, f"stac.item.aviris-ng-raw.{item_id}")) == 1
        found = list(
            p["catalog"].search(
                collections=[product_collection(PRODUCT)], ids=[product_item_id(item_id, PRODUCT)]
            )
        )
        assert len(found) == 1


def test_prefect_down_30s_while_objects_arrive_loses_nothing(pipeline: dict[str, Any]) -> None:
    p, prefect = pipeline, pipeline["prefect"]
    a, a_hdr = _scene(p["tmp"])
    b, b_path = _scene(p["tmp"], archive=True)
    with Bridge(p["cfg"], p["sqs"], p["s3"], p["queue"], p["api"]) as bridge:
        prefect.stop_server()
        down_at = time.monotonic()
        _put_envi(p, a_hdr, prefix="outage")
        p["s3"].upload_file(str(b_path), p["bucket"], f"outage/{b_path.name}")
        # the bridge tried, failed, and kept the messages (nothing acknowledged while Prefect is down)
        wait_for(lambda: bridge.consumer._backoff > 0, timeout=60, what="a failed post")
        assert not _queue_empty(p) and len(bridge.processor.recent) == 0
        wait_for(lambda: time.monotonic() - down_at >= 30 and not _queue_empty(p), timeout=60,
                 what="30 s of outage")  # fmt: skip
        prefect.start_server()
        if prefect.worker is not None and prefect.worker.poll() is not None:
            prefect.start_worker()  # pragma: no cover - the worker normally survives the outage
        for sid in (a, b):
            wait_for(
                lambda sid=sid: _done(p, sid),
                timeout=DONE_S,
                interval=1.0,
                what=f"items of {sid} after outage",
            )
        wait_for(lambda: _queue_empty(p), what="queue drained")
    for sid, obj in ((a, f"outage/{a_hdr.with_suffix('').name}"), (b, f"outage/{b_path.name}")):
        runs = _runs(p, "activate", "uri", f"s3://{p['bucket']}/{obj}") + _runs(
            p, "activate", "item_id", f"aviris-ng-{sid}"
        )
        assert len(runs) == 1, runs  # exactly one activation run per object
