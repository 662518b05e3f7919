"""A static STAC catalog on local disk or S3 (the embedded default).

Layout (pystac's best-practice layout, readable by any STAC tool)::

    <root>/catalog.json
    <root>/<collection>/collection.json
    <root>/<collection>/<item id>/<item id>.json

Item files are the source of truth: an upsert writes the item file atomically (temp + rename
on disk, a single PUT on S3), which is the commit point. Collection ``item`` links are then
refreshed under a lock (on disk) so crawlers find the items; search lists item files directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac

from hsi.catalog.base import BBox, DatetimeRange, derives_from
from hsi.errors import CatalogError
from hsi.faults import fault_point
from hsi.stac.items import collection_for
from hsi.storage import ObjectStore, open_store

__all__ = ["StaticCatalog"]

log = logging.getLogger(__name__)


def _dt(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)


class StaticCatalog:
    """Static catalog rooted at a directory or an ``s3://`` prefix."""

    def __init__(self, root: str, *, store: ObjectStore | None = None, title: str = "hsi-pipeline") -> None:
        self.store = store or open_store(root)
        self._root = self.store.root
        self.title = title

    @property
    def href(self) -> str:
        return self.store.uri("catalog.json")

    def __repr__(self) -> str:
        return f"StaticCatalog({self._root!r})"

    # -- paths ----------------------------------------------------------------------------------
    def _collection_uri(self, cid: str) -> str:
        return self.store.uri(cid, "collection.json")

    def item_href(self, collection_id: str, item_id: str) -> str:
        return self.store.uri(collection_id, item_id, f"{item_id}.json")

    # -- helpers --------------------------------------------------------------------------------
    def _read_json(self, uri: str) -> dict[str, Any] | None:
        try:
            data = self.store.get_bytes(uri)
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as e:
            raise CatalogError(uri, f"malformed JSON: {e}") from e
        if not isinstance(doc, dict):
            raise CatalogError(uri, "malformed STAC document: not a JSON object")
        return doc

    def _write_json(self, uri: str, doc: dict[str, Any]) -> None:
        self.store.put_bytes(json.dumps(doc, indent=2).encode(), uri, content_type="application/json")

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        root = Path(self._root)
        if "://" in self._root or not root.exists():
            yield  # object stores: last writer wins on the (derived) link lists
            return
        lock = root / f".{name}.lock"
        with open(lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _ensure_root(self) -> None:
        if self._read_json(self.href) is None:
            cat = pystac.Catalog(
                id="hsi-pipeline", description="hsi-pipeline static catalog", title=self.title
            )
            doc = cat.to_dict(include_self_link=False, transform_hrefs=False)
            doc["links"] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
            self._write_json(self.href, doc)

    # -- Catalog protocol -----------------------------------------------------------------------
    def ensure_collection(self, collection: pystac.Collection) -> None:
        Path(self._root).mkdir(parents=True, exist_ok=True) if "://" not in self._root else None
        with self._lock("catalog"):
            self._ensure_root()
            uri = self._collection_uri(collection.id)
            if self._read_json(uri) is not None:
                return
            doc = collection.to_dict(include_self_link=False, transform_hrefs=False)
            doc["links"] = [
                {"rel": "root", "href": "../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            ]
            self._write_json(uri, doc)
            root = self._read_json(self.href) or {}
            links = root.setdefault("links", [])
            href = f"./{collection.id}/collection.json"
            if not any(lk.get("rel") == "child" and lk.get("href") == href for lk in links):
                links.append(
                    {"rel": "child", "href": href, "type": "application/json", "title": collection.id}
                )
                self._write_json(self.href, root)

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        uri = self.item_href(collection_id, item_id)
        doc = self._read_json(uri)
        if doc is None:
            return None
        return _item(doc, uri)

    def upsert_item(self, item: pystac.Item) -> None:
        cid = item.collection_id
        if not cid:
            raise CatalogError(self.href, f"item {item.id} has no collection id")
        if self._read_json(self._collection_uri(cid)) is None:
            self.ensure_collection(collection_for(cid))
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        keep = [
            lk for lk in doc.get("links", []) if lk.get("rel") not in ("root", "parent", "collection", "self")
        ]
        doc["links"] = [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
            *keep,
        ]
        doc["collection"] = cid
        self._write_json(self.item_href(cid, item.id), doc)  # the commit point
        fault_point("mid-register")
        self._link_item(cid, item.id, add=True)

    def ensure_linked(self, collection_id: str, item_id: str) -> None:
        """Add the collection's link to an existing item if a crash after its commit left it out."""
        col = self._read_json(self._collection_uri(collection_id))
        href = f"./{item_id}/{item_id}.json"
        if col is not None and not any(
            lk.get("rel") == "item" and lk.get("href") == href for lk in col.get("links", [])
        ):
            self._link_item(collection_id, item_id, add=True)

    def _link_item(self, cid: str, item_id: str, *, add: bool) -> None:
        with self._lock(f"collection-{cid}"):
            uri = self._collection_uri(cid)
            col = self._read_json(uri)
            if col is None:
                return
            href = f"./{item_id}/{item_id}.json"
            links = [
                lk for lk in col.get("links", []) if not (lk.get("rel") == "item" and lk.get("href") == href)
            ]
            if add:
                links.append({"rel": "item", "href": href, "type": "application/geo+json"})
            if links != col.get("links"):
                col["links"] = links
                self._write_json(uri, col)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        existed = self.store.delete(self.item_href(collection_id, item_id))
        self._link_item(collection_id, item_id, add=False)
        return existed

    def collections(self) -> list[str]:
        root = self._read_json(self.href) or {}
        return sorted(
            lk["href"].strip("./").split("/")[0] for lk in root.get("links", []) if lk.get("rel") == "child"
        )

    def search(
        self,
        *,
        collections: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        bbox: BBox | None = None,
        datetime_range: DatetimeRange | None = None,
        limit: int | None = None,
    ) -> Iterator[pystac.Item]:
        n = 0
        for cid in collections or self.collections():
            for uri in self.store.list(self.store.uri(cid)):
                if not uri.endswith(".json") or uri.endswith("collection.json"):
                    continue
                item_id = uri.rsplit("/", 1)[-1][: -len(".json")]
                if ids is not None and item_id not in ids:
                    continue
                doc = self._read_json(uri)
                if doc is None or doc.get("type") != "Feature":
                    continue
                if bbox is not None and not _bbox_intersects(doc.get("bbox"), bbox):
                    continue
                if datetime_range is not None and not _in_range(doc.get("properties", {}), datetime_range):
                    continue
                yield _item(doc, uri)
                n += 1
                if limit is not None and n >= limit:
                    return

    def derived(self, collection_id: str, item_id: str) -> Iterator[pystac.Item]:
        """Every item of the catalog that records this one as an input (a full scan)."""
        for item in self.search():
            if derives_from(item, collection_id, item_id):
                yield item


def _item(doc: dict[str, Any], uri: str) -> pystac.Item:
    """An item read from ``uri`` with absolute link hrefs and a self link (usable anywhere)."""
    base = uri.rsplit("/", 1)[0]
    links = []
    for lk in doc.get("links", []):
        href = lk.get("href", "")
        if href and "://" not in href and not href.startswith("/"):
            parts = base.split("/")
            for seg in href.split("/"):
                if seg == "..":
                    parts.pop()
                elif seg not in (".", ""):
                    parts.append(seg)
            lk = {**lk, "href": "/".join(parts)}
        links.append(lk)
    links = [lk for lk in links if lk.get("rel") != "self"]
    links.append({"rel": "self", "href": uri, "type": "application/geo+json"})
    return pystac.Item.from_dict({**doc, "links": links}, preserve_dict=False)


def _bbox_intersects(item_bbox: Sequence[float] | None, q: BBox) -> bool:
    if not item_bbox:
        return False
    x0, y0, x1, y1 = item_bbox[0], item_bbox[1], item_bbox[-2], item_bbox[-1]
    return not (x1 < q[0] or x0 > q[2] or y1 < q[1] or y0 > q[3])


def _in_range(props: dict[str, Any], rng: DatetimeRange) -> bool:
    start = _dt(props.get("start_datetime")) or _dt(props.get("datetime"))
    end = _dt(props.get("end_datetime")) or _dt(props.get("datetime"))
    if start is None or end is None:
        return False
    lo, hi = rng
    if lo is not None and _aware(end) < _aware(lo):
        return False
    return not (hi is not None and _aware(start) > _aware(hi))
