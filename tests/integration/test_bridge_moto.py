"""The S3/SNS/SQS -> Prefect bridge against a real moto server and a real Prefect server.

Real bucket notifications (S3 -> SNS -> SQS and S3 -> SQS), the real consumer, events read back
through ``POST /api/events/filter``. No sleeps as synchronisation: every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from hsi.bridge import DEFAULT_RULES
from hsi.events import RAW_AVAILABLE, raw_object_event_id
from hsi_pipeline.deployments.bridge.consumer import (
    REASON_ATTRIBUTE,
    BridgeProcessor,
    PrefectEvents,
    SqsConsumer,
)

try:  # the helper module sits next to this file
    from tests.integration.moto_server import TcpProxy, aws_env, moto_endpoint, prefect_api, wait_for
except ImportError:  # pragma: no cover - rootdir without the tests package on sys.path
    from moto_server import TcpProxy, aws_env, moto_endpoint, prefect_api, wait_for  # type: ignore[no-redef]

__all__ = ["aws_env", "moto_endpoint", "prefect_api"]  # fixtures re-exported for pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> dict[str, Any]:
    kw = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    return {
        "s3": boto3.client("s3", **kw),
        "sns": boto3.client("sns", **kw),
        "sqs": boto3.client("sqs", **kw),
    }


def uid() -> str:
    return uuid.uuid4().hex[:8]


def ng_scene() -> str:
    return f"ang{random.randint(10**7, 10**8 - 1)}t{random.randint(10**5, 10**6 - 1)}"


def classic_scene() -> str:
    r = random.randint
    return f"f{r(100000, 999999)}t{r(10, 99)}p{r(10, 99)}r{r(10, 99)}"


def make_queues(sqs: Any, name: str) -> tuple[str, str, str]:
    """A source queue with a redrive policy to its DLQ: (queue url, queue arn, dlq url)."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": "30",
                    "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]  # fmt: skip
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn, dlq_url


def bucket_via_sns(aws: dict[str, Any], name: str) -> tuple[str, str]:
    """bucket -> SNS topic -> SQS queue; returns (queue url, dlq url)."""
    url, arn, dlq = make_queues(aws["sqs"], f"{name}-q")
    topic = aws["sns"].create_topic(Name=f"{name}-topic")["TopicArn"]
    aws["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    aws["s3"].create_bucket(Bucket=name)
    aws["s3"].put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return url, dlq


def bucket_direct(aws: dict[str, Any], name: str) -> tuple[str, str]:
    """bucket -> SQS queue; returns (queue url, dlq url)."""
    url, arn, dlq = make_queues(aws["sqs"], f"{name}-q")
    aws["s3"].create_bucket(Bucket=name)
    aws["s3"].put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    return url, dlq


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def queue_empty(sqs: Any, url: str) -> bool:
    return queue_counts(sqs, url) == (0, 0)


def raw_events(api: str, source: str, scene: str) -> list[dict[str, Any]]:
    rid = f"stac.item.{source}-raw.{source}-{scene}"
    body = {"filter": {"event": {"name": [RAW_AVAILABLE]}, "resource": {"id": [rid]}}, "limit": 50}
    resp = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    resp.raise_for_status()
    return resp.json()["events"]


def event_by_id(api: str, event_id: str) -> list[dict[str, Any]]:
    body = {"filter": {"id": {"id": [event_id]}}, "limit": 50}
    return httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]


@contextmanager
def consumer(aws: dict[str, Any], queue: str, dlq: str | None, api: str) -> Iterator[SqsConsumer]:
    proc = BridgeProcessor(
        aws["s3"], PrefectEvents(api), rules=DEFAULT_RULES, catalog_href="http://stac.test"
    )
    c = SqsConsumer(aws["sqs"], queue, proc, dlq_url=dlq, wait_s=1, backoff_s=(0.2, 1.0))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield c
    finally:
        stop.set()
        t.join(timeout=30)
        assert not t.is_alive(), "consumer did not stop"


def put(aws: dict[str, Any], bucket: str, key: str, body: bytes = b"x" * 16) -> None:
    aws["s3"].put_object(Bucket=bucket, Key=key, Body=body)


# ----------------------------------------------------------------------------- tests


