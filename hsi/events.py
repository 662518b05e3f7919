"""Event names, payload models and a builder of Prefect-compatible event dicts.

Shared by emitters (tasks, the S3/SNS/SQS bridge) and triggers (``prefect.yaml``). Pure: no prefect
import; :func:`build_event` returns the JSON-ready dict that ``POST /api/events`` accepts (a list of
them) and that ``prefect.events.emit_event(**...)``-style callers can unpack.

Every event carries *all* resource labels and *all* payload keys, using ``""`` / ``"none"`` when a
field does not apply: a trigger template that reads a label the event lacks fails its action.

Ids are deterministic where a redelivery must be recognised: a raw object's event id is
``uuid5(HSI_EVENT_NAMESPACE, "<bucket>/<key>@<version_id or etag>")``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RAW_AVAILABLE = "hsi.raw.available"
SCENE_ACTIVATED = "hsi.scene.activated"
PRODUCT_PUBLISHED = "hsi.product.published"

Stage = Literal["raw", "activate", "product"]
STAGES: tuple[str, ...] = ("raw", "activate", "product")
Outcome = Literal["skipped", "failed"]

#: Fixed namespace for deterministic event ids (never change it: ids would stop matching).
HSI_EVENT_NAMESPACE = uuid.UUID("6f1c0a52-3f0e-5b8e-9d7a-2b1e4c7f9a10")

#: Label value used when a label does not apply (e.g. ``hsi.product`` on a raw event).
NONE = "none"


def stage_event(stage: str, outcome: str) -> str:
    """``hsi.<stage>.skipped`` / ``hsi.<stage>.failed``; raises ValueError for an unknown stage/outcome."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    if outcome not in ("skipped", "failed"):
        raise ValueError(f"unknown outcome {outcome!r}; expected 'skipped' or 'failed'")
    return f"hsi.{stage}.{outcome}"


