"""A static STAC catalog on local disk or S3 (the embedded default).

Layout (pystac's best-practice layout, readable by any STAC tool)::

    <root>/catalog.json
    <root>/<collection>/collection.json
    <root>/<collection>/<item id>/<item id>.json

The catalog is relocatable: every href it owns is relative (links, ``derived_from`` links to items
of this catalog, and assets stored on the same file system / bucket, e.g. ``../../../assets/...``),
so the published tree (catalog + assets) can be moved, zipped or served as it is. Readers get
absolute hrefs back (:meth:`get_item`, :meth:`search`). Collections keep their extent, summaries
and ``item_assets`` current (:func:`hsi.stac.collections.merge_item`). Lock files live next to the
catalog root (``.<root name>.locks/``), never inside the published tree.

Item files are the source of truth: an upsert writes the item file atomically (temp + rename
on disk, a single PUT on S3), which is the commit point. Collection ``item`` links are then
refreshed under a lock (on disk) so crawlers find the items; search lists item files directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac

from hsi.catalog.base import BBox, DatetimeRange, derives_from, item_key
from hsi.errors import CatalogError, InvalidInputError
from hsi.faults import fault_point
from hsi.stac.collections import merge_item
from hsi.stac.items import collection_for
from hsi.storage import ObjectStore, open_store
from hsi.storage.local import make_dirs

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

    def __init__(
        self,
        root: str,
        *,
        store: ObjectStore | None = None,
        title: str = "hsi-pipeline",
        asset_roots: Sequence[str] = (),
    ) -> None:
        """``asset_roots``: where the pipeline stores assets (the configured storage root); asset
        hrefs below them (or below the catalog) are written relative to the item."""
        self.store = store or open_store(root)
        self._root = self.store.root
        self.title = title
        self._owned = tuple(r.rstrip("/") + "/" for r in (self._root, *(_norm(r) for r in asset_roots if r)))

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
        lock_dir = root.parent / f".{root.name}.locks"  # outside the published tree
        make_dirs(lock_dir)
        lock = lock_dir / f"{name}.lock"
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
        make_dirs(Path(self._root)) if "://" not in self._root else None
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
        cid = self._prepare(item)
        doc = self._write_item(cid, item)
        fault_point("mid-register")
        self._link_item(cid, item.id, add=True, item_doc=doc)

    def upsert_items(self, items: Sequence[pystac.Item]) -> dict[str, str]:
        """Write every item file (each its own commit point), then refresh each collection once
        (one lock, one collection write per collection). Failures per ``collection/id``."""
        failed: dict[str, str] = {}
        written: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for item in items:
            try:
                cid = self._prepare(item)
                written.setdefault(cid, []).append((item.id, self._write_item(cid, item)))
            except Exception as e:  # one bad item never stops the others
                failed[item_key(item)] = f"{type(e).__name__}: {e}"[:500]
        fault_point("mid-register")
        for cid, docs in written.items():
            self._link_items(cid, docs)
        return failed

    def _prepare(self, item: pystac.Item) -> str:
        cid = item.collection_id
        if not cid:
            raise CatalogError(self.href, f"item {item.id} has no collection id")
        if self._read_json(self._collection_uri(cid)) is None:
            self.ensure_collection(collection_for(cid))
        return cid

    def _write_item(self, cid: str, item: pystac.Item) -> dict[str, Any]:
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
        href = self.item_href(cid, item.id)
        _relativize(doc, href, self._owned)
        self._write_json(href, doc)  # the commit point
        return doc

    def ensure_linked(self, collection_id: str, item_id: str) -> None:
        """Add the collection's link to an existing item if a crash after its commit left it out."""
        col = self._read_json(self._collection_uri(collection_id))
        href = f"./{item_id}/{item_id}.json"
        if col is not None and not any(
            lk.get("rel") == "item" and lk.get("href") == href for lk in col.get("links", [])
        ):
            doc = self._read_json(self.item_href(collection_id, item_id))
            self._link_item(collection_id, item_id, add=True, item_doc=doc)

    def _link_item(
        self, cid: str, item_id: str, *, add: bool, item_doc: dict[str, Any] | None = None
    ) -> None:
        if add:
            self._link_items(cid, [(item_id, item_doc)])
            return
        with self._lock(f"collection-{cid}"):
            uri = self._collection_uri(cid)
            col = self._read_json(uri)
            if col is None:
                return
            href = f"./{item_id}/{item_id}.json"
            links = [
                lk for lk in col.get("links", []) if not (lk.get("rel") == "item" and lk.get("href") == href)
            ]
            if links != col.get("links", []):
                self._write_json(uri, {**col, "links": links})

    def _link_items(self, cid: str, docs: Sequence[tuple[str, dict[str, Any] | None]]) -> None:
        """Add the collection's ``item`` links of ``docs`` and fold them into its summaries (one write)."""
        with self._lock(f"collection-{cid}"):
            uri = self._collection_uri(cid)
            col = self._read_json(uri)
            if col is None:
                return
            hrefs = {f"./{item_id}/{item_id}.json" for item_id, _ in docs}
            links = [
                lk for lk in col.get("links", []) if not (lk.get("rel") == "item" and lk.get("href") in hrefs)
            ]
            links += [
                {"rel": "item", "href": f"./{item_id}/{item_id}.json", "type": "application/geo+json"}
                for item_id, _ in docs
            ]
            new = dict(col)
            for _, doc in docs:
                if doc is not None:
                    new = merge_item(new, doc)
            new["links"] = links
            if new != col:
                self._write_json(uri, new)

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
        filter: dict[str, Any] | None = None,  # noqa: A002 - the STAC API parameter name
        exclude: Sequence[str] | None = None,
    ) -> Iterator[pystac.Item]:
        """Items matching every criterion; ``filter`` is CQL2-JSON over item properties (the subset
        :func:`_cql2` evaluates: and/or/not, comparisons, isNull); ``exclude``: dotted paths dropped
        from each item after reading (see :meth:`Catalog.search`)."""
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
                if filter is not None and not _cql2(filter, doc):
                    continue
                for path in exclude or ():
                    _drop(doc, path.split("."))
                yield _item(doc, uri)
                n += 1
                if limit is not None and n >= limit:
                    return

    def derived(self, collection_id: str, item_id: str) -> Iterator[pystac.Item]:
        """Every item of the catalog that records this one as an input (a full scan)."""
        for item in self.search():
            if derives_from(item, collection_id, item_id):
                yield item

    def search_id_prefix(self, prefix: str) -> Iterator[pystac.Item]:
        """Items of every collection whose id starts with ``prefix`` (file names first: cheap)."""
        for cid in self.collections():
            for uri in self.store.list(self.store.uri(cid)):
                name = uri.rsplit("/", 1)[-1]
                if not name.endswith(".json") or name == "collection.json" or not name.startswith(prefix):
                    continue
                doc = self._read_json(uri)
                if doc is not None and doc.get("type") == "Feature":
                    yield _item(doc, uri)