def test_sns_envelope_envi_pair_and_archive(aws: dict[str, Any], prefect_api: str) -> None:
    bucket = f"raw-sns-{uid()}"
    queue, dlq = bucket_via_sns(aws, bucket)
    ng, classic = ng_scene(), classic_scene()
    data = f"aviris-ng/2015/{ng}_rdn_v1e_img"
    put(aws, bucket, data)  # data first: no event until the header exists
    put(aws, bucket, f"aviris-ng/2015/{ng}_rdn_v1e_glt")  # sidecar
    put(aws, bucket, "misc/readme.bin")  # unknown
    with consumer(aws, queue, dlq, prefect_api):
        wait_for(lambda: queue_empty(aws["sqs"], queue), what="queue drained (data without header)")
        put(aws, bucket, data + ".hdr")
        put(aws, bucket, f"aviris-classic/{classic}_refl.tar.gz")
        wait_for(lambda: raw_events(prefect_api, "aviris-ng", ng), what="aviris-ng event")
        wait_for(lambda: raw_events(prefect_api, "aviris-classic", classic), what="aviris-classic event")
        wait_for(lambda: queue_empty(aws["sqs"], queue), what="queue drained")
    (ev,) = raw_events(prefect_api, "aviris-ng", ng)
    res = ev["resource"]
    assert res["prefect.resource.id"] == f"stac.item.aviris-ng-raw.aviris-ng-{ng}"
    assert (res["hsi.collection"], res["hsi.source"], res["hsi.scene_id"], res["hsi.product"]) == (
        "aviris-ng-raw", "aviris-ng", ng, "none"
    )  # fmt: skip
    assert ev["payload"]["key"] == data and ev["payload"]["bucket"] == bucket
    assert (
        ev["payload"]["uri"] == f"s3://{bucket}/{data}"
        and ev["payload"]["catalog_href"] == "http://stac.test"
    )
    etag = aws["s3"].head_object(Bucket=bucket, Key=data)["ETag"]
    assert ev["id"] == str(raw_object_event_id(bucket, data, None, etag))
    (ev2,) = raw_events(prefect_api, "aviris-classic", classic)
    assert ev2["resource"]["hsi.collection"] == "aviris-classic-raw"
    assert ev2["payload"]["extra"]["notification"] == "sns"
    assert queue_empty(aws["sqs"], dlq)


def test_direct_sqs_header_first_quoted_keys_and_multipart(aws: dict[str, Any], prefect_api: str) -> None:
    bucket = f"raw-direct-{uid()}"
    queue, dlq = bucket_direct(aws, bucket)
    ng, ng_mp = ng_scene(), ng_scene()
    data = f"flight lines/2015+x/{ng}_rfl_v1e_img"  # space and '+': moto quote_plus-encodes keys
    put(aws, bucket, data + ".hdr")  # header first
    put(aws, bucket, data)
    # multipart upload: moto notifies twice (Put + CompleteMultipartUpload) with the same etag
    mp_key = f"archives/{ng_mp}.tar.gz"
    up = aws["s3"].create_multipart_upload(Bucket=bucket, Key=mp_key)
    parts = []
    for n in (1, 2):
        body = (b"a" if n == 1 else b"b") * (5 * 1024 * 1024 if n == 1 else 10)
        r = aws["s3"].upload_part(Bucket=bucket, Key=mp_key, UploadId=up["UploadId"], PartNumber=n, Body=body)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    aws["s3"].complete_multipart_upload(Bucket=bucket, Key=mp_key, UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})  # fmt: skip
    with consumer(aws, queue, dlq, prefect_api) as c:
        wait_for(lambda: raw_events(prefect_api, "aviris-ng", ng), what="ENVI event")
        wait_for(lambda: raw_events(prefect_api, "aviris-ng", ng_mp), what="multipart event")
        wait_for(lambda: queue_empty(aws["sqs"], queue), what="queue drained")
        assert len(c.processor.recent) == 2
    (ev,) = raw_events(prefect_api, "aviris-ng", ng)
    assert ev["payload"]["key"] == data
    (mp,) = raw_events(prefect_api, "aviris-ng", ng_mp)
    assert mp["payload"]["etag"].endswith("-2") and mp["payload"]["key"] == mp_key


