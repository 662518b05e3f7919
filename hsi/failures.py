"""Failure records: the last failure of a stage on one target item, kept until the item succeeds.

Prefect's ``hsi.<stage>.failed`` events say the same, but a static catalog has no server to ask and
events expire. So a failing activation or product run also writes one small JSON document next to the
assets, at ``<storage root>/_failures/<collection>/<item id>.json``, and a run that publishes (or finds
the item up to date) deletes it. It holds what :func:`hsi.operations.plan_catalog` shows (reason, time,
flow run) and what ``hsi replay --failed`` needs to run the same work again (the flow parameters).

This is not a second state database: the catalog (items, keys) says what is done; a record only says
why the last attempt at something not done failed, and it disappears once the work succeeds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from hsi.services import Services

__all__ = [
    "FAILURES_PREFIX",
    "FailureRecord",
    "clear_failure",
    "get_failure",
    "list_failures",
    "record_failure",
]

log = logging.getLogger(__name__)

FAILURES_PREFIX = "_failures"
Stage = Literal["activate", "product"]


@dataclass(frozen=True)
class FailureRecord:
    """The last failure of ``stage`` on the target item ``collection/item_id``."""

    stage: Stage
    collection: str  # the target item's collection (activated or product collection)
    item_id: str
    reason: str
    params: Mapping[str, Any] = field(default_factory=dict)  # flow parameters that redo the work
    failed_at: str = ""  # ISO 8601 UTC
    flow_run_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FailureRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def when(self) -> datetime | None:
        try:
            return datetime.fromisoformat(self.failed_at.replace("Z", "+00:00"))
        except ValueError:
            return None


def _uri(services: Services, collection: str, item_id: str) -> str:
    return services.store.uri(FAILURES_PREFIX, collection, f"{item_id}.json")


def record_failure(services: Services, record: FailureRecord) -> FailureRecord:
    """Write (replace) the failure record of ``record``'s target item; stamps ``failed_at`` when empty."""
    if not record.failed_at:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        record = FailureRecord(**{**record.as_dict(), "failed_at": now})
    body = json.dumps(record.as_dict(), sort_keys=True, default=str).encode()
    services.store.put_bytes(body, _uri(services, record.collection, record.item_id), "application/json")
    return record


def clear_failure(services: Services, collection: str, item_id: str) -> bool:
    """Delete the failure record of ``collection/item_id``; True when there was one."""
    return services.store.delete(_uri(services, collection, item_id))


def get_failure(services: Services, collection: str, item_id: str) -> FailureRecord | None:
    try:
        doc = json.loads(services.store.get_bytes(_uri(services, collection, item_id)))
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("unreadable failure record for %s/%s: ignored", collection, item_id)
        return None
    return FailureRecord.from_dict(doc)


def list_failures(services: Services, *, since: datetime | None = None) -> Iterator[FailureRecord]:
    """Every failure record (optionally only those at or after ``since``), oldest first."""
    out = []
    for uri in services.store.list(services.store.uri(FAILURES_PREFIX)):
        if not uri.endswith(".json"):
            continue
        try:
            rec = FailureRecord.from_dict(json.loads(services.store.get_bytes(uri)))
        except (FileNotFoundError, ValueError, TypeError):
            continue  # cleared meanwhile, or not ours
        when = rec.when
        if since is not None and (when is None or when < since):
            continue
        out.append(rec)
    yield from sorted(out, key=lambda r: r.failed_at)
