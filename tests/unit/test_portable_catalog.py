"""A finished static catalog is self-contained and complete (issue 12, must-show 4).

The published tree (catalog + assets) is copied elsewhere, the original deleted, and the copy
validated offline with pystac ``validate_all`` (vendored extension schemas): every href resolves,
extents are real, summaries and item_assets are there; a raw item from a .tar.gz is valid.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pystac
import pytest
import yaml

import hsi
from hsi import activation as act
from hsi.catalog.static import StaticCatalog
from hsi.demo import build_demo
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.collections import PLACEHOLDER_BBOX
from hsi.stac.validation import use_offline_schemas


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("portable")
    pub = root / "published"
    cfg = {
        "storage": {"root": str(pub / "assets")},
        "catalog": {"url": str(pub / "catalog")},
        "work_dir": str(root / "work"),
    }
    (root / "hsi.yaml").write_text(yaml.safe_dump(cfg))
    svc = Services.from_config(root / "hsi.yaml")
    out = build_demo(svc, width=40, height=56, products=("index:NDVI", "oil-spill"))
    tar = synthesize(
        root / "raw-tar", source="aviris-ng", level="l2", width=16, height=16, archive="tar.gz", seed=3
    )
    act.index_scene(svc, str(tar))
    dest = root / "elsewhere" / "copy"
    shutil.copytree(pub, dest)
    shutil.rmtree(pub)
    return {"dest": dest, "id": out["item_id"], "tar": tar}


def test_copied_catalog_validates_offline_and_every_href_resolves(moved) -> None:
    use_offline_schemas()
    cat = pystac.Catalog.from_file(str(moved["dest"] / "catalog" / "catalog.json"))
    assert cat.validate_all() > 0
    items = list(cat.get_items(recursive=True))
    assert len(items) >= 5  # raw, tar.gz raw, activated, 2 products
    for item in items:
        assert item.validate()
        for key, a in item.assets.items():
            if item.collection_id == "aviris-ng-raw":
                continue  # raw scene files are the user's, not the catalog's
            assert not Path(a.href).is_absolute(), f"{item.id}/{key}: {a.href}"
            assert Path(a.get_absolute_href()).is_file(), f"{item.id}/{key}"
        for lk in item.links:
            if lk.rel == "derived_from":
                assert not Path(lk.href).is_absolute()
                assert Path(lk.get_absolute_href()).is_file()
    text = "\n".join(p.read_text() for p in (moved["dest"] / "catalog").rglob("*.json"))
    assert str(moved["dest"].parent.parent / "published") not in text  # no path of the old place


def test_collections_have_real_extents_summaries_and_item_assets(moved) -> None:
    base = moved["dest"] / "catalog"
    l2 = json.loads((base / "aviris-ng-l2" / "collection.json").read_text())
    bbox = l2["extent"]["spatial"]["bbox"][0]
    assert bbox != PLACEHOLDER_BBOX and -119 < bbox[0] < bbox[2] < -117
    assert all(l2["extent"]["temporal"]["interval"][0])
    s = l2["summaries"]
    assert s["instruments"] == ["aviris-ng"]
    assert s["gsd"]["minimum"] > 0
    assert 370 < s["hsi:wavelength_min"]["minimum"] < 400 and 2490 < s["hsi:wavelength_max"]["maximum"] < 2510
    assert {"cube", "rgb", "thumbnail"} <= set(l2["item_assets"])
    assert l2["item_assets"]["cube"]["roles"] == ["data"]
    oil = json.loads((base / "hsi-oil-spill" / "collection.json").read_text())
    assert {"value": 1, "name": "oil"} in oil["summaries"]["hsi:classes"]


def test_tar_gz_raw_item_is_valid(moved) -> None:
    use_offline_schemas()
    cat = StaticCatalog(str(moved["dest"] / "catalog"))
    raws = list(cat.search(collections=["aviris-ng-raw"]))
    tar_items = [it for it in raws if "archive" in it.assets]
    assert tar_items
    for it in tar_items:
        it.validate()  # eo is declared only with eo:* fields present


def test_open_item_on_the_moved_catalog_and_wavelength_filter(moved) -> None:
    cat = StaticCatalog(str(moved["dest"] / "catalog"))
    cube = hsi.open_item(moved["id"], catalog=cat)
    assert cube.sizes["wavelength"] == 425 and float(cube.isel(wavelength=60).mean()) > 0
    swir = {"op": ">=", "args": [{"property": "hsi:wavelength_max"}, 2400]}
    found = {it.id for it in cat.search(collections=["aviris-ng-l2", "hsi-index-ndvi"], filter=swir)}
    assert found == {moved["id"]}  # NDVI reads only red + NIR


def test_search_leaves_out_the_excluded_fields(moved) -> None:
    """What the batch's chunk tasks ask for: the activated items without the cube's band list."""
    cat = StaticCatalog(str(moved["dest"] / "catalog"))
    full = next(cat.search(collections=["aviris-ng-l2"], ids=[moved["id"]]))
    light = next(
        cat.search(collections=["aviris-ng-l2"], ids=[moved["id"]], exclude=["assets.cube.bands", "x.y"])
    )
    assert len(full.assets["cube"].extra_fields["bands"]) == 425
    assert "bands" not in light.assets["cube"].extra_fields
    assert (
        light.assets["cube"].extra_fields["file:checksum"]
        == full.assets["cube"].extra_fields["file:checksum"]
    )
    assert light.properties == full.properties and light.assets.keys() == full.assets.keys()
