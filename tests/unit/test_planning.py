"""On-demand planning over a static catalog built in tmp_path: AOI/time/source filters, activation state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pystac
import pytest

from hsi import activation as act
from hsi.cog import CogProfile
from hsi.errors import InvalidInputError, ProductError
from hsi.planning import (
    Outcome,
    aoi_from,
    find_scenes,
    geometries_intersect,
    load_aoi,
    overall_status,
    plan_request,
    product_requests,
    summarize,
    time_range,
)
from hsi.services import Services
from hsi.storage import file_checksum


def _box(w, s, e, n):
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _raw(tmp_path, source, scene, when, geom, bbox):
    data = tmp_path / "raw" / f"{scene}.img"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(scene.encode() * 10)
    item = pystac.Item(
        id=f"{source}-{scene}",
        geometry=geom,
        bbox=list(bbox),
        datetime=when,
        properties={"hsi:source": source, "hsi:level": "l2", "hsi:scene_id": scene},
        collection=f"{source}-raw",
    )
    item.add_asset(
        "data",
        pystac.Asset(
            str(data), extra_fields={"file:size": data.stat().st_size, "file:checksum": file_checksum(data)}
        ),
    )
    return item


def _activate(svc, tmp_path, raw, *, key=None):
    cube = tmp_path / "assets" / f"{raw.id}.tif"
    cube.parent.mkdir(parents=True, exist_ok=True)
    cube.write_bytes(b"cog" * 100)
    item = pystac.Item(
        id=raw.id,
        geometry=raw.geometry,
        bbox=raw.bbox,
        datetime=raw.datetime,
        properties={"hsi:product_key": key or act.activation_key(svc, raw, CogProfile())[0]},
        collection=act.activated_collection(raw),
    )
    item.add_asset("cube", pystac.Asset(str(cube), extra_fields={"file:size": cube.stat().st_size}))
    svc.catalog.upsert_item(item)


@pytest.fixture
def svc(tmp_path, config_file):
    svc = Services.from_config(str(config_file))
    jan, jun = datetime(2024, 1, 10, tzinfo=UTC), datetime(2024, 6, 1, 12, tzinfo=UTC)
    # a: activated and up to date; b: not activated; c: activated but stale; d: other source
    a = _raw(tmp_path, "aviris-ng", "ang20240110t000000", jan, _box(10, 10, 11, 11), (10, 10, 11, 11))
    b = _raw(
        tmp_path,
        "aviris-ng",
        "ang20240601t120000",
        jun,
        _box(10.5, 10.5, 11.5, 11.5),
        (10.5, 10.5, 11.5, 11.5),
    )
    c = _raw(
        tmp_path,
        "aviris-ng",
        "ang20241231t230000",
        datetime(2024, 12, 31, 23, tzinfo=UTC),
        _box(10, 10, 11, 11),
        (10, 10, 11, 11),
    )
    d = _raw(tmp_path, "aviris-classic", "f240110t01p00r01", jan, _box(10, 10, 11, 11), (10, 10, 11, 11))
    # e: a thin diagonal strip whose bbox covers the AOI corner but whose footprint does not
    strip = {
        "type": "Polygon",
        "coordinates": [[[12, 12], [12.2, 12], [14, 13.8], [14, 14], [13.8, 14], [12, 12.2], [12, 12]]],
    }
    e = _raw(tmp_path, "aviris-ng", "ang20240110t010000", jan, strip, (12, 12, 14, 14))
    for it in (a, b, c, d, e):
        svc.catalog.upsert_item(it)
    _activate(svc, tmp_path, a)
    _activate(svc, tmp_path, c, key="0" * 64)
    return svc


def ids(items):
    return [i.id for i in items]


def test_aoi_and_time_filters(svc):
    aoi = aoi_from(bbox=[10.2, 10.2, 10.4, 10.4])
    # sorted by (datetime, collection, id)
    assert ids(find_scenes(svc.catalog, aoi)) == [
        "aviris-classic-f240110t01p00r01",
        "aviris-ng-ang20240110t000000",
        "aviris-ng-ang20241231t230000",
    ]
    aoi2 = aoi_from(bbox=[10.2, 10.2, 10.8, 10.8])
    assert len(find_scenes(svc.catalog, aoi2)) == 4
    # the whole last day is inside a date-only end
    got = find_scenes(svc.catalog, aoi2, time_range("2024-06-01", "2024-12-31"))
    assert ids(got) == ["aviris-ng-ang20240601t120000", "aviris-ng-ang20241231t230000"]
    assert ids(find_scenes(svc.catalog, aoi2, time_range(None, "2024-01-10"))) == [
        "aviris-classic-f240110t01p00r01",
        "aviris-ng-ang20240110t000000",
    ]
    assert find_scenes(svc.catalog, aoi_from(bbox=[50, 50, 51, 51])) == []


def test_source_filter(svc):
    aoi = aoi_from(bbox=[10.2, 10.2, 10.4, 10.4])
    assert ids(find_scenes(svc.catalog, aoi, sources=["aviris-classic"])) == [
        "aviris-classic-f240110t01p00r01"
    ]
    assert find_scenes(svc.catalog, aoi, sources=["emit"]) == []  # a known source, no scene here
    with pytest.raises(InvalidInputError, match="unknown source.*known: "):
        find_scenes(svc.catalog, aoi, sources=["prisma"])


def test_true_footprint_not_just_bbox(svc, tmp_path):
    corner = aoi_from(bbox=[13.5, 12.0, 14.0, 12.5])  # inside the strip's bbox, off the strip
    assert find_scenes(svc.catalog, corner) == []
    on_strip = aoi_from(bbox=[12.9, 12.9, 13.1, 13.1])
    assert ids(find_scenes(svc.catalog, on_strip)) == ["aviris-ng-ang20240110t010000"]
    # a GeoJSON Feature file works the same
    f = tmp_path / "aoi.geojson"
    f.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {}, "geometry": _box(12.9, 12.9, 13.1, 13.1)}],
            }
        )
    )
    assert ids(find_scenes(svc.catalog, load_aoi(f))) == ["aviris-ng-ang20240110t010000"]


def test_pure_python_intersection_matches_expectations():
    from hsi.planning import _poly_intersects, _polygons

    def pure(a, b):
        return any(_poly_intersects(x, y) for x in _polygons(a) for y in _polygons(b))

    sq = _box(0, 0, 2, 2)
    assert pure(sq, _box(1, 1, 3, 3)) and pure(sq, _box(0.5, 0.5, 1, 1)) and pure(_box(0.5, 0.5, 1, 1), sq)
    assert pure(sq, _box(2, 0, 3, 1))  # touching edge
    assert not pure(sq, _box(3, 3, 4, 4))
    hole = {
        "type": "Polygon",
        "coordinates": [sq["coordinates"][0], [[0.5, 0.5], [1.5, 0.5], [1.5, 1.5], [0.5, 1.5], [0.5, 0.5]]],
    }
    assert not pure(hole, _box(0.8, 0.8, 1.2, 1.2))  # inside the hole
    assert geometries_intersect(sq, _box(1, 1, 3, 3)) and not geometries_intersect(sq, _box(3, 3, 4, 4))


def test_plan_activation_states(svc):
    plan = plan_request(
        svc,
        aoi=aoi_from(bbox=[10.2, 10.2, 10.8, 10.8]),
        time_range=time_range("2024-01-01", None),
        products=["index:NDVI", {"product": "oil-spill", "params": {}}],
        sources=["aviris-ng"],
    )
    states = {s.item_id: (s.activation, s.activate) for s in plan.scenes}
    assert states == {
        "aviris-ng-ang20240110t000000": ("up-to-date", False),
        "aviris-ng-ang20240601t120000": ("missing", True),
        "aviris-ng-ang20241231t230000": ("stale", True),
    }
    assert all(s.products == ("index:NDVI", "oil-spill") for s in plan.scenes)
    assert [r["activated"] for r in plan.table()] == ["up-to-date", "missing", "stale"]
    forced = plan_request(
        svc,
        aoi=aoi_from(bbox=[10.2, 10.2, 10.4, 10.4]),
        products=["index:NDVI"],
        sources=["aviris-ng"],
        force=True,
    )
    assert all(s.activate for s in forced.scenes)


def test_inputs_are_validated_before_work():
    with pytest.raises(ProductError, match="NDVX"):
        product_requests(["index:NDVX"])
    with pytest.raises(InvalidInputError, match="unknown key"):
        product_requests([{"product": "index:NDVI", "parms": {}}])
    with pytest.raises(InvalidInputError, match="exactly one"):
        aoi_from()
    with pytest.raises(InvalidInputError, match="not a valid"):
        aoi_from(bbox=[10, 10, 9, 11])
    with pytest.raises(InvalidInputError, match="after end"):
        time_range("2024-02-01", "2024-01-01")
    with pytest.raises(InvalidInputError, match="ISO date"):
        time_range("yesterday")
    a, b = aoi_from(bbox=[1, 2, 3, 4]), aoi_from(geometry=_box(1.0, 2.0, 3.0, 4.0))
    assert a.key == b.key and len(a.short) == 8


def test_outcome_summary():
    ok = Outcome("s1", "index:NDVI", "published")
    skip = Outcome("s2", "index:NDVI", "skipped", reason="up to date")
    bad = Outcome("s3", "index:NDVI", "failed", reason="x.img: data file truncated")
    assert overall_status([ok, skip]) == "ok" and overall_status([]) == "ok"
    assert overall_status([ok, bad]) == "partial" and overall_status([bad]) == "failed"
    assert summarize([ok, skip, bad]) == {"published": 1, "skipped": 1, "failed": 1, "total": 3}
    assert Outcome.from_dict(bad.as_dict()) == bad
