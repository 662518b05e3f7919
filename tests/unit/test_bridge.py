"""Unit tests of the event model (hsi.events) and the bridge's pure logic (hsi.bridge)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from hsi.bridge import (
    DEFAULT_RULES,
    RecentIds,
    SourceRule,
    classify_key,
    glob_to_regex,
    parse_message,
    rules_from_config,
)
from hsi.errors import InvalidInputError, PoisonMessage
from hsi.events import (
    ALL_EVENTS,
    PRODUCT_PUBLISHED,
    RAW_AVAILABLE,
    EventResource,
    build_event,
    product_published_event,
    raw_available_event,
    raw_object_event_id,
    stage_event,
    stage_outcome_event,
)


def s3_body(key: str, *, bucket: str = "raw", event: str = "ObjectCreated:Put", version: str | None = None,
            etag: str = "abc123") -> dict:  # fmt: skip
    obj: dict = {"key": key, "size": 42, "eTag": etag, "sequencer": "0055"}
    if version:
        obj["versionId"] = version
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-05-01T12:00:00.000Z",
                "eventName": event,
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
            }
        ]
    }


def sns(doc: dict) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:x:1:t",
                       "Message": json.dumps(doc)})  # fmt: skip


# ----------------------------------------------------------------------------- parsing


def test_raw_s3_notification():
    parsed = parse_message(json.dumps(s3_body("a/ang20150420t182050_rdn_v1e_img", version="v1")))
    (rec,) = parsed.records
    assert (rec.bucket, rec.key, rec.version_id, rec.etag, rec.size) == (
        "raw", "a/ang20150420t182050_rdn_v1e_img", "v1", "abc123", 42
    )  # fmt: skip
    assert rec.event_time == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert rec.shape == "s3" and not parsed.ignored


def test_sns_envelope():
    (rec,) = parse_message(sns(s3_body("k/ang20150420t182050.tar.gz"))).records
    assert rec.shape == "sns" and rec.key == "k/ang20150420t182050.tar.gz"


def test_eventbridge_object_created():
    doc = {
        "version": "0", "id": "e-1", "detail-type": "Object Created", "source": "aws.s3",
        "time": "2024-05-01T12:00:00Z", "region": "us-east-1", "resources": ["arn:aws:s3:::raw"],
        "detail": {"version": "0", "bucket": {"name": "raw"},
                   "object": {"key": "dir/my+scene.tar.gz", "size": 7, "etag": "e", "version-id": "v9"},
                   "reason": "PutObject"},
    }  # fmt: skip
    (rec,) = parse_message(json.dumps(doc)).records
    assert (rec.shape, rec.bucket, rec.key, rec.version_id, rec.etag) == (
        "eventbridge", "raw", "dir/my scene.tar.gz", "v9", "e"
    )  # fmt: skip
    other = parse_message(json.dumps({**doc, "detail-type": "Object Deleted"}))
    assert not other.records and "Object Deleted" in other.ignored[0]


def test_test_event_ignored_with_reason():
    body = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-05-01T12:00:00Z", "Bucket": "raw"}
    for b in (json.dumps(body), sns(body)):
        parsed = parse_message(b)
        assert not parsed.records and "s3:TestEvent" in parsed.ignored[0]


def test_non_created_records_ignored():
    parsed = parse_message(json.dumps(s3_body("x", event="ObjectRemoved:Delete")))
    assert not parsed.records and "ObjectRemoved:Delete" in parsed.ignored[0]


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("dir/my+scene+file.tar.gz", "dir/my scene file.tar.gz"),
        ("dir%2Fsub%2Fang20150420t182050.tar.gz", "dir/sub/ang20150420t182050.tar.gz"),
        ("a%2Bb/c%20d", "a+b/c d"),
        ("plain/key", "plain/key"),
    ],
)
def test_keys_are_unquoted(raw, decoded):
    assert parse_message(json.dumps(s3_body(raw))).records[0].key == decoded


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON list"),
        (json.dumps({"hello": "world"}), "unknown message shape"),
        (json.dumps({"Records": "nope"}), "not a list"),
        (json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}), "lacks"),
        (json.dumps({"Type": "Notification", "Message": "{broken"}), "SNS Message is not JSON"),
        (json.dumps({"Type": "Notification", "Message": {"a": 1}}), "not a string"),
        (json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}), "lacks"),
    ],
)
def test_malformed_is_poison(body, fragment):
    with pytest.raises(PoisonMessage) as ei:
        parse_message(body)
    assert fragment in ei.value.reason
    assert isinstance(ei.value, InvalidInputError)


# ----------------------------------------------------------------------------- key mapping


@pytest.mark.parametrize(
    ("key", "kind", "source", "scene"),
    [
        ("ang20150420t182050_rdn_v1e_img", "data", "aviris-ng", "ang20150420t182050"),
        ("x/y/ang20150420t182050_rfl_v1e_img", "data", "aviris-ng", "ang20150420t182050"),
        ("x/ang20150420t182050_corr_v1e_img", "data", "aviris-ng", "ang20150420t182050"),
        ("x/ang20150420t182050_rdn_v1e_img.hdr", "header", "aviris-ng", "ang20150420t182050"),
        ("deep/ang20150420t182050.tar.gz", "archive", "aviris-ng", "ang20150420t182050"),
        ("f130329t01p00r06rdn_e_sc01_ort_img", "data", "aviris-classic", "f130329t01p00r06-sc01"),
        ("f/f130329t01p00r06rdn_e_sc02_ort_img.hdr", "header", "aviris-classic", "f130329t01p00r06-sc02"),
        ("f/f130329t01p00r06_refl.tar.gz", "archive", "aviris-classic", "f130329t01p00r06"),
        (
            "in/EMIT_L2A_RFL_001_20220903T163129_2224611_012.nc",
            "archive",  # complete as is: one self-contained netCDF4 file
            "emit",
            "EMIT_L2A_RFL_001_20220903T163129_2224611_012",
        ),
        (
            "EMIT_L1B_RAD_001_20220903T163129_2224611_012.nc",
            "archive",
            "emit",
            "EMIT_L1B_RAD_001_20220903T163129_2224611_012",
        ),
        (
            "in/EMIT_L2A_MASK_001_20220903T163129_2224611_012.nc",
            "ignored",
            "",
            "",
        ),  # a companion, not a scene
    ],
)
def test_pattern_mapping(key, kind, source, scene):
    c = classify_key(key)
    assert (c.kind, c.source, c.scene_id) == (kind, source, scene)
    if kind in ("data", "header"):
        assert c.header_key == c.data_key + ".hdr"


@pytest.mark.parametrize(
    "key",
    [
        "x/ang20150420t182050_rdn_v1e_glt", "x/ang20150420t182050_rdn_v1e_igm", "x/ang20150420t182050_rdn_v1e_loc",
        "x/ang20150420t182050_rdn_v1e_obs", "x/ang20150420t182050_rdn_v1e_obs_ort", "f/f130329t01p00r06rdn_e.gain",
        "f/f130329t01p00r06rdn_e.spc", "x/unrelated.hdr",
    ],
)  # fmt: skip
def test_sidecars_ignored_with_reason(key):
    c = classify_key(key)
    assert c.kind == "ignored" and "sidecar" in c.reason


def test_unknown_key_ignored_with_reason():
    c = classify_key("uploads/holiday.jpeg.bin")
    assert c.kind == "ignored" and "matches no source pattern" in c.reason


def test_patterns_are_data():
    rules = rules_from_config([{"source": "emit", "patterns": ["emit/**/EMIT_L1B_RAD_*.nc"],
                                "scene_id_regex": r"^EMIT_L1B_RAD_(?P<scene>[^_]+_[^_]+)"}])  # fmt: skip
    c = classify_key("emit/2024/EMIT_L1B_RAD_001_20240501T120000_2412208_003.nc", rules)
    assert (c.kind, c.source, c.scene_id) == ("archive", "emit", "001_20240501T120000")  # .nc: complete as is
    assert rules_from_config(None) == DEFAULT_RULES
    assert isinstance(rules[0], SourceRule)


def test_glob_semantics():
    assert glob_to_regex("**/a*_img").match("a1_img")
    assert glob_to_regex("**/a*_img").match("x/y/a1_img")
    assert not glob_to_regex("a*_img").match("x/a1_img")
    assert not glob_to_regex("**/a?_img").match("x/a/_img")
    assert glob_to_regex("x/[!q]y").match("x/ay") and not glob_to_regex("x/[!q]y").match("x/qy")


# ----------------------------------------------------------------------------- events


def test_deterministic_ids():
    a = raw_object_event_id("raw", "k", None, '"etag1"')
    assert (
        a
        == raw_object_event_id("raw", "k", None, "etag1")
        == raw_object_event_id("raw", "k", "null", "etag1")
    )
    assert a != raw_object_event_id("raw", "k", None, "etag2")
    assert raw_object_event_id("raw", "k", "v1", "etag1") == raw_object_event_id("raw", "k", "v1", "other")
    assert a == uuid.uuid5(uuid.UUID("6f1c0a52-3f0e-5b8e-9d7a-2b1e4c7f9a10"), "raw/k@etag1")
    with pytest.raises(ValueError):
        raw_object_event_id("raw", "k", None, None)


def test_raw_available_event_shape():
    ev = raw_available_event(source="aviris-ng", scene_id="ang20150420t182050", bucket="raw",
                             key="a/ang20150420t182050_rdn_v1e_img", etag="e1", size=5,
                             occurred=datetime(2024, 5, 1, tzinfo=UTC))  # fmt: skip
    assert ev["event"] == RAW_AVAILABLE
    assert ev["id"] == str(raw_object_event_id("raw", "a/ang20150420t182050_rdn_v1e_img", None, "e1"))
    assert ev["occurred"] == "2024-05-01T00:00:00+00:00"
    res = ev["resource"]
    assert res["prefect.resource.id"] == "stac.item.aviris-ng-raw.aviris-ng-ang20150420t182050"
    assert res["hsi.collection"] == "aviris-ng-raw" and res["hsi.source"] == "aviris-ng"
    assert res["hsi.scene_id"] == "ang20150420t182050" and res["hsi.product"] == "none"
    assert all(isinstance(v, str) for v in res.values())
    p = ev["payload"]
    assert p["uri"] == "s3://raw/a/ang20150420t182050_rdn_v1e_img" and p["etag"] == "e1" and p["size"] == 5
    for k in (
        "catalog_href",
        "item_href",
        "product_key",
        "uri",
        "key",
        "bucket",
        "version_id",
        "etag",
        "reason",
    ):
        assert k in p
    json.dumps(ev)


def test_every_label_always_set():
    keys = {"prefect.resource.id", "hsi.collection", "hsi.source", "hsi.scene_id", "hsi.product"}
    ev = product_published_event(source="aviris-ng", scene_id="s", product="ndvi", collection="hsi-ndvi",
                                 item_id="s-ndvi", catalog_href="http://stac", product_key="pk",
                                 inputs=[("aviris-ng-l2", "s")])  # fmt: skip
    assert keys <= set(ev["resource"]) and ev["event"] == PRODUCT_PUBLISHED
    assert ev["related"][0]["prefect.resource.role"] == "input"
    assert ev["id"] == product_published_event(source="aviris-ng", scene_id="s", product="ndvi",
                                               collection="hsi-ndvi", item_id="s-ndvi",
                                               catalog_href="http://stac", product_key="pk")["id"]  # fmt: skip
    skipped = stage_outcome_event("activate", "skipped", resource=EventResource(collection="c", item_id="i"),
                                  reason="already active")  # fmt: skip
    assert skipped["event"] == "hsi.activate.skipped" and skipped["payload"]["reason"] == "already active"
    assert keys <= set(skipped["resource"]) and skipped["resource"]["hsi.product"] == "none"


def test_event_names():
    assert stage_event("product", "failed") == "hsi.product.failed"
    assert len(ALL_EVENTS) == 9
    with pytest.raises(ValueError):
        stage_event("index", "failed")
    with pytest.raises(ValueError):
        build_event("hsi.nope", EventResource(collection="c", item_id="i"))


def test_recent_ids_ttl():
    now = [0.0]
    r = RecentIds(ttl_s=10, maxsize=2, clock=lambda: now[0])
    r.add("a")
    assert "a" in r
    now[0] = 11
    assert "a" not in r
    r.add("a"), r.add("b"), r.add("c")
    assert len(r) == 2 and "a" not in r


# ----------------------------------------------------------------------------- processor (fake S3/Prefect)


class FakeS3:
    def __init__(self, objects: dict[str, dict]):
        self.objects = objects

    def head_object(self, Bucket, Key):  # noqa: N803
        from botocore.exceptions import ClientError

        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return self.objects[Key]


def _processor(objects, *, up=True):
    import httpx

    from hsi_pipeline.deployments.bridge.consumer import BridgeProcessor, PrefectEvents

    store: dict[str, dict] = {}

    def handle(req: httpx.Request) -> httpx.Response:
        if not up[0] if isinstance(up, list) else not up:
            raise httpx.ConnectError("refused")
        if req.url.path.endswith("/events/filter"):
            ids = json.loads(req.content)["filter"]["id"]["id"]
            return httpx.Response(200, json={"events": [store[i] for i in ids if i in store]})
        for ev in json.loads(req.content):
            store[ev["id"]] = ev
        return httpx.Response(204)

    prefect = PrefectEvents("http://prefect/api", http=httpx.Client(transport=httpx.MockTransport(handle)))
    return BridgeProcessor(FakeS3(objects), prefect, rules=DEFAULT_RULES), store


def _msg(body: dict | str, mid: str = "m1"):
    from hsi_pipeline.deployments.bridge.consumer import Message

    return Message(mid, "rh-" + mid, body if isinstance(body, str) else json.dumps(body))


def test_envi_pair_emits_once_on_second_arrival():
    data, hdr = "s/ang20150420t182050_rdn_v1e_img", "s/ang20150420t182050_rdn_v1e_img.hdr"
    objects: dict[str, dict] = {data: {"ETag": '"d1"', "ContentLength": 9}}
    proc, store = _processor(objects)
    r1 = proc.process([_msg(s3_body(data, etag="d1"))])  # header not there yet
    assert [m.message_id for m in r1.acked] == ["m1"] and not store
    objects[hdr] = {"ETag": '"h1"', "ContentLength": 1}
    r2 = proc.process([_msg(s3_body(hdr, etag="h1"), "m2")])
    assert len(store) == 1 and r2.posted
    (ev,) = store.values()
    assert ev["payload"]["key"] == data and ev["payload"]["etag"] == "d1"
    # the data notification redelivered now that both exist -> same id, not posted again
    r3 = proc.process([_msg(s3_body(data, etag="d1"), "m3")])
    assert r3.duplicates == [ev["id"]] and not r3.posted and len(store) == 1


def test_prefect_down_means_retry_and_poison_is_reported():
    up = [False]
    proc, store = _processor({}, up=up)
    good = _msg(s3_body("a/ang20150420t182050.tar.gz"), "good")
    bad = _msg("{not json", "bad")
    res = proc.process([good, bad])
    assert [m.message_id for m in res.retry] == ["good"] and not res.acked
    assert res.poison[0][0].message_id == "bad" and "not JSON" in res.poison[0][1]
    up[0] = True
    res = proc.process([good])
    assert [m.message_id for m in res.acked] == ["good"] and len(store) == 1


def test_lambda_handler_partial_batch_failure(monkeypatch):
    from hsi_pipeline.deployments.bridge.lambda_handler import handler

    monkeypatch.delenv("HSI_BRIDGE_DLQ_URL", raising=False)
    up = [False]
    proc, store = _processor({}, up=up)
    event = {"Records": [{"messageId": "ok", "receiptHandle": "r", "body": json.dumps(s3_body("a/ang20150420t182050.tar.gz"))},
                         {"messageId": "poison", "receiptHandle": "r", "body": "nope"},
                         {"messageId": "ignored", "receiptHandle": "r", "body": json.dumps(s3_body("x/unknown.bin"))}]}  # fmt: skip
    out = handler(event, None, processor=proc)
    assert sorted(f["itemIdentifier"] for f in out["batchItemFailures"]) == ["ok", "poison"]
    up[0] = True
    out = handler(event, None, processor=proc)
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == ["poison"] and len(store) == 1


def test_prefect_rejecting_an_event_makes_only_that_message_poison():
    import httpx

    from hsi_pipeline.deployments.bridge.consumer import BridgeProcessor, PrefectEvents

    bad_scene = "ang20990101t000000"

    def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/events/filter"):
            return httpx.Response(200, json={"events": []})
        evs = json.loads(req.content)
        if any(e["resource"]["hsi.scene_id"] == bad_scene for e in evs):
            return httpx.Response(422, json={"detail": "invalid"})
        return httpx.Response(204)

    prefect = PrefectEvents("http://p/api", http=httpx.Client(transport=httpx.MockTransport(handle)))
    proc = BridgeProcessor(FakeS3({}), prefect, rules=DEFAULT_RULES)
    res = proc.process([_msg(s3_body(f"{bad_scene}.tar.gz"), "bad"),
                        _msg(s3_body("ang20150420t182050.tar.gz"), "good")])  # fmt: skip
    assert [m.message_id for m in res.acked] == ["good"]
    assert res.poison[0][0].message_id == "bad" and "422" in res.poison[0][1]


def test_object_not_a_mapping_is_poison():
    body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": "k"}}]}
    with pytest.raises(PoisonMessage):
        parse_message(json.dumps(body))
