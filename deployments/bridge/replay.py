"""Re-drive the bridge's dead-letter queue (``hsi bridge replay``).

Every message taken from the DLQ ends in exactly one of:

* ``posted``: its events were accepted by the Prefect API (each starts one run through the
  automation); the message is deleted from the DLQ;
* ``duplicate``: the API already has its events (a run was already started for them): deleted,
  nothing posted again;
* ``kept``: it still cannot become an event (malformed, an unknown key, a header without its data
  ...); it is put back on the DLQ with the new reason in ``hsi-bridge-reason`` and a replay count in
  ``hsi-replay-count``, so nothing is lost and the reason is recorded on the message itself;
* ``retry``: a transient failure (S3 or Prefect unreachable): left in the DLQ untouched.

Replays of a fixed message or of a newly configured key therefore start one run each, and a second
replay of the same messages starts none.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hsi.bridge import parse_message
from hsi.errors import PoisonMessage, TransientError
from hsi_pipeline.deployments.bridge.consumer import (
    REASON_ATTRIBUTE,
    BridgeProcessor,
    EventsRejected,
    Message,
    PrefectUnavailable,
)

__all__ = ["ReplayOutcome", "replay_dlq"]

log = logging.getLogger("hsi.bridge")

RUN_ATTRIBUTE = "hsi-replay-run"
COUNT_ATTRIBUTE = "hsi-replay-count"


@dataclass
class ReplayOutcome:
    message_id: str
    outcome: Literal["posted", "duplicate", "kept", "retry"]
    reason: str = ""
    events: list[str] = field(default_factory=list)
    previous_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _events(processor: BridgeProcessor, msg: Message) -> tuple[list[dict[str, Any]], list[str]]:
    """(events, reasons for records without one); raises PoisonMessage / TransientError."""
    parsed = parse_message(msg.body)
    reasons = list(parsed.ignored)
    events = []
    for rec in parsed.records:
        out = processor.resolve(rec)
        if isinstance(out, str):
            reasons.append(out)
        else:
            events.append(out)
    return events, reasons


def _attr(m: dict[str, Any], name: str) -> str:
    return str((m.get("MessageAttributes") or {}).get(name, {}).get("StringValue", ""))


def replay_dlq(sqs: Any, dlq_url: str, processor: BridgeProcessor, *, max_messages: int | None = None,
               visibility_s: int = 60) -> list[ReplayOutcome]:  # fmt: skip
    """Take every message of the DLQ once (up to ``max_messages``) and re-drive it; one outcome each."""
    run = uuid.uuid4().hex
    outcomes: list[ReplayOutcome] = []
    put_back: list[str] = []  # receipt handles of messages this replay already put back
    try:
        while max_messages is None or len(outcomes) < max_messages:
            want = 10 if max_messages is None else min(10, max_messages - len(outcomes))
            resp = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=want, WaitTimeSeconds=1,
                                       VisibilityTimeout=visibility_s, MessageAttributeNames=["All"])  # fmt: skip
            batch = resp.get("Messages", [])
            if not batch:
                break
            for m in batch:
                if _attr(m, RUN_ATTRIBUTE) == run:
                    put_back.append(m["ReceiptHandle"])  # seen once already: stays invisible until the end
                else:
                    out = _one(sqs, dlq_url, processor, m, run)
                    outcomes.append(out)
                    if out.outcome == "retry":  # left in the DLQ for a later replay
                        put_back.append(m["ReceiptHandle"])
    finally:
        for handle in put_back:  # visible again for the next replay
            sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return outcomes


def _one(sqs: Any, dlq_url: str, processor: BridgeProcessor, m: dict[str, Any], run: str) -> ReplayOutcome:
    msg = Message(m["MessageId"], m["ReceiptHandle"], m["Body"])
    before = _attr(m, REASON_ATTRIBUTE)
    try:
        events, reasons = _events(processor, msg)
    except PoisonMessage as e:
        return _keep(
            sqs, dlq_url, m, run, ReplayOutcome(msg.message_id, "kept", e.reason, previous_reason=before)
        )
    except TransientError as e:
        return _release(
            sqs, dlq_url, m, ReplayOutcome(msg.message_id, "retry", str(e), previous_reason=before)
        )
    if not events:
        why = "; ".join(reasons) or "no object-created record"
        return _keep(sqs, dlq_url, m, run, ReplayOutcome(msg.message_id, "kept", why, previous_reason=before))
    ids = list(dict.fromkeys(e["id"] for e in events))
    try:
        existing = processor.prefect.existing_ids(ids)
        fresh = [e for e in {e["id"]: e for e in events}.values() if e["id"] not in existing]
        processor.prefect.post(fresh)
    except PrefectUnavailable as e:
        return _release(sqs, dlq_url, m, ReplayOutcome(msg.message_id, "retry", str(e), ids, before))
    except EventsRejected as e:
        return _keep(sqs, dlq_url, m, run, ReplayOutcome(msg.message_id, "kept", f"Prefect rejected the event(s): {e}",
                                                         ids, before))  # fmt: skip
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=msg.receipt_handle)
    outcome = ReplayOutcome(msg.message_id, "posted" if fresh else "duplicate",
                            "" if fresh else "events already accepted; not posted again", ids, before)  # fmt: skip
    log.info("DLQ message %s: %s %s", msg.message_id, outcome.outcome, ", ".join(ids))
    return outcome


def _keep(sqs: Any, dlq_url: str, m: dict[str, Any], run: str, out: ReplayOutcome) -> ReplayOutcome:
    count = int(_attr(m, COUNT_ATTRIBUTE) or 0) + 1
    attrs = {k: v for k, v in (m.get("MessageAttributes") or {}).items()
             if k not in (REASON_ATTRIBUTE, RUN_ATTRIBUTE, COUNT_ATTRIBUTE)}  # fmt: skip
    attrs |= {
        REASON_ATTRIBUTE: {"DataType": "String", "StringValue": out.reason[:1000] or "unknown"},
        RUN_ATTRIBUTE: {"DataType": "String", "StringValue": run},
        COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(count)},
    }
    sqs.send_message(QueueUrl=dlq_url, MessageBody=m["Body"], MessageAttributes=attrs)
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
    log.warning("DLQ message %s kept: %s", m["MessageId"], out.reason)
    return out


def _release(sqs: Any, dlq_url: str, m: dict[str, Any], out: ReplayOutcome) -> ReplayOutcome:
    log.warning("DLQ message %s left for a later replay: %s", m["MessageId"], out.reason)
    return out
