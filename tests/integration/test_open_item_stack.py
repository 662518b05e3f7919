"""open_item through the stack's STAC API + S3, collection summaries there, and spectral-range search
with a CQL2 filter on stac-fastapi-pgstac (issue 12, must-show 5). Real services, no mocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pystac
import pytest

import hsi
from hsi import activation as act
from hsi.demo import activate, make_product
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.items import collection_for


def _scene_id(run_id: str) -> str:
    """A valid, run-unique AVIRIS-NG name (the stack's catalog is shared)."""
    n = int(run_id, 16)
    return f"ang2024{1 + n % 12:02d}{1 + (n >> 4) % 28:02d}t{(n >> 9) % 24:02d}{(n >> 14) % 60:02d}{(n >> 20) % 60:02d}"


@pytest.fixture
def stack_scene(pipeline_config, s3_store, stac_catalog, run_id: str, tmp_path) -> dict[str, Any]:  # noqa: ANN001
    svc = Services.from_config(pipeline_config, store=s3_store, catalog=stac_catalog)
    hdr = synthesize(tmp_path / "raw", width=32, height=40, rotation_deg=20, scene_id=_scene_id(run_id))
    raw = act.index_scene(svc, str(hdr))
    activate(svc, raw.id)
    make_product(svc, raw.id, "index:NDVI")
    yield {"svc": svc, "id": raw.id}
    for cid, iid in (
        ("aviris-ng-raw", raw.id),
        ("aviris-ng-l2", raw.id),
        ("hsi-index-ndvi", f"{raw.id}-index-ndvi"),
    ):
        stac_catalog.delete_item(cid, iid)


def test_open_item_via_stac_api_and_s3(stack_scene, stack_secret_key: str) -> None:
    svc = stack_scene["svc"]
    cube = hsi.open_item(stack_scene["id"], services=svc)
    assert cube.attrs["href"].startswith("s3://") and cube.sizes["wavelength"] == 425
    assert stack_secret_key not in repr(cube.attrs)
    red_nir = cube.sel(wavelength=[660, 860], method="nearest").values  # ranged reads through /vsis3/
    assert red_nir.shape == (2, cube.sizes["y"], cube.sizes["x"])
    assert np.isfinite(red_nir).any() and np.isnan(red_nir).any()  # data and nodata corners
    prod = hsi.open_product(f"{stack_scene['id']}-index-ndvi", services=svc)
    used = {
        b["input"]: b["index"]
        for b in svc.catalog.get_item("hsi-index-ndvi", prod.attrs["item_id"]).properties["hsi:bands_used"]
    }
    ndvi = prod.squeeze("band").values
    r, n = hsi.open_item(stack_scene["id"], services=svc, bands=[used["R"], used["N"]]).values
    want = (n - r) / (n + r)
    ok = np.isfinite(want) & np.isfinite(ndvi)
    assert ok.sum() > 100
    np.testing.assert_allclose(ndvi[ok], want[ok], atol=2e-3)


def test_collection_summaries_kept_current_on_the_api(stack_scene, stac_catalog) -> None:
    col = stac_catalog.get_collection("aviris-ng-l2")
    assert col is not None
    s = col.summaries.to_dict()
    assert "aviris-ng" in s["instruments"]
    assert s["hsi:wavelength_max"]["maximum"] > 2400
    assert "cube" in col.extra_fields["item_assets"]
    item = stac_catalog.get_item("aviris-ng-l2", stack_scene["id"])
    bbox = col.extent.spatial.bboxes[0]
    assert bbox[0] <= item.bbox[0] and bbox[2] >= item.bbox[2]


def test_wavelength_range_cql2_filter_returns_exactly_the_matching_items(stac_catalog, run_id: str) -> None:
    cid = f"test-wl-{run_id}"
    stac_catalog.ensure_collection(collection_for(cid, "wavelength filter test"))
    ranges = {
        "vnir": (400.0, 1000.0),
        "swir": (950.0, 2500.0),
        "full": (380.0, 2510.0),
        "vis": (420.0, 700.0),
    }
    for name, (lo, hi) in ranges.items():
        item = pystac.Item(
            f"{cid}-{name}",
            {"type": "Point", "coordinates": [10.0, 45.0]},
            [10.0, 45.0, 10.0, 45.0],
            datetime(2024, 1, 2, tzinfo=UTC),
            {"hsi:wavelength_min": lo, "hsi:wavelength_max": hi},
            collection=cid,
        )
        stac_catalog.upsert_item(item)
    try:

        def found(expr: dict[str, Any]) -> set[str]:
            return {it.id.rsplit("-", 1)[-1] for it in stac_catalog.search(collections=[cid], filter=expr)}

        def covers(lo: float, hi: float) -> dict[str, Any]:
            return {
                "op": "and",
                "args": [
                    {"op": "<=", "args": [{"property": "hsi:wavelength_min"}, lo]},
                    {"op": ">=", "args": [{"property": "hsi:wavelength_max"}, hi]},
                ],
            }

        assert found(covers(650, 870)) == {"vnir", "full"}  # red + NIR
        assert found(covers(2100, 2400)) == {"swir", "full"}
        assert found(covers(400, 2500)) == {"full"}
        assert found({"op": "<", "args": [{"property": "hsi:wavelength_max"}, 800]}) == {"vis"}
        col = stac_catalog.get_collection(cid)
        assert col.summaries.to_dict()["hsi:wavelength_min"] == {"minimum": 380.0, "maximum": 950.0}
    finally:
        for name in ranges:
            stac_catalog.delete_item(cid, f"{cid}-{name}")
