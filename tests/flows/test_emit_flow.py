"""EMIT granules through the flows under a real Prefect API: index (cube + companion granule as raw
assets), activate (GLT-orthorectified COG + orthorectified OBS/MASK + the sensor cube and its GLT as
assets), products on radiance (TOA reflectance recorded, or refused) and on reflectance (mask)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hsi.config import load_config
from hsi.services import Services
from hsi.sources.emit_synth import synthesize_emit
from hsi.stac.validation import validate_item
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.index import index_scenes
from hsi_pipeline.flows.product import run_product

pytestmark = pytest.mark.usefixtures("prefect_harness")

RAD = "emit-EMIT_L1B_RAD_001_20220903T163129_2224611_012"
RFL = "emit-EMIT_L2A_RFL_001_20220903T163129_2224611_012"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("emitflow")
    cfg = root / "hsi.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "storage": {"root": str(root / "assets")},
                "catalog": {"url": str(root / "catalog")},
                "work_dir": str(root / "work"),
            }
        )
    )
    for level in ("l1b", "l2a"):
        synthesize_emit(root / "raw", level=level, crosstrack=30, downtrack=40, seed=0)  # type: ignore[arg-type]
    rows = index_scenes(hrefs=[str(root / "raw")], config=str(cfg))
    assert sorted(r["item_id"] for r in rows) == [RAD, RFL]  # OBS / MASK are companions, not scenes
    for item_id in (RAD, RFL):
        assert activate_scene(item_id=item_id, config=str(cfg))["status"] == "activated"
    return {"config": str(cfg), "svc": Services.from_config(load_config(str(cfg)))}


def test_raw_and_activated_items(env: dict[str, Any]) -> None:
    cat = env["svc"].catalog
    raw = cat.get_item("emit-raw", RAD)
    assert set(raw.assets) == {"data", "obs"} and raw.assets["data"].media_type == "application/x-netcdf"
    assert set(cat.get_item("emit-raw", RFL).assets) == {"data", "mask"}
    rad = cat.get_item("emit-l1b", RAD)
    rfl = cat.get_item("emit-l2a", RFL)
    for item in (rad, rfl):
        validate_item(item)
        assert item.properties["proj:code"] == "EPSG:4326"
        assert "through its GLT" in item.properties["processing:lineage"]
        sensor = item.assets["sensor"]
        assert (
            "sensor-geometry" in sensor.roles
            and sensor.extra_fields["hsi:glt"] == "location/glt_x, location/glt_y"
        )
    assert {"cloud", "cirrus", "water", "dilated-cloud"} <= set(rfl.assets["mask"].roles)
    assert "sun-angle" in rad.assets["obs"].roles
    assert rad.properties["hsi:quantity"] == "radiance" and rfl.properties["hsi:quantity"] == "reflectance"


def test_reflectance_product_on_radiance_records_toa(env: dict[str, Any]) -> None:
    res = run_product(item_id=RAD, product="index:NDVI", config=env["config"])
    assert res["status"] == "published"
    item = env["svc"].catalog.get_item(res["collection"], res["item_id"])
    validate_item(item)
    params = item.properties["hsi:parameters"]
    assert params["input_quantity"] == "toa-reflectance"
    toa = params["toa_reflectance"]
    assert "ASTM G173" in toa["esun"] and toa["solar_zenith"].startswith("per pixel: asset 'obs' band 5")
    assert toa["units_to_W_m2_sr_nm"] == 0.01
    # refusing changes nothing that exists and says why
    with pytest.raises(Exception, match="needs reflectance but .* holds radiance"):
        run_product(item_id=RAD, product="index:NDVI", params={"radiance": "refuse"}, config=env["config"])


def test_reflectance_product_masks_by_default(env: dict[str, Any]) -> None:
    on = run_product(item_id=RFL, product="index:NDVI", config=env["config"])
    item = env["svc"].catalog.get_item(on["collection"], on["item_id"])
    validate_item(item)
    assert item.properties["hsi:parameters"]["quality_mask"] == {
        "asset": "mask",
        "flags": ["Cloud flag", "Cirrus flag", "Water flag", "Dilated Cloud Flag"],
    }
    off = run_product(item_id=RFL, product="index:NDVI", params={"mask": False}, config=env["config"])
    assert off["status"] == "published" and off["product_key"] != on["product_key"]
    item = env["svc"].catalog.get_item(off["collection"], off["item_id"])
    assert item.properties["hsi:parameters"]["quality_mask"] == "off"
