"""SQS-triggered AWS Lambda alternative to the long-running consumer.

Configure the event source mapping with ``FunctionResponseTypes=["ReportBatchItemFailures"]``;
the handler returns ``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}`` for the
messages that must be retried (Prefect unavailable, S3 HEAD failed). Poison messages are sent to
``HSI_BRIDGE_DLQ_URL`` when set (and reported as done); otherwise they are reported as failures so
the queue's redrive policy moves them to its DLQ after ``maxReceiveCount`` receives.

Environment: ``PREFECT_API_URL`` (required), ``PREFECT_API_KEY`` or ``PREFECT_API_AUTH_STRING``
(optional), ``HSI_BRIDGE_DLQ_URL`` (optional), ``HSI_BRIDGE_RULES`` (optional JSON list of
``{source, patterns, [scene_id_regex]}``), ``HSI_CATALOG_HREF`` (optional), ``AWS_ENDPOINT_URL``
(optional, tests).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from hsi.bridge import RecentIds, rules_from_config
from hsi_pipeline.deployments.bridge.consumer import REASON_ATTRIBUTE, BridgeProcessor, Message, PrefectEvents

log = logging.getLogger("hsi.bridge")

_state: dict[str, Any] = {}


def _processor() -> BridgeProcessor:
    if "processor" not in _state:
        import boto3

        api = os.environ.get("PREFECT_API_URL")
        if not api:
            raise RuntimeError("PREFECT_API_URL is not set")
        rules_json = os.environ.get("HSI_BRIDGE_RULES")
        rules = rules_from_config(json.loads(rules_json) if rules_json else None)
        _state["processor"] = BridgeProcessor(
            boto3.client("s3"), PrefectEvents(api), rules=rules, recent=RecentIds(),
            catalog_href=os.environ.get("HSI_CATALOG_HREF", ""),
        )  # fmt: skip
        _state["sqs"] = boto3.client("sqs")
    return _state["processor"]


def handler(event: dict[str, Any], context: Any = None, *, processor: BridgeProcessor | None = None,
            sqs: Any = None) -> dict[str, list[dict[str, str]]]:  # fmt: skip
    """Process an SQS batch; returns the partial batch failure response."""
    proc = processor or _processor()
    sqs = sqs or _state.get("sqs")
    dlq = os.environ.get("HSI_BRIDGE_DLQ_URL")
    msgs = [Message(r["messageId"], r.get("receiptHandle", ""), r["body"]) for r in event.get("Records", [])]
    result = proc.process(msgs)
    failed = [m.message_id for m in result.retry]
    for msg, reason in result.poison:
        if dlq and sqs is not None:
            sqs.send_message(
                QueueUrl=dlq, MessageBody=msg.body,
                MessageAttributes={REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000]}},
            )  # fmt: skip
            log.error("poison message %s moved to the DLQ: %s", msg.message_id, reason)
        else:
            log.error(
                "poison message %s (%s): reported as failed for the redrive policy", msg.message_id, reason
            )
            failed.append(msg.message_id)
    return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
