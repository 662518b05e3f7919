"""Backfill: the raw objects already in a bucket -> ``hsi.raw.available`` events, as the bridge would
have emitted them, for the scenes not done yet.

:func:`scan` classifies a listing with the bridge's rules (:func:`hsi.bridge.classify_key`: ENVI data
objects whose header is present, archives; headers, sidecars and unknown keys are skipped with the
reason) and builds one event per scene object. The event id is the bridge's (``<bucket>/<key>@<version
or etag>``), so an object the bridge already announced is recognised by the Prefect API, and a second
backfill posts nothing for it. :func:`is_done` says whether a scene needs no event at all: its raw
item, its activated item and the configured products of its source are in the catalog.
Pure: no Prefect, no boto3 (the caller lists and posts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hsi.bridge import SourceRule, classify_key, glob_to_regex
from hsi.events import raw_available_event
from hsi.services import Services
from hsi.stac.product import product_collection, product_item_id

__all__ = ["Listed", "Scan", "SceneObject", "is_done", "scan", "split_s3"]


@dataclass(frozen=True)
class Listed:
    """One object of a listing."""

    key: str
    size: int = 0
    etag: str | None = None
    version_id: str | None = None
    last_modified: datetime | None = None


@dataclass(frozen=True)
class SceneObject:
    source: str
    scene_id: str
    key: str  # the data object or archive
    event: dict[str, Any]

    @property
    def item_id(self) -> str:
        return f"{self.source}-{self.scene_id}"


@dataclass
class Scan:
    listed: int = 0
    scenes: list[SceneObject] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``s3://bucket[/prefix]``; ValueError otherwise."""
    m = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not m:
        raise ValueError(f"{uri!r} is not an s3://bucket[/prefix] URI")
    return m.group(1), m.group(2)


def scan(
    bucket: str,
    listing: Iterable[Listed],
    rules: Sequence[SourceRule],
    *,
    pattern: str | None = None,
    since: datetime | None = None,
    catalog_href: str = "",
) -> Scan:
    """One event per scene object of ``listing`` (optionally only keys matching the glob ``pattern``
    and objects modified at or after ``since``), in key order."""
    objs = sorted(listing, key=lambda o: o.key)
    keys = {o.key for o in objs}
    rx = glob_to_regex(pattern) if pattern else None
    out = Scan(listed=len(objs))
    seen: set[str] = set()
    for o in objs:
        if rx is not None and not rx.match(o.key):
            out.skipped.append((o.key, f"does not match --pattern {pattern}"))
            continue
        if since is not None and o.last_modified is not None and _aware(o.last_modified) < since:
            out.skipped.append((o.key, f"modified before {since.isoformat()}"))
            continue
        c = classify_key(o.key, rules)
        if c.kind in ("ignored", "header"):
            out.skipped.append((o.key, c.reason or "an ENVI header (its data object emits)"))
            continue
        if c.kind == "data" and c.header_key not in keys:
            out.skipped.append((o.key, f"ENVI data without its header {c.header_key}"))
            continue
        if (c.source, c.scene_id) in seen:
            out.skipped.append(
                (o.key, f"scene {c.source}-{c.scene_id} already has an object in this listing")
            )
            continue
        if not (o.version_id or o.etag):
            out.skipped.append((o.key, "no version id or etag in the listing"))
            continue
        seen.add((c.source, c.scene_id))  # type: ignore[arg-type]
        event = raw_available_event(
            source=c.source, scene_id=c.scene_id, bucket=bucket, key=c.data_key, version_id=o.version_id,
            etag=o.etag, size=o.size, occurred=o.last_modified, catalog_href=catalog_href,
            extra={"kind": "archive" if c.kind == "archive" else "envi", "header_key": c.header_key,
                   "notified_key": o.key, "notification": "backfill"},
        )  # fmt: skip
        out.scenes.append(SceneObject(c.source, c.scene_id, c.data_key, event))
    return out


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def is_done(services: Services, scene: SceneObject) -> str | None:
    """Why the scene needs nothing (its raw, activated and configured product items exist), else None."""
    cat = services.catalog
    raw = cat.get_item(f"{scene.source}-raw", scene.item_id)
    if raw is None:
        return None
    sc = services.config.sources.get(scene.source)
    if sc is not None and not sc.activate:
        return f"{scene.item_id} is indexed (sources.{scene.source}.activate is false)"
    level = raw.properties.get("hsi:level", "l1b")
    if cat.get_item(f"{scene.source}-{level}", scene.item_id) is None:
        return None
    for p in sc.products if sc is not None else []:
        if cat.get_item(product_collection(p.product), product_item_id(scene.item_id, p.product)) is None:
            return None
    return f"{scene.item_id} is activated with its products"
