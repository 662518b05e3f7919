"""An EMIT L1B granule through the domain steps the Prefect tasks wrap one to one (no server): index
(cube + OBS as raw assets), activate (GLT COG, OBS on the same grid, sensor cube + GLT kept), product
plan/compute/register on radiance (TOA recorded in parameters and key, validated item) or refused."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pystac
import pytest
import rasterio
import yaml

from hsi import production
from hsi.activation import (
    activated_collection,
    activation_key,
    build_activated_item,
    convert,
    fetch_raw,
    index_scene,
    upload_outputs,
)
from hsi.cog import CogProfile
from hsi.config import load_config
from hsi.errors import ProductError
from hsi.product_compute import compute
from hsi.services import Services
from hsi.sources.emit_synth import synthesize_emit
from hsi.stac.items import collection_for
from hsi.stac.provenance import RunInfo
from hsi.stac.validation import validate_item


def test_emit_radiance_granule_index_activate_product(tmp_path: Path) -> None:
    cfg = tmp_path / "hsi.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"root": str(tmp_path / "assets")},
                                   "catalog": {"url": str(tmp_path / "catalog")}, "work_dir": str(tmp_path / "work")}))  # fmt: skip
    svc = Services.from_config(load_config(str(cfg)))
    nc = synthesize_emit(tmp_path / "raw", level="l1b", crosstrack=26, downtrack=34, seed=3)
    raw = index_scene(svc, str(nc))
    assert (raw.collection_id, raw.id) == ("emit-raw", f"emit-{nc.stem}")
    assert set(raw.assets) == {"data", "obs"} and raw.assets["obs"].media_type == "application/x-netcdf"
    with h5py.File(nc, "r") as f:  # the granule's own span, read independently
        span = [str(f.attrs[k].decode() if isinstance(f.attrs[k], bytes) else f.attrs[k])
                for k in ("time_coverage_start", "time_coverage_end")]  # fmt: skip
    want = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z") for t in span]
    got = [
        datetime.fromisoformat(raw.properties[k].replace("Z", "+00:00"))
        for k in ("start_datetime", "end_datetime")
    ]
    assert got == want and want[1] >= want[0] and raw.datetime == want[0]
    profile = CogProfile()
    _, ref = activation_key(svc, raw, profile)
    conv = convert(
        fetch_raw(svc, raw, tmp_path / "stage"), tmp_path / "out", work_dir=svc.work_dir / "extract"
    )
    coll = activated_collection(raw)
    assert coll == "emit-l1b"
    up = upload_outputs(svc, coll, raw.id, conv.files)
    item = build_activated_item(svc, conv, up, raw, ref, profile, RunInfo())
    probe = item.clone()  # as the catalog stores it: with its collection link
    probe.add_link(pystac.Link("collection", "../collection.json", media_type="application/json"))
    validate_item(probe)
    assert {"cube", "rgb", "thumbnail", "obs", "sensor"} == set(item.assets)
    assert (item.properties["start_datetime"], item.properties["end_datetime"]) == (
        raw.properties["start_datetime"],
        raw.properties["end_datetime"],
    )
    assert item.assets["sensor"].href == raw.assets["data"].href
    svc.catalog.ensure_collection(collection_for(coll))
    svc.catalog.upsert_item(item)

    plan = production.plan_product(svc, item, "index:NDVI")
    assert plan.params["input_quantity"] == "toa-reflectance"
    assert plan.params["toa_reflectance"]["solar_zenith"].startswith("per pixel: asset 'obs' band 5")
    computed = compute(svc, plan, tmp_path / "p")
    uploaded = production.upload_outputs(svc, plan, computed.files)
    pitem = production.register(
        svc, production.build_product_item(svc, plan, computed, uploaded, item, RunInfo())
    )
    assert pitem.properties["hsi:parameters"]["input_quantity"] == "toa-reflectance"
    assert [pitem.properties[k] for k in ("start_datetime", "end_datetime")] == [
        raw.properties[k] for k in ("start_datetime", "end_datetime")
    ]
    assert pitem.properties["hsi:product_key"] == plan.key
    # `hsi plan` computes the same key (TOA records included) without running the product
    assert production.expected_product_key(svc, item, "index:NDVI") == plan.key
    other_opts = production.expected_product_key(svc, item, "index:NDVI", {"mask": False})
    assert other_opts == production.plan_product(svc, item, "index:NDVI", {"mask": False}).key
    st = computed.result.stats[0]
    assert -1.0 <= st["min"] <= st["max"] <= 1.0  # NDVI of reflectance, not of radiance
    # the conversion is part of the key: refusing it is a different request, and it fails precisely
    with pytest.raises(ProductError, match="needs reflectance but .* holds radiance"):
        production.plan_product(svc, item, "index:NDVI", {"radiance": "refuse"})


def _activated_emit(tmp_path: Path, level: str, seed: int) -> tuple[Services, pystac.Item]:
    """An EMIT granule (+ companion) indexed, activated and registered in a static catalog."""
    cfg = tmp_path / "hsi.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"root": str(tmp_path / "assets")},
                                   "catalog": {"url": str(tmp_path / "catalog")}, "work_dir": str(tmp_path / "work")}))  # fmt: skip
    svc = Services.from_config(load_config(str(cfg)))
    nc = synthesize_emit(tmp_path / "raw", level=level, crosstrack=40, downtrack=52, seed=seed)
    raw = index_scene(svc, str(nc))
    _, ref = activation_key(svc, raw, CogProfile())
    conv = convert(fetch_raw(svc, raw, tmp_path / "stage"), tmp_path / "out", work_dir=svc.work_dir / "x")
    coll = activated_collection(raw)
    item = build_activated_item(svc, conv, upload_outputs(svc, coll, raw.id, conv.files), raw, ref, CogProfile(),
                                RunInfo())  # fmt: skip
    svc.catalog.ensure_collection(collection_for(coll))
    svc.catalog.upsert_item(item)
    return svc, item


def _product(svc: Services, item: pystac.Item, out: Path, params: dict[str, Any]) -> tuple[Any, Any, Any]:
    plan = production.plan_product(svc, item, "index:NDVI", params)
    computed = compute(svc, plan, out)
    with rasterio.open(computed.files["data"]) as ds:
        return plan, ds.read(1, masked=True), (ds.transform, ds.crs, ds.shape, ds.tags(), ds.nodata)


@pytest.mark.parametrize(("level", "what"), [("l1b", "toa_reflectance"), ("l2a", "quality_mask")])
def test_product_in_sensor_geometry_equals_the_orthorectified_product(tmp_path: Path, level: str, what: str
                                                                      ) -> None:  # fmt: skip
    """geometry=sensor: NDVI on the raw granule's lines and samples (TOA from the sensor-geometry OBS
    granule, or masked by the sensor-geometry MASK granule), then through the GLT, equals NDVI of the
    orthorectified cube pixel for pixel: the GLT is an exact lookup and NDVI is per pixel."""
    svc, item = _activated_emit(tmp_path, level, seed=3)  # seed 3: the sun is up over the L1B granule
    ortho_plan, ortho, (t0, crs0, shape0, _, nd0) = _product(svc, item, tmp_path / "ortho", {})
    plan, sensor, (t1, crs1, shape1, tags, nd1) = _product(
        svc, item, tmp_path / "sensor", {"geometry": "sensor"}
    )
    assert (t1, crs1, shape1, nd1) == (t0, crs0, shape0, nd0)
    assert what in plan.params and plan.params[what] == ortho_plan.params[what]
    assert np.array_equal(np.ma.getmaskarray(sensor), np.ma.getmaskarray(ortho))
    assert (~np.ma.getmaskarray(sensor)).sum() > 0.3 * sensor.size  # a real scene, not all fill
    assert np.array_equal(sensor.filled(0), ortho.filled(0))  # bit for bit
    assert tags["HSI_GEOMETRY"].startswith("computed in sensor geometry")
    # recorded, in the key, and `hsi plan` computes the same key without reading pixels
    assert plan.params["geometry"] == "sensor" and "geometry" not in ortho_plan.params
    assert plan.key != ortho_plan.key
    assert production.expected_product_key(svc, item, "index:NDVI", {"geometry": "sensor"}) == plan.key
    assert not (tmp_path / "sensor" / ".sensor").exists()  # the staged raw granule is gone


def test_sensor_geometry_is_refused_in_a_line_without_a_sensor_cube(tmp_path: Path) -> None:
    svc, item = _activated_emit(tmp_path, "l2a", seed=12)
    ortho_only = item.clone()
    del ortho_only.assets["sensor"]
    with pytest.raises(
        ProductError, match=r"geometry=sensor: .* has no 'sensor' asset.*run with geometry=ortho"
    ):
        production.plan_product(svc, ortho_only, "index:NDVI", {"geometry": "sensor"})
    with pytest.raises(ProductError, match="geometry must be 'ortho' or 'sensor', got 'raw'"):
        production.plan_product(svc, item, "index:NDVI", {"geometry": "raw"})
