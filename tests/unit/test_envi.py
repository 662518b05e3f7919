"""ENVI header parsing, layouts, georeferencing vs GDAL, validation errors, vendored real cubes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from hsi.errors import DataFileError, HeaderError
from hsi.sources import read_scene
from hsi.sources.envi import (
    MapInfo,
    format_header,
    map_info_crs_wkt,
    map_info_transform,
    parse_header_text,
    read_header,
)

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

DATA = Path(__file__).resolve().parents[1] / "data"
ENVI_NUMPY = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8", 15: "u8"}


def write_cube(
    tmp: Path,
    name: str = "cube.img",
    *,
    data_type: int = 4,
    interleave: str = "bsq",
    byte_order: int = 0,
    shape: tuple[int, int, int] = (3, 4, 5),  # bands, lines, samples
    header_offset: int = 0,
    extra: dict[str, object] | None = None,
    drop: tuple[str, ...] = (),
    seed: int = 0,
) -> tuple[Path, Path, np.ndarray]:
    """Write a cube (band, y, x) in the given ENVI layout; return (data, header, array)."""
    b, h, w = shape
    rng = np.random.default_rng(seed)
    dt = np.dtype(("<" if byte_order == 0 else ">") + ENVI_NUMPY[data_type])
    arr = (rng.random(shape) * 100).astype(dt)
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave.lower()]
    data = tmp / name
    with open(data, "wb") as fh:
        fh.write(b"\0" * header_offset)
        fh.write(np.ascontiguousarray(arr.transpose(order)).tobytes())
    fields: dict[str, object] = {
        "description": "{test cube}",
        "samples": w,
        "lines": h,
        "bands": b,
        "header offset": header_offset,
        "file type": "ENVI Standard",
        "data type": data_type,
        "interleave": interleave,
        "byte order": byte_order,
        "wavelength units": "Nanometers",
        "wavelength": [500.0 + 100 * i for i in range(b)],
        "fwhm": [10.0] * b,
    }
    fields.update(extra or {})
    for key in drop:
        fields.pop(key, None)
    hdr = tmp / f"{name}.hdr"
    hdr.write_text(format_header(fields))
    return data, hdr, arr


@pytest.mark.parametrize("data_type", [1, 2, 3, 4, 5, 12, 13, 14, 15])
@pytest.mark.parametrize("interleave", ["bsq", "BIL", "bip"])
@pytest.mark.parametrize("byte_order", [0, 1])
def test_all_types_orders_interleaves_roundtrip_through_gdal(tmp_path, data_type, interleave, byte_order):
    data, hdr, arr = write_cube(
        tmp_path,
        data_type=data_type,
        interleave=interleave,
        byte_order=byte_order,
        header_offset=16 if data_type == 2 else 0,
    )
    meta = read_scene(hdr)
    lay = meta.layout
    assert (lay.width, lay.height, lay.count) == (5, 4, 3)
    assert lay.dtype == np.dtype(ENVI_NUMPY[data_type]).name
    assert lay.interleave == interleave.lower()
    assert lay.byte_order == ("big" if byte_order else "little")
    assert lay.data_path == data and lay.header_path == hdr
    assert lay.expected_size == data.stat().st_size
    with rasterio.open(data) as ds:
        assert ds.dtypes[0] == lay.dtype
        np.testing.assert_array_equal(ds.read(), arr.astype(arr.dtype.newbyteorder("=")))
    assert meta.wavelengths == (500.0, 600.0, 700.0)
    assert [b.fwhm for b in meta.bands] == [10.0] * 3


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("byte_order", [0, 1])
def test_cube_windows_equal_the_array_whatever_the_layout(tmp_path, interleave, byte_order):
    from hsi.cube import Cube

    _, hdr, arr = write_cube(tmp_path, data_type=4, interleave=interleave, byte_order=byte_order,
                             shape=(6, 9, 7), header_offset=8)  # fmt: skip
    native = arr.astype(arr.dtype.newbyteorder("="))
    with Cube(read_scene(hdr)) as cube:
        for rows, cols in [((0, 9), (0, 7)), ((2, 5), (0, 7)), ((1, 8), (3, 6)), ((8, 9), (6, 7))]:
            got = cube.read(rows, cols)
            assert got.dtype == native.dtype and got.dtype.isnative
            np.testing.assert_array_equal(got, native[:, rows[0] : rows[1], cols[0] : cols[1]])


def test_header_text_parsing_multiline_lists_and_extra():
    text = (
        "ENVI\ndescription = {\n  two\n  lines}\nSamples = 2\nlines   = 1\nbands = 2\n; comment\n"
        "data type = 4\ninterleave = bsq\nwavelength = {\n 0.5,\n 0.6}\nmy custom = {a, b}\n"
    )
    raw = parse_header_text(text, "x.hdr")
    assert raw["samples"] == "2" and raw["my custom"] == "{a, b}"
    assert "two" in raw["description"] and "lines" in raw["description"]


def test_micrometres_become_nanometres_and_bbl_marks_bad(tmp_path):
    _, hdr, _ = write_cube(
        tmp_path,
        extra={
            "wavelength units": "Micrometers",
            "wavelength": [0.45, 0.8, 2.2],
            "fwhm": [0.01, 0.01, 0.012],
            "bbl": [1, 0, 1],
        },
    )
    meta = read_scene(hdr)
    assert meta.wavelengths == pytest.approx((450.0, 800.0, 2200.0))
    assert [b.fwhm for b in meta.bands] == pytest.approx([10.0, 10.0, 12.0])
    assert [b.good for b in meta.bands] == [True, False, True]


def test_default_bad_windows_without_bbl(tmp_path):
    _, hdr, _ = write_cube(
        tmp_path, shape=(8, 2, 2), extra={"wavelength": [380, 450, 1340, 1400, 1500, 1800, 2000, 2460]}
    )
    meta = read_scene(hdr)
    assert [b.good for b in meta.bands] == [False, True, False, False, True, False, True, False]


def test_gain_offset_reflectance_scale_nodata_and_extra(tmp_path):
    _, hdr, _ = write_cube(
        tmp_path,
        data_type=2,
        extra={
            "data gain values": [0.5, 0.25, 2],
            "data offset values": [1, 2, 3],
            "data ignore value": -9999,
            "acquisition time": "2021-06-01T18:20:50Z",
            "vendor thing": "{x}",
        },
    )
    meta = read_scene(hdr)
    assert [(b.scale, b.offset) for b in meta.bands] == [(0.5, 1.0), (0.25, 2.0), (2.0, 3.0)]
    assert meta.nodata == -9999
    assert meta.extra["vendor thing"] == "{x}"
    assert meta.datetime is not None and meta.datetime.isoformat() == "2021-06-01T18:20:50+00:00"
    with rasterio.open(meta.layout.data_path) as ds:  # GDAL agrees on scale/offset/nodata
        assert ds.scales == (0.5, 0.25, 2.0) and ds.offsets == (1.0, 2.0, 3.0) and ds.nodata == -9999
    _, hdr2, _ = write_cube(tmp_path, "r.img", data_type=12, extra={"reflectance scale factor": 65535})
    meta2 = read_scene(hdr2)
    assert meta2.bands[0].scale == pytest.approx(1 / 65535) and meta2.level == "l2"


# --- georeferencing equals GDAL --------------------------------------------------------------------

MAP_INFOS = [
    "{UTM, 1, 1, 581226.67, 7916192.56, 5.2, 5.2, 4, North, WGS-84, rotation=42}",  # AVIRIS-NG
    "{UTM, 1.0, 1.0, 441371.007, 4855941.73, 0.04, 0.04, 15, North, WGS-84}",
    "{UTM, 2.5, 3.5, 500000, 4000000, 10, 20, 33, South, WGS-84, rotation=-17.5}",  # ref pixel, non-square
    "{UTM, 1, 1, 300000, 5000000, 30, 30, 12, North, North America 1983, units=Meters}",
    "{UTM, 1, 1, 300000, 5000000, 30, 30, 12, North, North America 1927, rotation=180}",
    "{Geographic Lat/Lon, 1, 1, -120.5, 38.25, 0.001, 0.001, WGS-84, units=Degrees}",
    "{Geographic Lat/Lon, 1.5, 1.5, -120.5, 38.25, 0.002, 0.001, WGS-84, rotation=10}",
]


@pytest.mark.parametrize("map_info", MAP_INFOS)
def test_transform_and_crs_equal_gdal(tmp_path, map_info):
    data, hdr, _ = write_cube(tmp_path, extra={"map info": map_info})
    meta = read_scene(hdr)
    with rasterio.open(data) as ds:
        assert meta.transform == pytest.approx(tuple(ds.transform)[:6], abs=1e-9)
        assert CRS.from_wkt(meta.crs_wkt) == ds.crs
    assert meta.is_rotated == ("rotation=" in map_info and "rotation=180" not in map_info)


def test_rotation_matches_gdal_geometry():
    mi = MapInfo.parse("{UTM, 1, 1, 1000, 2000, 5, 5, 11, North, WGS-84, rotation=30}")
    a, b, c, d, e, f = map_info_transform(mi)
    assert (c, f) == (1000, 2000)
    assert np.hypot(a, b) == pytest.approx(5) and np.hypot(d, e) == pytest.approx(5)
    assert b == pytest.approx(2.5) and d == pytest.approx(2.5)  # GDAL: r = -30 deg


def test_coordinate_system_string_wins(tmp_path):
    css = CRS.from_epsg(32610).to_wkt()
    data, hdr, _ = write_cube(
        tmp_path,
        extra={
            "map info": "{UTM, 1, 1, 500000, 4000000, 10, 10, 11, North, WGS-84}",
            "coordinate system string": "{" + css + "}",
        },
    )
    meta = read_scene(hdr)
    with rasterio.open(data) as ds:
        assert CRS.from_wkt(meta.crs_wkt) == ds.crs == CRS.from_epsg(32610)


def test_no_map_info_gives_no_georef(tmp_path):
    _, hdr, _ = write_cube(tmp_path)
    meta = read_scene(hdr)
    assert meta.transform is None and meta.crs_wkt is None
    assert map_info_crs_wkt(None) is None


# --- validation errors name file and field ------------------------------------------------------------


def _raises(exc_type, path: Path, *words: str):
    return pytest.raises(exc_type, match="(?s)" + "".join(f"(?=.*{w})" for w in (path.name, *words)))


def test_not_an_envi_header(tmp_path):
    hdr = tmp_path / "x.hdr"
    hdr.write_text("samples = 3\n")
    with _raises(HeaderError, hdr, "ENVI"):
        read_header(hdr)


@pytest.mark.parametrize("field", ["samples", "lines", "bands", "data type", "interleave"])
def test_missing_required_field(tmp_path, field):
    _, hdr, _ = write_cube(tmp_path, drop=(field,))
    with _raises(HeaderError, hdr, f"'{field}'", "missing") as info:
        read_scene(hdr)
    assert info.value.field == field


def test_missing_wavelength(tmp_path):
    _, hdr, _ = write_cube(tmp_path, drop=("wavelength",))
    with _raises(HeaderError, hdr, "'wavelength'") as info:
        read_scene(hdr)
    assert info.value.field == "wavelength"


@pytest.mark.parametrize("field", ["wavelength", "fwhm", "bbl"])
def test_band_count_mismatch(tmp_path, field):
    _, hdr, _ = write_cube(tmp_path, extra={field: [1, 1]})
    with _raises(HeaderError, hdr, f"'{field}'", "bands = 3"):
        read_scene(hdr)


def test_unknown_interleave(tmp_path):
    _, hdr, _ = write_cube(tmp_path, extra={"interleave": "bsx"})
    with _raises(HeaderError, hdr, "'interleave'", "bsx"):
        read_scene(hdr)


@pytest.mark.parametrize("code", [6, 9, 7])
def test_unsupported_data_type(tmp_path, code):
    _, hdr, _ = write_cube(tmp_path)
    hdr.write_text(hdr.read_text().replace("data type = 4", f"data type = {code}"))
    with _raises(HeaderError, hdr, "'data type'", "unsupported data type"):
        read_scene(hdr)


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0"])
@pytest.mark.parametrize("field", ["wavelength", "fwhm"])
def test_non_finite_or_non_positive_band_values(tmp_path, field, value):
    _, hdr, _ = write_cube(tmp_path)
    text = hdr.read_text()
    start = text.index(f"{field} = {{") + len(f"{field} = {{")
    hdr.write_text(text[:start] + value + text[text.index(",", start) :])
    with _raises(HeaderError, hdr, f"'{field}'", "band 1", "finite and > 0") as info:
        read_header(hdr)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("units", "values", "field"),
    [
        ("Micrometers", [500.0, 600.0, 700.0], "wavelength units"),  # nm written as µm: 500 000 nm
        ("Nanometers", [0.5, 0.6, 0.7], "wavelength units"),  # µm written as nm
        (None, [5e5, 6e5, 7e5], "wavelength"),
    ],
)
def test_band_centres_outside_any_spectrometer_name_the_units(tmp_path, units, values, field):
    extra: dict[str, object] = {"wavelength": values, "fwhm": [0.01] * 3}
    _, hdr, _ = write_cube(tmp_path, extra=extra, drop=() if units else ("wavelength units",))
    if units:
        hdr.write_text(
            hdr.read_text().replace("wavelength units = Nanometers", f"wavelength units = {units}")
        )
    with _raises(HeaderError, hdr, f"'{field}'", "imaging spectrometer", "wavelength units") as info:
        read_header(hdr)
    assert info.value.field == field


@pytest.mark.parametrize("units", ["Index", "Wavenumber", "GHz", "MHz"])
def test_spectral_axes_that_are_not_wavelengths_are_refused(tmp_path, units):
    _, hdr, _ = write_cube(tmp_path)
    hdr.write_text(hdr.read_text().replace("wavelength units = Nanometers", f"wavelength units = {units}"))
    with _raises(HeaderError, hdr, "'wavelength units'", "not in wavelengths"):
        read_header(hdr)


@pytest.mark.parametrize(("units", "values", "nm"), [("Meters", [5e-7, 6e-7, 7e-7], 500.0),
                                                     ("Angstroms", [5000, 6000, 7000], 500.0),
                                                     ("cm", [5e-5, 6e-5, 7e-5], 500.0)])  # fmt: skip
def test_every_envi_length_unit_becomes_nanometres(tmp_path, units, values, nm):
    _, hdr, _ = write_cube(tmp_path, extra={"wavelength": values})
    hdr.write_text(hdr.read_text().replace("wavelength units = Nanometers", f"wavelength units = {units}"))
    assert read_header(hdr).wavelength_nm[0] == pytest.approx(nm)


def test_an_ignore_value_the_data_type_cannot_hold_is_dropped(tmp_path, caplog):
    data, hdr, arr = write_cube(tmp_path, data_type=12, extra={"data ignore value": -9999})
    with caplog.at_level("WARNING", logger="hsi.sources.envi"):
        header = read_header(hdr)
    assert header.data_ignore_value is None
    assert "'data ignore value' -9999.0 cannot occur in uint16 data" in caplog.text
    assert (
        read_header(
            write_cube(tmp_path, "b.img", data_type=12, extra={"data ignore value": 0})[1]
        ).data_ignore_value
        == 0
    )
    assert (
        read_header(
            write_cube(tmp_path, "c.img", data_type=4, extra={"data ignore value": -9999})[1]
        ).data_ignore_value
        == -9999
    )


def test_a_bad_band_list_with_no_good_band_is_refused(tmp_path):
    _, hdr, _ = write_cube(tmp_path, extra={"bbl": [0, 0, 0]})
    with _raises(HeaderError, hdr, "'bbl'", "every band bad") as info:
        read_header(hdr)
    assert info.value.field == "bbl"
    assert read_header(write_cube(tmp_path, "b.img", extra={"bbl": [0, 1, 0]})[1]).bbl == (0, 1, 0)


def test_an_unterminated_brace_names_its_field_and_line(tmp_path):
    _, hdr, _ = write_cube(tmp_path, extra={"description": "{test cube"})
    text = hdr.read_text().replace("description = {test cube}", "description = {test cube")
    hdr.write_text(text)
    line = text.splitlines().index("description = {test cube") + 1
    with _raises(
        HeaderError, hdr, "'description'", re.escape(f"unterminated '{{' (opened on line {line};"), "close"
    ) as info:
        read_header(hdr)
    assert info.value.field == "description"


def test_data_file_missing(tmp_path):
    data, hdr, _ = write_cube(tmp_path)
    data.unlink()
    with _raises(DataFileError, data, "not found"):
        read_scene(hdr)


def test_data_file_truncated_and_too_large(tmp_path):
    data, hdr, _ = write_cube(tmp_path)
    size = data.stat().st_size
    data.write_bytes(data.read_bytes()[:-10])
    with _raises(DataFileError, data, "truncated", f"expected {size} bytes", f"found {size - 10}"):
        read_scene(hdr)
    data.write_bytes(b"\0" * (size + 4))
    with _raises(DataFileError, data, f"expected {size} bytes", f"found {size + 4}"):
        read_scene(hdr)


def test_data_file_without_header(tmp_path):
    data = tmp_path / "lonely.img"
    data.write_bytes(b"\0" * 8)
    with _raises(HeaderError, data, "no ENVI header"):
        read_scene(data, source="envi")


# --- vendored real cubes ---------------------------------------------------------------------------


def test_real_resonon_pika_cube():
    data = DATA / "hs_process_pika_reflectance.bip"
    meta = read_scene(data)
    assert meta.source == "envi" and meta.scene_id == "hs_process_pika_reflectance"
    assert (meta.layout.width, meta.layout.height, meta.layout.count) == (3, 3, 240)
    assert meta.layout.dtype == "float32" and meta.layout.interleave == "bip"
    assert meta.level == "l2"  # 'reflectance scale factor' present
    assert meta.wavelengths[0] == pytest.approx(394.6) and meta.wavelengths[1] == pytest.approx(396.6528)
    assert all(b.fwhm is None for b in meta.bands)
    assert not meta.bands[0].good and meta.bands[10].good  # default window < 400 nm
    with rasterio.open(data) as ds:
        assert meta.transform == pytest.approx(tuple(ds.transform)[:6])
        assert CRS.from_wkt(meta.crs_wkt) == ds.crs
        assert float(ds.tags(1)["wavelength"]) == pytest.approx(meta.wavelengths[0])
    assert CRS.from_wkt(meta.crs_wkt).to_epsg() == 32615  # zone 15, 'T' read as North


def test_real_specim_fenix_cube():
    hdr = DATA / "napari_hippo_fenix.hdr"
    meta = read_scene(hdr)
    assert (meta.layout.width, meta.layout.height, meta.layout.count) == (23, 38, 450)
    assert meta.layout.dtype == "uint16" and meta.layout.interleave == "bsq"
    assert meta.layout.data_path.name == "napari_hippo_fenix.dat"
    assert meta.wavelengths[0] == pytest.approx(378.190002) and meta.wavelengths[-1] == pytest.approx(
        2503.72998
    )
    assert meta.bands[0].fwhm == pytest.approx(3.36) and meta.bands[-1].fwhm == pytest.approx(5.42)
    assert all(b.scale == pytest.approx(1 / 65535) for b in meta.bands)
    assert meta.nodata == 0 and meta.level == "l2" and meta.quantity == "reflectance"
    assert meta.transform is None and meta.crs_wkt is None
    assert meta.extra["sensor type"] == "Fenix"
    with rasterio.open(meta.layout.data_path) as ds:
        assert ds.nodata == 0 and ds.count == 450
        px = ds.read(200, window=((10, 11), (5, 6)))[0, 0] * meta.bands[199].scale
        assert 0 <= px <= 1