def test_three_deliveries_one_event_and_late_redelivery_not_posted(
    aws: dict[str, Any], prefect_api: str
) -> None:
    bucket = f"raw-dup-{uid()}"
    queue, dlq = bucket_direct(aws, bucket)
    ng = ng_scene()
    key = f"{ng}.tar.gz"
    put(aws, bucket, key)
    # capture the real notification, then deliver it 3 times
    body = wait_for(lambda: _take_notification(aws["sqs"], queue), what="notification")
    for _ in range(3):
        aws["sqs"].send_message(QueueUrl=queue, MessageBody=body)
    with consumer(aws, queue, dlq, prefect_api):
        wait_for(lambda: raw_events(prefect_api, "aviris-ng", ng), what="event")
        wait_for(lambda: queue_empty(aws["sqs"], queue), what="queue drained")
    assert len(raw_events(prefect_api, "aviris-ng", ng)) == 1
    # A redelivery long after acceptance (new bridge process: empty local record; the server's
    # trigger dedupe cache would have expired): the bridge finds the id via the events API and does
    # not post it again.
    aws["sqs"].send_message(QueueUrl=queue, MessageBody=body)
    proc = BridgeProcessor(aws["s3"], PrefectEvents(prefect_api), rules=DEFAULT_RULES)
    fresh = SqsConsumer(aws["sqs"], queue, proc, dlq_url=dlq, wait_s=1)
    n, result = wait_for(lambda: (r := fresh.poll_once())[0] and r, what="redelivery received")
    assert n == 1 and result.posted == [] and len(result.duplicates) == 1
    assert queue_empty(aws["sqs"], queue)
    assert len(raw_events(prefect_api, "aviris-ng", ng)) == 1


def test_poison_to_dlq_unknown_and_test_event_acknowledged(aws: dict[str, Any], prefect_api: str) -> None:
    bucket = f"raw-poison-{uid()}"
    queue, dlq = bucket_direct(aws, bucket)  # configuring the notification sends a real s3:TestEvent
    put(aws, bucket, "unrelated/holiday.bin")
    aws["sqs"].send_message(QueueUrl=queue, MessageBody="{this is not json")
    aws["sqs"].send_message(
        QueueUrl=queue, MessageBody=json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]})
    )
    with consumer(aws, queue, dlq, prefect_api):
        wait_for(lambda: queue_empty(aws["sqs"], queue), what="queue drained")
        got = wait_for(lambda: _drain(aws["sqs"], dlq, 2), what="2 messages in the DLQ")
    reasons = sorted(m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in got)
    assert "not JSON" in reasons[1] and "lacks" in reasons[0], reasons
    assert {m["Body"] for m in got} >= {"{this is not json"}


def _take_notification(sqs: Any, url: str) -> str | None:
    """Receive and delete everything (the s3:TestEvent too); return the ObjectCreated body."""
    found = None
    for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if "ObjectCreated" in m["Body"]:
            found = m["Body"]
    return found


_drained: dict[str, list[dict[str, Any]]] = {}


def _drain(sqs: Any, url: str, n: int) -> list[dict[str, Any]] | None:
    got = _drained.setdefault(url, [])
    resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                               MessageAttributeNames=["All"])  # fmt: skip
    got += resp.get("Messages", [])
    return got if len(got) >= n else None


def test_prefect_outage_keeps_messages_then_delivers_and_sigterm_exits_0(
    aws: dict[str, Any], prefect_api: str, moto_endpoint: str, tmp_path: Path
) -> None:
    bucket = f"raw-outage-{uid()}"
    queue, dlq = bucket_via_sns(aws, bucket)
    ng = ng_scene()
    proxy = TcpProxy(int(httpx.URL(prefect_api).port or 80))  # not started: connection refused
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": moto_endpoint}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-c", "from hsi_pipeline.cli.bridge import app; app()", "run", "--queue-url", queue,
           "--dlq-url", dlq, "--prefect-api-url", f"http://127.0.0.1:{proxy.port}/api", "--wait-seconds", "1"]  # fmt: skip
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log:
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            put(aws, bucket, f"x/{ng}.tar.gz")
            wait_for(lambda: "Prefect unavailable" in log_path.read_text(), timeout=60, what="a failed post")
            assert sum(queue_counts(aws["sqs"], queue)) == 1, "message must stay in the queue"
            assert raw_events(prefect_api, "aviris-ng", ng) == []
            proxy.start()
            wait_for(
                lambda: raw_events(prefect_api, "aviris-ng", ng), timeout=60, what="event after recovery"
            )
            wait_for(lambda: queue_empty(aws["sqs"], queue), what="queue drained")
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=30) == 0
        finally:
            if p.poll() is None:
                p.kill()
            proxy.stop()
    assert len(raw_events(prefect_api, "aviris-ng", ng)) == 1
    text = log_path.read_text()
    assert "testing" not in text  # credentials never logged
    assert "bridge stopped" in text


def _runs_for(api: str, deployment_id: str, scene: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "limit": 200}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
    return [r for r in runs if r["parameters"].get("scene_id") == scene]


