"""The S3/SNS/SQS -> Prefect event bridge: a long-running SQS consumer.

Each SQS message (a raw S3 notification, an SNS envelope or an EventBridge event) becomes zero or
more ``hsi.raw.available`` events posted to ``POST {PREFECT_API_URL}/events``. Guarantees:

* a message is deleted only after its events were accepted (2xx) or it was moved to the DLQ;
* Prefect unavailable -> nothing is deleted, the batch is made visible again after a back-off;
* exactly one event per object version: deterministic event ids (see :mod:`hsi.events`), a local
  TTL record of accepted ids and, before posting, a look-up of the ids through
  ``POST /events/filter`` (the server dedupes *stored* events by id, but its trigger pipeline only
  remembers ids for 5 minutes per server process, so a late redelivery would fire automations
  again without this check);
* poison messages go to the DLQ with a ``hsi-bridge-reason`` attribute, then are deleted.

Uses httpx (no ``import prefect``: it takes seconds and the bridge needs nothing else of it).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from hsi.bridge import Classified, ObjectCreated, RecentIds, SourceRule, classify_key, parse_message
from hsi.errors import PoisonMessage, TransientError
from hsi.events import raw_available_event

log = logging.getLogger("hsi.bridge")

REASON_ATTRIBUTE = "hsi-bridge-reason"
FILTER_PAGE = 50  # the server's maximum page size for /events/filter


class PrefectUnavailable(TransientError):
    """The Prefect API could not be reached or answered 5xx."""


class EventsRejected(Exception):
    """The Prefect API refused the events (4xx other than auth): retrying the same body will not help."""


def prefect_auth_headers() -> dict[str, str]:
    """Authorization from PREFECT_API_AUTH_STRING (basic) or PREFECT_API_KEY (bearer); never logged."""
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if auth:
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    key = os.environ.get("PREFECT_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


class PrefectEvents:
    """Minimal client of the Prefect events API (post + look up ids)."""

    def __init__(self, api_url: str, *, timeout_s: float = 10.0, lookback: timedelta = timedelta(days=30),
                 http: httpx.Client | None = None) -> None:  # fmt: skip
        self.api_url = api_url.rstrip("/")
        self.lookback = lookback
        self._http = http or httpx.Client(timeout=timeout_s, headers=prefect_auth_headers())

    def close(self) -> None:
        self._http.close()

    def _request(self, path: str, body: Any) -> httpx.Response:
        url = f"{self.api_url}{path}"
        try:
            resp = self._http.post(url, json=body)
        except httpx.HTTPError as e:
            raise PrefectUnavailable(f"Prefect API {url}: {type(e).__name__}: {e}") from e
        if resp.status_code >= 500 or resp.status_code in (401, 403, 404, 408, 429):
            raise PrefectUnavailable(f"Prefect API {url}: HTTP {resp.status_code}: {resp.text[:200]}")
        if resp.status_code >= 400:
            raise EventsRejected(f"Prefect API {url}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the server already stored (within ``lookback``)."""
        now = datetime.now(UTC)
        found: set[str] = set()
        for i in range(0, len(ids), FILTER_PAGE):
            chunk = list(ids[i : i + FILTER_PAGE])
            body = {
                "filter": {
                    "id": {"id": chunk},
                    "occurred": {"since": (now - self.lookback).isoformat(),
                                 "until": (now + timedelta(days=1)).isoformat()},
                },
                "limit": FILTER_PAGE,
            }  # fmt: skip
            page = self._request("/events/filter", body).json()
            found.update(str(e["id"]) for e in page.get("events", []))
        return found

    def post(self, events: Sequence[dict[str, Any]]) -> None:
        if events:
            self._request("/events", list(events))


