"""What an item says about its scene: the datetime when the header has none, no geometry without
georeferencing, one scene per id, and the raw bytes the item recorded (index -> activate, library)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsi import activation as act
from hsi.demo import activate
from hsi.errors import DataFileError, InvalidInputError
from hsi.services import Services
from hsi.sources import read_scene
from hsi.sources.envi import format_header
from hsi.sources.synthetic import synthesize
from hsi.stac.validation import validate_item

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

MAP_INFO = "{UTM, 1, 1, 500000, 4000000, 30, 30, 11, North, WGS-84, units=Meters}"


@pytest.fixture
def svc(config_file: Path) -> Services:
    return Services.from_config(config_file)


def _cube(folder: Path, *, seed: int = 0, drop: tuple[str, ...] = (), **extra: object) -> Path:
    """A generic ENVI reflectance cube ``cube.img`` (8 bands, 16 x 16, float32); its header path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (folder / "cube.img").write_bytes(rng.uniform(0.01, 0.6, (8, 16, 16)).astype("<f4").tobytes())
    fields: dict[str, object] = {
        "description": "{test reflectance}",
        "samples": 16,
        "lines": 16,
        "bands": 8,
        "data type": 4,
        "interleave": "bsq",
        "byte order": 0,
        "map info": MAP_INFO,
        "wavelength units": "Nanometers",
        "wavelength": [450.0 + 270 * i for i in range(8)],
        "fwhm": [10.0] * 8,
        "acquisition time": "2024-06-01T18:00:00Z",
        **extra,
    }
    for key in drop:
        fields.pop(key)
    hdr = folder / "cube.img.hdr"
    hdr.write_text(format_header(fields))
    return hdr


def _activated(svc: Services, raw_id: str):  # noqa: ANN202 - pystac.Item
    raw = act.find_raw_item(svc, raw_id)
    item = svc.catalog.get_item(act.activated_collection(raw), raw.id)
    assert item is not None
    return item


def test_without_an_acquisition_time_the_item_says_what_its_datetime_is(
    svc: Services, tmp_path: Path
) -> None:
    hdr = _cube(tmp_path / "raw", drop=("acquisition time",))
    data = tmp_path / "raw" / "cube.img"
    os.utime(data, ns=(data.stat().st_atime_ns, 1_700_000_000 * 10**9))  # 2023-11-14T22:13:20Z
    os.utime(hdr, ns=(hdr.stat().st_atime_ns, 1_700_000_000 * 10**9))
    raw = act.index_scene(svc, str(hdr))
    assert raw.datetime == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert raw.properties["hsi:datetime_source"] == "file modification time"
    assert activate(svc, raw.id) == "activated"
    item = _activated(svc, raw.id)
    assert item.datetime == raw.datetime
    assert item.properties["hsi:datetime_source"] == "file modification time"
    validate_item(item)
    # a header with the time: no such field
    with_time = act.index_scene(svc, str(_cube(tmp_path / "timed")))
    assert "hsi:datetime_source" not in with_time.properties


@pytest.mark.parametrize(
    "header",
    [
        {"drop": ("map info",)},
        {"drop": ("map info",), "coordinate system string": '{PROJCS["WGS 84 / UTM zone 11N"]}'},
    ],
    ids=["nothing", "a-crs-without-a-grid"],
)
def test_without_georeferencing_items_have_no_place_on_the_map(
    svc: Services, tmp_path: Path, header: dict
) -> None:
    hdr = _cube(tmp_path / "raw", **header)
    raw = act.index_scene(svc, str(hdr))
    assert raw.geometry is None and raw.bbox is None
    assert activate(svc, raw.id) == "activated"
    item = _activated(svc, raw.id)
    assert item.geometry is None and item.bbox is None
    assert item.properties.get("proj:code") is None and "proj:transform" not in item.properties
    assert item.properties["proj:shape"] == [16, 16]
    with rasterio.open(item.assets["cube"].get_absolute_href()) as ds:
        assert ds.crs is None
    validate_item(item)