def test_three_deliveries_trigger_one_deployment_run(aws: dict[str, Any], prefect_api: str) -> None:
    """End to end: a deployment trigger templated from the event's labels runs once for 3 deliveries."""
    api = prefect_api
    bucket = f"raw-run-{uid()}"
    queue, dlq = bucket_direct(aws, bucket)
    dup, sentinel, probe = ng_scene(), ng_scene(), ng_scene()
    rid = lambda s: f"stac.item.aviris-ng-raw.aviris-ng-{s}"  # noqa: E731
    flow = httpx.post(f"{api}/flows/", json={"name": f"bridge-test-{uid()}"}, timeout=10).json()
    dep = httpx.post(f"{api}/deployments/", json={"name": "raw", "flow_id": flow["id"], "entrypoint": "x.py:f"},
                     timeout=10).json()  # fmt: skip
    auto = {
        "name": f"bridge-test-{uid()}",
        "trigger": {"type": "event", "expect": [RAW_AVAILABLE],
                    "match": {"prefect.resource.id": [rid(dup), rid(sentinel), rid(probe)]},
                    "posture": "Reactive", "threshold": 1, "within": 0},
        "actions": [{"type": "run-deployment", "source": "selected", "deployment_id": dep["id"],
                     "parameters": {"scene_id": "{{ event.resource['hsi.scene_id'] }}",
                                    "uri": "{{ event.payload.uri }}", "event_id": "{{ event.id | string }}"}}],
    }  # fmt: skip
    r = httpx.post(f"{api}/automations/", json=auto, timeout=10)
    assert r.status_code == 201, r.text
    try:
        # wait until the triggers service has loaded the automation (probe events, fresh ids)
        def probe_run() -> bool:
            ev = {"id": str(uuid.uuid4()), "occurred": "2024-01-01T00:00:00Z", "event": RAW_AVAILABLE,
                  "resource": {"prefect.resource.id": rid(probe), "hsi.scene_id": probe}, "payload": {"uri": ""}}  # fmt: skip
            if not _runs_for(api, dep["id"], probe):
                httpx.post(f"{api}/events", json=[ev], timeout=10)
            return bool(_runs_for(api, dep["id"], probe))

        wait_for(probe_run, timeout=60, interval=1.0, what="automation active")
        put(aws, bucket, f"{dup}.tar.gz")
        body = wait_for(lambda: _take_notification(aws["sqs"], queue), what="notification")
        for _ in range(3):
            aws["sqs"].send_message(QueueUrl=queue, MessageBody=body)
        with consumer(aws, queue, dlq, api):
            wait_for(lambda: _runs_for(api, dep["id"], dup), what="run for the scene")
            wait_for(lambda: queue_empty(aws["sqs"], queue), what="queue drained")
            put(aws, bucket, f"{sentinel}.tar.gz")  # processed after the duplicates
            wait_for(lambda: _runs_for(api, dep["id"], sentinel), what="run for the sentinel")
        (run,) = _runs_for(api, dep["id"], dup)
        assert run["parameters"]["uri"] == f"s3://{bucket}/{dup}.tar.gz"
        (ev,) = wait_for(lambda: raw_events(api, "aviris-ng", dup), what="stored event")
        assert run["parameters"]["event_id"] == ev["id"]
    finally:
        httpx.delete(f"{api}/automations/{r.json()['id']}", timeout=10)


def test_hsi_bridge_run_logs_posted_and_ignored_lines(
    aws: dict[str, Any], prefect_api: str, moto_endpoint: str
) -> None:
    """Through the real ``hsi`` entry point with HSI_LOG_LEVEL=DEBUG: the bridge's per-message lines
    appear (the CLI used to configure logging at WARNING first, silencing them)."""
    bucket = f"raw-logs-{uid()}"
    queue, dlq = bucket_direct(aws, bucket)
    ng = ng_scene()
    put(aws, bucket, "unrelated/holiday.bin")
    put(aws, bucket, f"x/{ng}.tar.gz")
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_endpoint, "HSI_LOG_LEVEL": "DEBUG"}
    env.pop("PREFECT_API_URL", None)
    hsi = str(Path(sys.executable).parent / "hsi")
    p = subprocess.run([hsi, "bridge", "run", "--queue-url", queue, "--dlq-url", dlq, "--prefect-api-url",
                        prefect_api, "--wait-seconds", "1", "--until-empty"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    log = p.stdout + p.stderr
    ignored = [ln for ln in log.splitlines() if ": ignored: " in ln]
    assert any("unrelated/holiday.bin" in ln for ln in ignored), log[-3000:]
    posted = [ln for ln in log.splitlines() if "posted event" in ln]
    assert len(posted) == 1, log[-3000:]
    got = wait_for(lambda: raw_events(prefect_api, "aviris-ng", ng), timeout=60, what="the posted event")
    assert posted[0].rstrip().endswith(got[0]["id"])