@dataclass(frozen=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str


@dataclass
class BatchResult:
    acked: list[Message] = field(default_factory=list)
    retry: list[Message] = field(default_factory=list)
    poison: list[tuple[Message, str]] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def _not_found(e: ClientError) -> bool:
    code = str(e.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class BridgeProcessor:
    """Turns SQS messages into posted events; shared by the SQS consumer and the Lambda handler."""

    def __init__(self, s3: Any, prefect: PrefectEvents, *, rules: Sequence[SourceRule],
                 recent: RecentIds | None = None, catalog_href: str = "") -> None:  # fmt: skip
        self.s3 = s3
        self.prefect = prefect
        self.rules = tuple(rules)
        self.recent = recent or RecentIds()
        self.catalog_href = catalog_href

    # -- S3 look-ups ---------------------------------------------------------------------------
    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.s3.head_object(Bucket=bucket, Key=key))
        except ClientError as e:
            if _not_found(e):
                return None
            raise TransientError(f"s3://{bucket}/{key}: HEAD failed: {e}") from e
        except BotoCoreError as e:
            raise TransientError(f"s3://{bucket}/{key}: HEAD failed: {e}") from e

    def _event(self, c: Classified, rec: ObjectCreated, head: dict[str, Any] | None) -> dict[str, Any]:
        if head is not None:
            version = head.get("VersionId")
            etag = head.get("ETag")
            size = head.get("ContentLength")
        else:
            version, etag, size = rec.version_id, rec.etag, rec.size
        return raw_available_event(
            source=c.source,
            scene_id=c.scene_id,
            bucket=rec.bucket,
            key=c.data_key,
            version_id=version if version and version != "null" else None,
            etag=etag,
            size=size,
            occurred=rec.event_time,
            catalog_href=self.catalog_href,
            extra={"kind": c.kind if c.kind == "archive" else "envi",
                   "header_key": c.header_key, "notified_key": rec.key, "notification": rec.shape},
        )  # fmt: skip

    def resolve(self, rec: ObjectCreated) -> dict[str, Any] | str:
        """The event for one record, or the reason there is none (yet)."""
        c = classify_key(rec.key, self.rules)
        where = f"s3://{rec.bucket}/{rec.key}"
        if c.kind == "ignored":
            return f"{where}: ignored: {c.reason}"
        if c.kind == "archive":
            head = None if (rec.version_id or rec.etag) else self._head(rec.bucket, rec.key)
            return self._event(c, rec, head)
        if c.kind == "data":
            if self._head(rec.bucket, c.header_key) is None:
                return f"{where}: ENVI data without header {c.header_key} yet; the header's arrival emits"
            # identity from a HEAD on both paths (data or header second), so the two arrivals give
            # the same id even where notifications omit versionId (moto on versioned buckets)
            head = self._head(rec.bucket, rec.key)
            if head is None:
                return f"{where}: ENVI data no longer exists; nothing to emit"
            return self._event(c, rec, head)
        data_head = self._head(rec.bucket, c.data_key)  # c.kind == "header"
        if data_head is None:
            return f"{where}: ENVI header without data {c.data_key} yet; the data's arrival emits"
        return self._event(c, rec, data_head)

    def events_for(self, msg: Message) -> list[dict[str, Any]]:
        """Events of one message; raises PoisonMessage or TransientError."""
        parsed = parse_message(msg.body)
        for reason in parsed.ignored:
            log.info("message %s: ignored: %s", msg.message_id, reason)
        events = []
        for rec in parsed.records:
            out = self.resolve(rec)
            if isinstance(out, str):
                log.info("message %s: %s", msg.message_id, out)
            else:
                events.append(out)
        return events

    # -- batches -------------------------------------------------------------------------------
    def _post_new(self, events: Iterable[dict[str, Any]], result: BatchResult) -> None:
        unique = {e["id"]: e for e in events}
        fresh = [i for i in unique if i not in self.recent]
        existing = self.prefect.existing_ids(fresh) if fresh else set()
        to_post = [unique[i] for i in fresh if i not in existing]
        self.prefect.post(to_post)
        for i in unique:
            self.recent.add(i)
        result.posted.extend(e["id"] for e in to_post)
        result.duplicates.extend(i for i in unique if i not in {e["id"] for e in to_post})

    def process(self, messages: Sequence[Message]) -> BatchResult:
        result = BatchResult()
        ready: list[tuple[Message, list[dict[str, Any]]]] = []
        for msg in messages:
            try:
                events = self.events_for(msg)
            except PoisonMessage as e:
                result.poison.append((msg, e.reason))
            except TransientError as e:
                log.warning("message %s: will retry: %s", msg.message_id, e)
                result.retry.append(msg)
            else:
                if events:
                    ready.append((msg, events))
                else:
                    result.acked.append(msg)  # nothing to post: acknowledge without the API
        if not ready:
            return result
        try:
            self._post_new((ev for _, evs in ready for ev in evs), result)
            result.acked.extend(m for m, _ in ready)
        except PrefectUnavailable as e:
            log.warning("Prefect unavailable, %d message(s) stay in the queue: %s", len(ready), e)
            result.retry.extend(m for m, _ in ready)
        except EventsRejected:
            for msg, evs in ready:  # find the culprit(s)
                try:
                    self._post_new(evs, result)
                    result.acked.append(msg)
                except EventsRejected as e:
                    result.poison.append((msg, f"Prefect rejected the event(s): {e}"))
                except PrefectUnavailable:
                    result.retry.append(msg)
        for eid in result.posted:
            log.info("posted event %s", eid)
        for eid in result.duplicates:
            log.info("event %s already accepted; not posted again", eid)
        return result


class SqsConsumer:
    """Long-polls one SQS queue and feeds a :class:`BridgeProcessor`."""

    def __init__(self, sqs: Any, queue_url: str, processor: BridgeProcessor, *, dlq_url: str | None = None,
                 wait_s: int = 20, max_messages: int = 10, backoff_s: tuple[float, float] = (1.0, 60.0)) -> None:  # fmt: skip
        self.sqs = sqs
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.processor = processor
        self.wait_s = wait_s
        self.max_messages = max_messages
        self.backoff_min, self.backoff_max = backoff_s
        self._backoff = 0.0

    def receive(self) -> list[Message]:
        resp = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=self.wait_s,
            MessageAttributeNames=["All"],
        )
        return [Message(m["MessageId"], m["ReceiptHandle"], m["Body"]) for m in resp.get("Messages", [])]

    def _delete(self, msgs: Sequence[Message]) -> None:
        for i in range(0, len(msgs), 10):
            chunk = msgs[i : i + 10]
            resp = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(chunk)],
            )
            for f in resp.get("Failed", []):
                log.warning(
                    "could not delete message %s: %s", chunk[int(f["Id"])].message_id, f.get("Message")
                )

    def _to_dlq(self, msg: Message, reason: str) -> bool:
        if not self.dlq_url:
            log.error("poison message %s (%s); no DLQ configured: left for the queue's redrive policy",
                      msg.message_id, reason)  # fmt: skip
            return False
        self.sqs.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=msg.body,
            MessageAttributes={
                REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000] or "unknown"},
                "hsi-bridge-source-message-id": {"DataType": "String", "StringValue": msg.message_id},
            },
        )
        log.error("poison message %s moved to the DLQ: %s", msg.message_id, reason)
        return True

    def _release(self, msgs: Sequence[Message], delay_s: float) -> None:
        """Make messages visible again after ``delay_s`` (instead of the queue's visibility timeout)."""
        entries = [{"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": int(delay_s)}
                   for n, m in enumerate(msgs)]  # fmt: skip
        for i in range(0, len(entries), 10):
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries[i : i + 10])
            except (ClientError, BotoCoreError) as e:
                log.warning("could not change visibility: %s", e)

    def poll_once(self) -> tuple[int, BatchResult]:
        msgs = self.receive()
        if not msgs:
            return 0, BatchResult()
        result = self.processor.process(msgs)
        done = list(result.acked)
        stuck = list(result.retry)
        for msg, reason in result.poison:
            (done if self._to_dlq(msg, reason) else stuck).append(msg)
        if done:
            self._delete(done)
        if result.retry:
            self._backoff = min(self.backoff_max, max(self.backoff_min, self._backoff * 2))
            self._release(stuck, self._backoff)
        else:
            self._backoff = 0.0
            if stuck:
                self._release(stuck, self.backoff_max)
        return len(msgs), result

    def run(self, stop: threading.Event, *, until_empty: bool = False) -> int:
        """Poll until ``stop`` is set (the current batch is finished first); returns 0."""
        log.info("bridge consuming %s (DLQ %s) -> %s", self.queue_url, self.dlq_url or "none",
                 self.processor.prefect.api_url)  # fmt: skip
        while not stop.is_set():
            try:
                n, result = self.poll_once()
            except (ClientError, BotoCoreError) as e:
                self._backoff = min(self.backoff_max, max(self.backoff_min, self._backoff * 2))
                log.warning("SQS error, retrying in %.1fs: %s", self._backoff, e)
                stop.wait(self._backoff)
                continue
            if n == 0 and until_empty:
                break
            if result.retry:
                stop.wait(self._backoff)
        log.info("bridge stopped")
        return 0
