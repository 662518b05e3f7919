"""Index + activate through the real Prefect flows on the embedded default (static catalog, local store)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from hsi.config import load_config
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.validation import validate_item
from hsi.storage import file_checksum
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.index import index_scenes

pytestmark = pytest.mark.usefixtures("prefect_harness")
DATA = Path(__file__).parent.parent / "data"


def _catalog(config_file: Path) -> Services:
    return Services.from_config(load_config(config_file))


def _items(svc: Services, collection: str) -> list:
    return list(svc.catalog.search(collections=[collection]))


def test_index_and_activate_end_to_end(tmp_path: Path, config_file: Path) -> None:
    hdr = synthesize(
        tmp_path / "raw", source="aviris-ng", level="l2", width=64, height=96, rotation_deg=30, seed=11
    )
    rows = index_scenes(hrefs=[str(tmp_path / "raw")], config=str(config_file))
    assert [r["status"] for r in rows] == ["indexed"]
    item_id = rows[0]["item_id"]
    assert item_id == "aviris-ng-ang20240101t001100"

    res = activate_scene(item_id=item_id, config=str(config_file))
    assert res["status"] == "activated"
    svc = _catalog(config_file)
    raw = svc.catalog.get_item("aviris-ng-raw", item_id)
    act = svc.catalog.get_item("aviris-ng-l2", item_id)
    assert raw is not None and act is not None
    validate_item(raw)
    validate_item(act)

    # provenance from the flow run metadata, linked to the raw item
    run = act.properties["hsi:flow_run"]
    assert run["id"] and run["flow_name"] == "activate" and run["name"] == f"activate-{item_id}"
    assert act.properties["processing:software"]["rasterio"]
    assert act.properties["hsi:inputs"][0]["id"] == item_id
    assert act.properties["hsi:inputs"][0]["checksums"]["data"] == file_checksum(hdr.with_suffix(""))
    derived = [lk.href for lk in act.links if lk.rel == "derived_from"]
    assert derived == [svc.catalog.item_href("aviris-ng-raw", item_id)]

    # assets: complete, recorded size/checksum true, the cube is a valid band-interleaved COG
    for key in ("cube", "rgb", "thumbnail"):
        a = act.assets[key]
        assert Path(a.href).stat().st_size == a.extra_fields["file:size"]
        assert file_checksum(a.href) == a.extra_fields["file:checksum"]
    cube = act.assets["cube"]
    assert cog_validate(cube.href, quiet=True)[0]
    bands = cube.extra_fields["bands"]
    assert len(bands) == 425
    assert bands[0]["eo:center_wavelength"] == pytest.approx(
        raw.assets["data"].extra_fields["bands"][0]["eo:center_wavelength"]
    )
    assert not bands[0]["hsi:good_band"]  # < 400 nm: bad by the default windows
    assert act.properties["hsi:bad_bands"][0] == 1
    with rasterio.open(cube.href) as ds:
        assert ds.transform.b == 0 and ds.count == 425
        assert act.properties["proj:shape"] == [ds.height, ds.width]
    # the footprint is the rotated outline, not the north-up box
    assert len(act.geometry["coordinates"][0]) > 5

    # the static catalog is a plain STAC catalog any tool can crawl
    root = json.loads((tmp_path / "catalog" / "catalog.json").read_text())
    assert {lk["href"] for lk in root["links"] if lk["rel"] == "child"} == {
        "./aviris-ng-raw/collection.json",
        "./aviris-ng-l2/collection.json",
    }


def test_second_run_skips_and_force_replaces(tmp_path: Path, config_file: Path) -> None:
    synthesize(tmp_path / "raw", source="aviris-classic", level="l1b", width=32, height=40, seed=4)
    item_id = index_scenes(hrefs=[str(tmp_path / "raw")], config=str(config_file))[0]["item_id"]
    first = activate_scene(item_id=item_id, config=str(config_file))
    assert first["status"] == "activated"
    svc = _catalog(config_file)
    before = svc.catalog.get_item("aviris-classic-l1b", item_id)

    second = activate_scene(item_id=item_id, config=str(config_file))
    assert second["status"] == "skipped" and "up to date" in second["reason"]
    assert svc.catalog.get_item("aviris-classic-l1b", item_id).to_dict() == before.to_dict()

    forced = activate_scene(item_id=item_id, force=True, config=str(config_file))
    assert forced["status"] == "activated"
    items = _items(svc, "aviris-classic-l1b")
    assert [i.id for i in items] == [item_id]  # replaced, not duplicated
    after = items[0]
    assert after.properties["processing:datetime"] != before.properties["processing:datetime"]
    assert after.properties["hsi:flow_run"]["id"] != before.properties["hsi:flow_run"]["id"]
    assert after.properties["hsi:product_key"] == before.properties["hsi:product_key"]


@pytest.mark.parametrize(("source", "level"), [("aviris-classic", "l1b"), ("aviris-ng", "l2")])
def test_provenance_records_the_creation_options_of_the_written_cog(
    tmp_path: Path, config_file: Path, source: str, level: str
) -> None:
    """``hsi:parameters`` says what the cube was written with (the automatic predictor resolved), as
    rasterio reads it back from the file; the key still matches, so a rerun skips."""
    synthesize(tmp_path / "raw", source=source, level=level, width=24, height=32, seed=5)  # type: ignore[arg-type]
    item_id = index_scenes(hrefs=[str(tmp_path / "raw")], config=str(config_file))[0]["item_id"]
    assert activate_scene(item_id=item_id, config=str(config_file))["status"] == "activated"
    act = _catalog(config_file).catalog.get_item(f"{source}-{level}", item_id)
    params = act.properties["hsi:parameters"]
    with rasterio.open(act.assets["cube"].href) as ds:
        ims = ds.tags(ns="IMAGE_STRUCTURE")
        assert params["predictor"] == int(ims["PREDICTOR"]) == (2 if ds.dtypes[0] == "int16" else 3)
        assert params["compress"] == ims["COMPRESSION"] == "ZSTD"
        assert params["blocksize"] == ds.block_shapes[0][0] == ds.block_shapes[0][1]
        assert params["overview_level"] == len(ds.overviews(1))
    assert activate_scene(item_id=item_id, config=str(config_file))["status"] == "skipped"


def test_missing_asset_makes_the_item_stale(tmp_path: Path, config_file: Path) -> None:
    synthesize(tmp_path / "raw", source="aviris-ng", level="l1b", width=24, height=24, seed=5)
    item_id = index_scenes(hrefs=[str(tmp_path / "raw")], config=str(config_file))[0]["item_id"]
    activate_scene(item_id=item_id, config=str(config_file))
    svc = _catalog(config_file)
    cube = Path(svc.catalog.get_item("aviris-ng-l1b", item_id).assets["cube"].href)
    cube.write_bytes(cube.read_bytes()[:100])  # a damaged asset is not "done"
    again = activate_scene(item_id=item_id, config=str(config_file))
    assert again["status"] == "activated"
    assert cog_validate(str(cube), quiet=True)[0]


@pytest.mark.parametrize(
    ("files", "checks"),
    [
        (
            ["hs_process_pika_reflectance.bip", "hs_process_pika_reflectance.bip.hdr"],
            {"count": 240, "epsg": 32615, "nodata": None},
        ),
        (
            ["napari_hippo_fenix.dat", "napari_hippo_fenix.hdr"],
            {"count": 450, "epsg": None, "nodata": 0.0, "scale": 1 / 65535},
        ),
    ],
)
def test_real_envi_cubes_activate_through_the_generic_source(
    tmp_path: Path, config_file: Path, files: list[str], checks: dict
) -> None:
    scene = tmp_path / "real"
    scene.mkdir()
    for f in files:
        (scene / f).write_bytes((DATA / f).read_bytes())
    hdr = scene / files[1]
    rows = index_scenes(hrefs=[str(hdr)], config=str(config_file))
    item_id = rows[0]["item_id"]
    assert rows[0]["collection"] == "envi-raw"
    res = activate_scene(item_id=item_id, config=str(config_file))
    assert res["status"] == "activated"
    act = _catalog(config_file).catalog.get_item(res["collection"], item_id)
    validate_item(act)
    from hsi.sources.envi import read_header

    header = read_header(hdr)
    with rasterio.open(scene / files[0]) as src, rasterio.open(act.assets["cube"].href) as ds:
        assert ds.count == checks["count"]
        # georeferencing equals GDAL's reading of the original header
        if checks["epsg"]:
            assert ds.crs.to_epsg() == checks["epsg"] == src.crs.to_epsg()
            assert ds.transform.almost_equals(src.transform)
        assert ds.nodata == checks["nodata"]
        if "scale" in checks:
            assert ds.scales[0] == pytest.approx(checks["scale"])
        cube_bands = act.assets["cube"].extra_fields["bands"]
        assert [b["eo:center_wavelength"] * 1000 for b in cube_bands] == pytest.approx(
            list(header.wavelength_nm), abs=1e-3
        )
        if header.fwhm_nm:
            assert [b["eo:full_width_half_max"] * 1000 for b in cube_bands] == pytest.approx(
                list(header.fwhm_nm), abs=1e-3
            )
        assert (ds.read(7) == src.read(7)).all()


def _write_bad(tmp_path: Path, case: str) -> Path:
    d = tmp_path / case
    hdr = synthesize(d, source="aviris-ng", level="l2", width=8, height=8, seed=21)
    data = hdr.with_suffix("")
    text = hdr.read_text()
    if case == "truncated":
        data.write_bytes(data.read_bytes()[:-100])
    elif case == "no-wavelength":
        start = text.index("wavelength = {")
        hdr.write_text(text[:start] + text[text.index("}", start) + 1 :])
    elif case == "band-mismatch":
        hdr.write_text(text.replace("bands = 425", "bands = 424"))
    elif case == "bad-interleave":
        hdr.write_text(text.replace("interleave = bil", "interleave = bxq"))
    elif case == "bad-dtype":
        hdr.write_text(text.replace("data type = 4", "data type = 6"))
    elif case == "archive-no-header":
        hdr.unlink()
        arc = d / "ang20240101t002100.tar.gz"
        with tarfile.open(arc, "w:gz") as tf:
            tf.add(data, arcname=data.name)
        return arc
    return hdr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "truncated"),
        ("no-wavelength", "wavelength"),
        ("band-mismatch", "bands"),
        ("bad-interleave", "interleave"),
        ("bad-dtype", "data type"),
        ("archive-no-header", "header"),
    ],
)
def test_bad_input_gives_a_clear_error_and_no_catalog_entry(
    tmp_path: Path, config_file: Path, case: str, message: str
) -> None:
    entry = _write_bad(tmp_path, case)
    with pytest.raises(Exception) as exc_info:
        index_scenes(hrefs=[str(entry)], config=str(config_file))
    text = str(exc_info.value)
    assert entry.name in text or str(entry) in text
    from prefect.client.orchestration import get_client

    # the task's own error names the file and field
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
        states = [
            r.state for r in runs if r.name.startswith("index-raw-scene") and r.state and r.state.is_failed()
        ]
    assert states
    detail = " ".join(str(s.message) for s in states)
    assert message in detail.lower() or message in text.lower()
    svc = _catalog(config_file)
    assert list(svc.catalog.search()) == []


def test_corrupt_after_indexing_fails_activation_cleanly(tmp_path: Path, config_file: Path) -> None:
    hdr = synthesize(tmp_path / "raw", source="aviris-ng", level="l2", width=16, height=16, seed=31)
    item_id = index_scenes(hrefs=[str(hdr)], config=str(config_file))[0]["item_id"]
    data = hdr.with_suffix("")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(Exception, match=data.name):
        activate_scene(item_id=item_id, config=str(config_file))
    svc = _catalog(config_file)
    assert svc.catalog.get_item("aviris-ng-l2", item_id) is None
    assert not list((tmp_path / "assets").rglob("*.tif")) if (tmp_path / "assets").exists() else True