def test_two_generic_scenes_with_one_file_name_do_not_replace_each_other(
    svc: Services, tmp_path: Path
) -> None:
    first = act.index_scene(svc, str(_cube(tmp_path / "flight1", seed=1)))
    with pytest.raises(InvalidInputError) as info:
        act.index_scene(svc, str(_cube(tmp_path / "flight2", seed=2)))
    msg = str(info.value)
    assert f"id '{first.id}'" in msg and str(tmp_path / "flight1" / "cube.img") in msg and "rename" in msg
    kept = act.find_raw_item(svc, first.id)
    assert kept.assets["data"].href == str((tmp_path / "flight1" / "cube.img").resolve())
    # the same file again, and the same bytes moved elsewhere, are the same scene
    assert act.index_scene(svc, str(tmp_path / "flight1" / "cube.img.hdr")).id == first.id
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("cube.img", "cube.img.hdr"):
        (moved / name).write_bytes((tmp_path / "flight1" / name).read_bytes())
    assert act.index_scene(svc, str(moved / "cube.img.hdr")).assets["data"].href == str(moved / "cube.img")


def test_a_local_raw_file_changed_after_indexing_is_refused(svc: Services, tmp_path: Path) -> None:
    hdr = _cube(tmp_path / "raw")
    data = tmp_path / "raw" / "cube.img"
    raw = act.index_scene(svc, str(hdr))
    assert raw.assets["data"].extra_fields["hsi:mtime_ns"] == data.stat().st_mtime_ns
    # touched, same bytes: the checksum is verified again and the activation runs
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    assert activate(svc, raw.id) == "activated"
    # new values, same size (as a reprocessing in place would write)
    values = np.fromfile(data, dtype="<f4") * 2
    values.tofile(data)
    with pytest.raises(
        DataFileError, match="changed since it was indexed \\(its checksum differs\\): index it again"
    ):
        activate(svc, raw.id, force=True)
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(
        DataFileError, match="changed since it was indexed: truncated to 8188 bytes from 8192"
    ):
        activate(svc, raw.id, force=True)
    # indexed again: the new bytes are the scene
    values.tofile(data)
    again = act.index_scene(svc, str(hdr))
    assert activate(svc, again.id) == "activated"
    with rasterio.open(_activated(svc, again.id).assets["cube"].get_absolute_href()) as ds:
        np.testing.assert_array_equal(ds.read(1), values.reshape(8, 16, 16)[0])


def test_the_other_level_of_an_indexed_acquisition_is_refused(svc: Services, tmp_path: Path) -> None:
    """AVIRIS-NG radiance and reflectance of one flight line share the scene id: indexing the second
    would replace the first's raw item, so it is refused, naming both."""
    rfl = synthesize(tmp_path / "l2", level="l2", width=8, height=8, scene_id="ang20240101t000900")
    rdn = synthesize(tmp_path / "l1b", level="l1b", width=8, height=8, scene_id="ang20240101t000900")
    first = act.index_scene(svc, str(rfl))
    with pytest.raises(InvalidInputError) as info:
        act.index_scene(svc, str(rdn))
    msg = str(info.value)
    assert "a l1b delivery of aviris-ng-ang20240101t000900, which is indexed as l2" in msg
    assert "another catalog" in msg
    kept = act.find_raw_item(svc, first.id)
    assert kept.properties["hsi:level"] == "l2" and kept.assets["data"].href == first.assets["data"].href
    # a re-delivery of the same level (another version's file) replaces it
    again = synthesize(tmp_path / "v2", level="l2", width=8, height=8, seed=3, scene_id="ang20240101t000900")
    assert act.index_scene(svc, str(again)).assets["data"].href == str(again.with_suffix("").resolve())