def _drop(doc: Any, path: list[str]) -> None:
    """Remove the field at ``path`` (keys) from a JSON document, if it is there."""
    for key in path[:-1]:
        doc = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(doc, dict):
        doc.pop(path[-1], None)


def _absolute(href: str, base: str) -> str:
    if not href or "://" in href or href.startswith("/"):
        return href
    parts = base.split("/")
    for seg in href.split("/"):
        if seg == "..":
            parts.pop()
        elif seg not in (".", ""):
            parts.append(seg)
    return "/".join(parts)


def _relative(href: str, item_uri: str) -> str | None:
    """``href`` relative to the item file when both are on the same file system / bucket."""
    if not href:
        return None
    if item_uri.startswith("s3://"):
        if not href.startswith("s3://"):
            return None
        ib, hb = item_uri[5:].split("/", 1)[0], href[5:].split("/", 1)[0]
        if ib != hb:
            return None
        return posixpath.relpath(href[5:], posixpath.dirname(item_uri[5:]))
    if "://" in href and not href.startswith("file://"):
        return None
    path = href[len("file://") :] if href.startswith("file://") else href
    if not path.startswith("/"):
        return None
    return os.path.relpath(path, os.path.dirname(item_uri))


def _norm(root: str) -> str:
    if "://" in root and not root.startswith("file://"):
        return root
    return str(Path(root.removeprefix("file://")).expanduser().resolve())


def _relativize(doc: dict[str, Any], item_uri: str, owned: tuple[str, ...]) -> None:
    """Make the hrefs the catalog owns relative: assets below ``owned`` roots, links into the catalog."""
    for a in (doc.get("assets") or {}).values():
        href = a.get("href", "")
        if href.removeprefix("file://").startswith(owned):
            rel = _relative(href, item_uri)
            if rel is not None:
                a["href"] = rel
    for lk in doc.get("links") or []:
        href = lk.get("href", "")
        if href.startswith(owned[0]):
            rel = _relative(href, item_uri)
            if rel is not None:
                lk["href"] = rel


def _item(doc: dict[str, Any], uri: str) -> pystac.Item:
    """An item read from ``uri`` with absolute link and asset hrefs and a self link (usable anywhere)."""
    base = uri.rsplit("/", 1)[0]
    links = [{**lk, "href": _absolute(lk.get("href", ""), base)} for lk in doc.get("links", [])]
    links = [lk for lk in links if lk.get("rel") != "self"]
    links.append({"rel": "self", "href": uri, "type": "application/geo+json"})
    assets = {
        k: {**a, "href": _absolute(a.get("href", ""), base)} for k, a in (doc.get("assets") or {}).items()
    }
    return pystac.Item.from_dict({**doc, "links": links, "assets": assets}, preserve_dict=False)


_CMP = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _cql2(expr: Any, doc: dict[str, Any]) -> bool:
    """Evaluate a CQL2-JSON boolean expression over an item document (property comparisons)."""

    def value(arg: Any) -> Any:
        if isinstance(arg, dict) and "property" in arg:
            name = arg["property"]
            return doc.get(name) if name in ("id", "collection") else (doc.get("properties") or {}).get(name)
        return arg

    if not isinstance(expr, dict) or "op" not in expr:
        raise InvalidInputError(f"filter: not a CQL2-JSON expression: {expr!r}")
    op, args = str(expr["op"]).lower(), expr.get("args", [])
    if op == "and":
        return all(_cql2(a, doc) for a in args)
    if op == "or":
        return any(_cql2(a, doc) for a in args)
    if op == "not":
        return not _cql2(args[0], doc)
    if op == "isnull":
        return value(args[0]) is None
    if op in _CMP:
        a, b = value(args[0]), value(args[1])
        if a is None or b is None:
            return False
        try:
            return bool(_CMP[op](a, b))
        except TypeError:
            return False
    raise InvalidInputError(f"filter: CQL2 operator '{expr['op']}' is not supported by static catalogs")


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
