"""Lineage from the catalog alone: what an item was made from (up) and what was made from it (down).

Up follows each item's recorded inputs (``hsi:inputs``, the same items its ``derived_from`` links
point at). Down needs the reverse index, which the catalog does not store; it is rebuilt from the
id convention: every item derived from ``X`` has an id that starts with ``X``'s id (raw and activated
items share ``<source>-<scene id>``, products are ``<activated id>-<product>``, clips
``<product id>-<aoi>``). One id-prefix search (``like`` in CQL2 on a STAC API, file names on a static
catalog) returns the candidates; an edge is kept only when the child's ``hsi:inputs`` names the parent.
Both backends therefore give the same graph for the same items.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pystac

from hsi.catalog.base import Catalog
from hsi.errors import InvalidInputError, ItemNotFoundError

__all__ = ["Lineage", "NodeRef", "downstream", "find_item", "inputs_of", "lineage", "upstream"]

NodeRef = tuple[str, str]  # (collection, item id)


def ref_str(ref: NodeRef) -> str:
    return f"{ref[0]}/{ref[1]}"


def inputs_of(item: pystac.Item) -> list[NodeRef]:
    """The (collection, id) of every input an item records (``hsi:inputs``; else ``derived_from`` titles)."""
    recorded = item.properties.get("hsi:inputs")
    if isinstance(recorded, list):
        return [(str(i["collection"]), str(i["id"])) for i in recorded if isinstance(i, dict) and "id" in i]
    out = []
    for lk in item.links:
        if lk.rel == "derived_from" and lk.title and "/" in lk.title:
            c, _, i = lk.title.partition("/")
            out.append((c, i))
    return out


def _kind(item: pystac.Item) -> str:
    p = item.properties
    algo = (p.get("hsi:algorithm") or {}).get("name", "")
    if algo == "hsi.activate":
        return "activated"
    if algo == "hsi.clip":
        return "clip"
    return "product" if p.get("hsi:inputs") else "raw"


@dataclass
class Lineage:
    """Nodes (``collection/id`` -> summary) and edges (parent -> child) around ``root``."""

    root: NodeRef
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)

    def add(self, item: pystac.Item) -> str:
        ref = (item.collection_id or "", item.id)
        key = ref_str(ref)
        if key not in self.nodes:
            p = item.properties
            self.nodes[key] = {
                "collection": ref[0],
                "id": ref[1],
                "kind": _kind(item),
                "product_key": p.get("hsi:product_key", ""),
                "version": p.get("processing:version") or p.get("hsi:algorithm", {}).get("version", ""),
                "processed": p.get("processing:datetime", ""),
            }
        return key

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": ref_str(self.root),
            "nodes": [self.nodes[k] for k in sorted(self.nodes)],
            "edges": [{"from": a, "to": b} for a, b in sorted(self.edges)],
        }

    def children(self, key: str) -> list[str]:
        return sorted(b for a, b in self.edges if a == key)

    def parents(self, key: str) -> list[str]:
        return sorted(a for a, b in self.edges if b == key)


def find_item(catalog: Catalog, ref: str) -> pystac.Item:
    """The item named ``collection/id`` or a bare id (searched in every collection; must be unique)."""
    if "/" in ref:
        c, _, i = ref.partition("/")
        item = catalog.get_item(c, i)
        if item is None:
            raise ItemNotFoundError(c, i, catalog.href)
        return item
    found = list(catalog.search(ids=[ref]))
    if not found:
        raise ItemNotFoundError("any collection", ref, catalog.href)
    if len(found) > 1:
        where = ", ".join(sorted(f"{i.collection_id}/{i.id}" for i in found))
        raise InvalidInputError(f"item id {ref} is in several collections ({where}); give COLLECTION/ID")
    return found[0]


def upstream(catalog: Catalog, item: pystac.Item, graph: Lineage | None = None) -> Lineage:
    """Everything ``item`` was made from, transitively (missing inputs are nodes of kind ``missing``)."""
    g = graph or Lineage((item.collection_id or "", item.id))
    todo = [item]
    seen: set[str] = set()
    while todo:
        cur = todo.pop()
        key = g.add(cur)
        if key in seen:
            continue
        seen.add(key)
        for c, i in inputs_of(cur):
            parent = catalog.get_item(c, i)
            pkey = ref_str((c, i))
            if parent is None:
                g.nodes.setdefault(pkey, {"collection": c, "id": i, "kind": "missing", "product_key": "",
                                          "version": "", "processed": ""})  # fmt: skip
            else:
                g.add(parent)
                todo.append(parent)
            g.edges.add((pkey, key))
    return g


def _candidates(catalog: Catalog, prefix: str) -> Iterator[pystac.Item]:
    by_prefix = getattr(catalog, "search_id_prefix", None)
    if by_prefix is not None:
        yield from by_prefix(prefix)
        return
    yield from (i for i in catalog.search() if i.id.startswith(prefix))  # pragma: no cover - other backends


def downstream(catalog: Catalog, item: pystac.Item, graph: Lineage | None = None) -> Lineage:
    """Everything made from ``item``, transitively (one id-prefix search, edges from ``hsi:inputs``)."""
    g = graph or Lineage((item.collection_id or "", item.id))
    root = g.add(item)
    by_key: dict[str, pystac.Item] = {root: item}
    for cand in _candidates(catalog, item.id):
        by_key.setdefault(ref_str((cand.collection_id or "", cand.id)), cand)
    parents: dict[str, list[str]] = {k: [ref_str(r) for r in inputs_of(i)] for k, i in by_key.items()}
    reached, todo = {root}, [root]
    while todo:
        cur = todo.pop()
        for k, ps in sorted(parents.items()):
            if cur in ps:
                g.add(by_key[k])
                g.edges.add((cur, k))
                if k not in reached:
                    reached.add(k)
                    todo.append(k)
    return g


def lineage(catalog: Catalog, ref: str, direction: Literal["up", "down", "both"] = "both") -> Lineage:
    """The lineage graph of the item ``ref`` (``collection/id`` or a unique id)."""
    item = find_item(catalog, ref)
    g = Lineage((item.collection_id or "", item.id))
    if direction in ("up", "both"):
        upstream(catalog, item, g)
    if direction in ("down", "both"):
        downstream(catalog, item, g)
    return g


def descendants(catalog: Catalog, item: pystac.Item) -> list[pystac.Item]:
    """The items derived from ``item`` (transitively), read from the catalog, parents before children."""
    g = downstream(catalog, item)
    order: list[str] = []
    root = ref_str((item.collection_id or "", item.id))
    frontier: Iterable[str] = g.children(root)
    while frontier:
        nxt: list[str] = []
        for k in frontier:
            if k not in order:
                order.append(k)
                nxt.extend(g.children(k))
        frontier = nxt
    out = []
    for k in order:
        c, _, i = k.partition("/")
        found = catalog.get_item(c, i)
        if found is not None:
            out.append(found)
    return out