ALL_EVENTS: tuple[str, ...] = (
    RAW_AVAILABLE,
    SCENE_ACTIVATED,
    PRODUCT_PUBLISHED,
    *(stage_event(s, o) for s in STAGES for o in ("skipped", "failed")),
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventResource(_Model):
    """The STAC item an event is about; rendered as ``stac.item.<collection>.<item_id>`` + labels."""

    collection: str
    item_id: str
    source: str = NONE
    scene_id: str = ""
    product: str = NONE

    @property
    def resource_id(self) -> str:
        return f"stac.item.{self.collection}.{self.item_id}"

    def labels(self) -> dict[str, str]:
        return {
            "prefect.resource.id": self.resource_id,
            "prefect.resource.name": self.item_id,
            "hsi.collection": self.collection,
            "hsi.item_id": self.item_id,
            "hsi.source": self.source,
            "hsi.scene_id": self.scene_id,
            "hsi.product": self.product,
        }


class RelatedResource(_Model):
    """A related resource (e.g. the input item of a product) with its role."""

    resource_id: str
    role: str
    labels: dict[str, str] = Field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        return {**self.labels, "prefect.resource.id": self.resource_id, "prefect.resource.role": self.role}


class EventPayload(_Model):
    """Payload of every hsi event. All keys are always present (empty string when not applicable)."""

    catalog_href: str = ""
    item_href: str = ""
    product_key: str = ""
    uri: str = ""
    bucket: str = ""
    key: str = ""
    version_id: str = ""
    etag: str = ""
    size: int = 0
    reason: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


def raw_object_event_id(bucket: str, key: str, version_id: str | None, etag: str | None) -> uuid.UUID:
    """Deterministic id of the ``hsi.raw.available`` event of one object version.

    A redelivered or duplicated notification of the same object version gets the same id. ``etag``
    is used when the bucket is not versioned; quotes around it are ignored.
    """
    marker = version_id if version_id and version_id != "null" else (etag or "").strip('"')
    if not marker:
        raise ValueError(f"s3://{bucket}/{key}: need a version id or an etag for a deterministic event id")
    return uuid.uuid5(HSI_EVENT_NAMESPACE, f"{bucket}/{key}@{marker}")


def deterministic_event_id(name: str, resource_id: str, discriminator: str = "") -> uuid.UUID:
    """Deterministic id for other events (e.g. ``hsi.product.published`` + product key)."""
    return uuid.uuid5(HSI_EVENT_NAMESPACE, f"{name}|{resource_id}|{discriminator}")


def _iso(ts: datetime | None) -> str:
    ts = ts or datetime.now(UTC)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat()


def build_event(
    name: str,
    resource: EventResource,
    payload: EventPayload | Mapping[str, Any] | None = None,
    *,
    event_id: uuid.UUID | str | None = None,
    occurred: datetime | None = None,
    related: Iterable[RelatedResource] = (),
) -> dict[str, Any]:
    """A Prefect event as a JSON-ready dict: ``id``, ``occurred``, ``event``, ``resource``,
    ``related``, ``payload``. ``event_id`` defaults to a random uuid4 (pass a deterministic one when
    redeliveries must be recognised)."""
    if name not in ALL_EVENTS:
        raise ValueError(f"unknown hsi event name {name!r}; expected one of {', '.join(ALL_EVENTS)}")
    if not isinstance(payload, EventPayload):
        payload = EventPayload.model_validate(dict(payload or {}))
    return {
        "id": str(event_id or uuid.uuid4()),
        "occurred": _iso(occurred),
        "event": name,
        "resource": resource.labels(),
        "related": [r.as_dict() for r in related],
        "payload": payload.model_dump(mode="json"),
    }


def raw_collection(source: str) -> str:
    return f"{source}-raw"


def raw_item_id(source: str, scene_id: str) -> str:
    return f"{source}-{scene_id}"


def raw_available_event(
    *,
    source: str,
    scene_id: str,
    bucket: str,
    key: str,
    version_id: str | None = None,
    etag: str | None = None,
    size: int | None = None,
    occurred: datetime | None = None,
    catalog_href: str = "",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``hsi.raw.available`` for one raw object version (deterministic id, see :func:`raw_object_event_id`)."""
    resource = EventResource(
        collection=raw_collection(source),
        item_id=raw_item_id(source, scene_id),
        source=source,
        scene_id=scene_id,
        product=NONE,
    )
    payload = EventPayload(
        catalog_href=catalog_href,
        uri=f"s3://{bucket}/{key}",
        bucket=bucket,
        key=key,
        version_id=version_id or "",
        etag=(etag or "").strip('"'),
        size=size or 0,
        extra=dict(extra or {}),
    )
    return build_event(
        RAW_AVAILABLE,
        resource,
        payload,
        event_id=raw_object_event_id(bucket, key, version_id, etag),
        occurred=occurred,
    )


def scene_activated_event(
    *,
    source: str,
    scene_id: str,
    collection: str,
    item_id: str,
    catalog_href: str,
    product_key: str = "",
    item_href: str = "",
    uri: str = "",
    size: int = 0,
    checksum: str = "",
    raw_item: tuple[str, str] | None = None,
    occurred: datetime | None = None,
) -> dict[str, Any]:
    """``hsi.scene.activated`` for an activated item; ``raw_item`` = (collection, id) of its input.

    The id is deterministic over the activation key and the cube's checksum: a redelivered event
    is recognised, while a forced re-activation that changed the cube is a new event."""
    resource = EventResource(collection=collection, item_id=item_id, source=source, scene_id=scene_id)
    related = (
        [RelatedResource(resource_id=f"stac.item.{raw_item[0]}.{raw_item[1]}", role="input")]
        if raw_item
        else []
    )
    return build_event(
        SCENE_ACTIVATED,
        resource,
        EventPayload(
            catalog_href=catalog_href, item_href=item_href, product_key=product_key, uri=uri, size=size
        ),
        event_id=deterministic_event_id(
            SCENE_ACTIVATED, resource.resource_id, f"{product_key}:{checksum or uri}"
        ),
        occurred=occurred,
        related=related,
    )


def product_published_event(
    *,
    source: str,
    scene_id: str,
    product: str,
    collection: str,
    item_id: str,
    catalog_href: str,
    product_key: str,
    item_href: str = "",
    uri: str = "",
    inputs: Iterable[tuple[str, str]] = (),
    occurred: datetime | None = None,
) -> dict[str, Any]:
    """``hsi.product.published``; the id is deterministic over the product key."""
    resource = EventResource(
        collection=collection, item_id=item_id, source=source, scene_id=scene_id, product=product
    )
    related = [RelatedResource(resource_id=f"stac.item.{c}.{i}", role="input") for c, i in inputs]
    return build_event(
        PRODUCT_PUBLISHED,
        resource,
        EventPayload(catalog_href=catalog_href, item_href=item_href, product_key=product_key, uri=uri),
        event_id=deterministic_event_id(PRODUCT_PUBLISHED, resource.resource_id, product_key),
        occurred=occurred,
        related=related,
    )


def stage_outcome_event(
    stage: str,
    outcome: str,
    *,
    resource: EventResource,
    reason: str,
    payload: Mapping[str, Any] | None = None,
    occurred: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """``hsi.<stage>.skipped`` / ``hsi.<stage>.failed`` with the reason in the payload."""
    body = {**dict(payload or {}), "reason": reason}
    return build_event(stage_event(stage, outcome), resource, body, event_id=event_id, occurred=occurred)