def test_scenes_of_one_aviris_classic_flight_line_are_items_of_their_own(
    svc: Services, tmp_path: Path
) -> None:
    ids = []
    for seg, seed in (("sc01", 1), ("sc02", 2)):
        hdr = synthesize(tmp_path / seg, source="aviris-classic", level="l1b", width=8, height=8, seed=seed,
                         scene_id="f240101t01p00r01")  # fmt: skip
        data = hdr.with_suffix("")
        seg_data = data.with_name(data.name.replace("rdn", f"rdn_e_{seg}_ort"))
        for f in sorted(hdr.parent.iterdir()):
            f.rename(f.with_name(f.name.replace(data.name, seg_data.name)))
        ids.append(act.index_scene(svc, str(seg_data) + ".hdr").id)
    assert ids == ["aviris-classic-f240101t01p00r01-sc01", "aviris-classic-f240101t01p00r01-sc02"]
    assert all(act.find_raw_item(svc, i) for i in ids)


def test_a_directory_of_several_flight_line_scenes_names_the_ones_it_leaves(tmp_path: Path, caplog) -> None:
    d = tmp_path / "line"
    for seg, seed in (("sc01", 1), ("sc02", 2)):
        hdr = synthesize(d / seg, source="aviris-classic", level="l1b", width=8, height=8, seed=seed,
                         scene_id="f240101t01p00r01")  # fmt: skip
        for f in sorted(hdr.parent.iterdir()):
            f.rename(d / f.name.replace("sc01", seg))
    with caplog.at_level("WARNING", logger="hsi.sources.aviris_classic"):
        meta = read_scene(d)
    assert meta.scene_id == "f240101t01p00r01-sc01"
    assert (
        "holds scenes sc01, sc02 of one flight line" in caplog.text
        and "index each scene's header" in caplog.text
    )


def test_a_sensor_delivery_under_any_archive_name_is_read_by_its_sensor(
    svc: Services, tmp_path: Path
) -> None:
    """Detection goes by name first: an AVIRIS-NG tar renamed download.tar.gz is recognised by its
    content, so it keeps its sensor's id, time, units and sidecars (not the generic reader's)."""
    arc = synthesize(tmp_path / "in", level="l1b", width=8, height=8, seed=4, sidecars=True, archive="tar.gz",
                     scene_id="ang20240101t001500")  # fmt: skip
    renamed = arc.rename(arc.with_name("download.tar.gz"))
    meta = read_scene(renamed, work_dir=tmp_path / "x")
    assert (meta.source, meta.scene_id, meta.level) == ("aviris-ng", "ang20240101t001500", "l1b")
    assert meta.units == "uW nm-1 cm-2 sr-1" and "sidecar_glt" in meta.extra
    raw = act.index_scene(svc, str(renamed))
    assert (raw.collection_id, raw.id) == ("aviris-ng-raw", "aviris-ng-ang20240101t001500")
    assert activate(svc, raw.id) == "activated"
    assert _activated(svc, raw.id).collection_id == "aviris-ng-l1b"


def test_an_upper_case_delivery_activates_with_its_sidecars(svc: Services, tmp_path: Path) -> None:
    hdr = synthesize(tmp_path / "in", level="l1b", width=8, height=8, seed=5, sidecars=True,
                     scene_id="ang20240101t001700")  # fmt: skip
    up = tmp_path / "UP"
    up.mkdir()
    for (
        f
    ) in hdr.parent.iterdir():  # ANG..._RDN_V2P9_IMG and ANG..._RDN_V2P9_IMG.HDR, as some archives hold them
        f.rename(up / f.name.upper())
    raw = act.index_scene(svc, str(up / hdr.name.upper()))
    assert raw.id == "aviris-ng-ang20240101t001700"
    assert Path(raw.assets["glt_header"].href).name.endswith("_GLT.HDR")
    assert activate(svc, raw.id) == "activated"
    item = _activated(svc, raw.id)
    assert {"glt", "glt_header", "obs"} <= set(item.assets)
