"""Reverse lineage on the static catalog: ``derived`` finds the items that record an item as input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pystac

from hsi.catalog import open_catalog
from hsi.catalog.base import derives_from
from hsi.stac.items import collection_for


def _item(cid: str, iid: str, inputs: list[dict[str, str]] | None = None) -> pystac.Item:
    geom = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    props = {"hsi:inputs": inputs} if inputs else {}
    return pystac.Item(iid, geom, [0, 0, 1, 1], datetime(2024, 1, 1, tzinfo=UTC), props, collection=cid)


def test_static_derived_across_collections(tmp_path: Path) -> None:
    cat = open_catalog(str(tmp_path / "catalog"))
    for cid in ("aviris-ng-raw", "aviris-ng-l2", "hsi-index-ndvi"):
        cat.ensure_collection(collection_for(cid))
    raw = {"collection": "aviris-ng-raw", "id": "aviris-ng-x"}
    act = {"collection": "aviris-ng-l2", "id": "aviris-ng-x"}
    cat.upsert_item(_item("aviris-ng-raw", "aviris-ng-x"))
    cat.upsert_item(_item("aviris-ng-l2", "aviris-ng-x", [raw]))
    cat.upsert_item(_item("hsi-index-ndvi", "aviris-ng-x-index-ndvi", [act]))
    assert [(i.collection_id, i.id) for i in cat.derived("aviris-ng-raw", "aviris-ng-x")] == [
        ("aviris-ng-l2", "aviris-ng-x")
    ]
    assert [(i.collection_id, i.id) for i in cat.derived("aviris-ng-l2", "aviris-ng-x")] == [
        ("hsi-index-ndvi", "aviris-ng-x-index-ndvi")
    ]
    assert list(cat.derived("hsi-index-ndvi", "aviris-ng-x-index-ndvi")) == []
    item = next(cat.search(ids=["aviris-ng-x-index-ndvi"]))
    assert derives_from(item, "aviris-ng-l2", "aviris-ng-x") and not derives_from(
        item, "aviris-ng-raw", "aviris-ng-x"
    )
