"""GLT orthorectification is exact: the COG equals an independent NumPy application of the GLT
(written here from the formats' documents: 1-based entries, 0 = no pixel, AVIRIS-NG negative =
nearest-neighbour infill, use abs), for every band, with fill where the GLT is empty."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate

from hsi.cog import write_cog
from hsi.glt import attach_glt, glt_from_envi, write_cog_glt
from hsi.scene import bands_from_dataset
from hsi.sources import read_scene
from hsi.sources.emit_synth import synthesize_emit
from hsi.sources.envi import format_header
from hsi.sources.flightline import flight_line

FILL = -9999.0
LINES, SAMPLES, BANDS = 70, 48, 9


def _write_envi(path: Path, array: np.ndarray, interleave: str, fields: dict[str, object]) -> Path:
    """Write (bands, lines, samples) ``array`` as a little-endian ENVI file; return the header."""
    if interleave == "bil":
        array.transpose(1, 0, 2).astype(array.dtype.newbyteorder("<")).tofile(path)
    elif interleave == "bip":
        array.transpose(1, 2, 0).astype(array.dtype.newbyteorder("<")).tofile(path)
    else:
        array.astype(array.dtype.newbyteorder("<")).tofile(path)
    dtype_code = {"float32": 4, "int32": 3, "int16": 2}[array.dtype.name]
    hdr = path.with_name(path.name + ".hdr")
    base: dict[str, object] = {
        "samples": array.shape[2],
        "lines": array.shape[1],
        "bands": array.shape[0],
        "header offset": 0,
        "file type": "ENVI Standard",
        "data type": dtype_code,
        "interleave": interleave,
        "byte order": 0,
    }
    hdr.write_text(format_header({**base, **fields}))
    return hdr


def _numpy_glt(cube: np.ndarray, gx: np.ndarray, gy: np.ndarray, fill: float) -> np.ndarray:
    """Independent application of a GLT (cube: bands, lines, samples; entries 1-based, 0 = none,
    negative = infill -> abs)."""
    out = np.full((cube.shape[0], *gx.shape), fill, dtype=cube.dtype)
    valid = (gx != 0) & (gy != 0)
    out[:, valid] = cube[:, np.abs(gy[valid]) - 1, np.abs(gx[valid]) - 1]
    return out


@pytest.fixture(scope="module")
def ng_style(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]:
    """A raw (sensor-geometry) ENVI cube + an AVIRIS-NG-style sign-coded GLT on a UTM grid."""
    d = tmp_path_factory.mktemp("ngglt")
    rng = np.random.default_rng(11)
    cube = rng.normal(10, 3, (BANDS, LINES, SAMPLES)).astype(np.float32)
    fl = flight_line(
        LINES,
        SAMPLES,
        pixel_m=5.0,
        heading_deg=-28.0,
        geographic=False,
        centre=(500000.0, 4200000.0),
        signed=True,
        seed=2,
    )
    gx, gy = fl.glt_x, fl.glt_y
    a, _, c, _, e, f = fl.transform
    cube_hdr = _write_envi(
        d / "ang20200101t000000_rdn_v1_img",
        cube,
        "bil",
        {"wavelength": [f"{400 + 50 * i}" for i in range(BANDS)]},
    )
    glt_hdr = _write_envi(
        d / "ang20200101t000000_rdn_v1_glt",
        np.stack([gx, gy]).astype(np.int32),
        "bip",
        {"map info": "{" + f"UTM, 1, 1, {c!r}, {f!r}, {a!r}, {-e!r}, 12, North, WGS-84" + "}"},
    )
    return cube_hdr, glt_hdr, cube, gx, gy


def test_sign_coded_glt_has_every_kind_of_entry(ng_style: tuple) -> None:
    _, _, _, gx, gy = ng_style
    assert (gx > 0).any() and (gx < 0).any() and (gx == 0).any()
    assert np.array_equal(gx == 0, gy == 0) and np.array_equal(gx < 0, gy < 0)
    # not a plain rotation: the roll/pitch wobble makes line spacing vary along track
    assert gx.max() <= SAMPLES and gy.max() <= LINES


@pytest.mark.parametrize("budget", [64 << 20, 4096])  # one read per window / many small sensor slabs
def test_envi_cube_with_signed_glt_is_exact(ng_style: tuple, tmp_path: Path, budget: int) -> None:
    cube_hdr, glt_hdr, cube, gx, gy = ng_style
    meta = attach_glt(read_scene(cube_hdr, source="envi"), glt_from_envi(glt_hdr))
    meta = replace(meta, nodata=FILL)
    out = tmp_path / "ortho.tif"
    write_cog_glt(meta, out, budget_bytes=budget)
    expected = _numpy_glt(cube, gx, gy, FILL)
    with rasterio.open(out) as ds:
        got = ds.read()
        assert ds.crs.to_epsg() == 32612
        assert ds.transform == Affine(*glt_from_envi(glt_hdr).transform)
        assert ds.nodata == FILL
    assert got.shape == expected.shape == (BANDS, *gx.shape)
    assert int((got != expected).sum()) == 0
    assert int((got == FILL).all(axis=0).sum()) == int((gx == 0).sum())


def test_infill_off_treats_negative_entries_as_empty(ng_style: tuple, tmp_path: Path) -> None:
    cube_hdr, glt_hdr, cube, gx, gy = ng_style
    meta = replace(
        attach_glt(read_scene(cube_hdr, source="envi"), glt_from_envi(glt_hdr, infill=False)), nodata=FILL
    )
    out = tmp_path / "ortho.tif"
    write_cog(meta, out)  # write_cog routes sensor-geometry scenes through the GLT
    keep = np.where(gx > 0, gx, 0), np.where(gy > 0, gy, 0)
    with rasterio.open(out) as ds:
        assert int((ds.read() != _numpy_glt(cube, *keep, FILL)).sum()) == 0


def test_rotated_glt_grid_is_resampled_north_up_by_exact_lookup(ng_style: tuple, tmp_path: Path) -> None:
    cube_hdr, glt_hdr, cube, gx, gy = ng_style
    ref = glt_from_envi(glt_hdr)
    rot = Affine(*ref.transform) @ Affine.rotation(30.0)  # the GLT grid rotated 30 degrees
    meta = replace(
        attach_glt(read_scene(cube_hdr, source="envi"), replace(ref, transform=tuple(rot)[:6])), nodata=FILL
    )
    out = tmp_path / "ortho.tif"
    write_cog(meta, out)
    with rasterio.open(out) as ds:
        got, dst = ds.read(), ds.transform
        assert dst.b == 0 and dst.d == 0
    # independent: every output pixel centre -> GLT cell (nearest) -> sensor pixel
    rows, cols = np.mgrid[0 : got.shape[1], 0 : got.shape[2]]
    x, y = dst @ (cols + 0.5, rows + 0.5)
    gc, gr = ~rot @ (x, y)
    gc, gr = np.floor(gc).astype(int), np.floor(gr).astype(int)
    inside = (gc >= 0) & (gc < gx.shape[1]) & (gr >= 0) & (gr < gx.shape[0])
    ex_x = np.zeros(got.shape[1:], dtype=np.int64)
    ex_y = np.zeros(got.shape[1:], dtype=np.int64)
    ex_x[inside], ex_y[inside] = gx[gr[inside], gc[inside]], gy[gr[inside], gc[inside]]
    assert int((got != _numpy_glt(cube, ex_x, ex_y, FILL)).sum()) == 0
    assert (got == FILL).all(axis=0).any() and (got != FILL).all(axis=0).any()


def test_glt_naming_pixels_outside_the_cube_is_refused(ng_style: tuple, tmp_path: Path) -> None:
    from hsi.errors import DataFileError

    cube_hdr, glt_hdr, *_ = ng_style
    meta = attach_glt(read_scene(cube_hdr, source="envi"), glt_from_envi(glt_hdr))
    small = replace(meta, layout=replace(meta.layout, height=LINES // 2, width=SAMPLES))
    (tmp_path / "short").write_bytes(
        cube_hdr.with_name(cube_hdr.name[:-4]).read_bytes()[: BANDS * SAMPLES * 4 * (LINES // 2)]
    )
    small = replace(small, layout=replace(small.layout, data_path=tmp_path / "short"))
    with pytest.raises(DataFileError, match="outside"):
        write_cog(small, tmp_path / "x.tif")


# ------------------------------------------------------------------------------------ EMIT-shaped
@pytest.fixture(scope="module")
def emit_rfl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("emit")
    nc = synthesize_emit(d, level="l2a", crosstrack=52, downtrack=64, seed=4)
    out = d / "cube.tif"
    write_cog(read_scene(nc), out)
    return nc, out


def test_emit_glt_orthorectification_is_exact(emit_rfl: tuple[Path, Path]) -> None:
    nc, cog = emit_rfl
    with h5py.File(nc, "r") as f:  # independent reader straight from the EMIT layout
        rfl = f["reflectance"][...]  # (downtrack, crosstrack, bands)
        gx, gy = f["location/glt_x"][...], f["location/glt_y"][...]
        fill = float(f["reflectance"].attrs["_FillValue"][0])
    expected = _numpy_glt(rfl.transpose(2, 0, 1), gx, gy, fill)
    with rasterio.open(cog) as ds:
        got = ds.read()
        assert ds.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND"
        assert ds.crs.to_epsg() == 4326
    assert int((got != expected).sum()) == 0
    assert (gx == 0).any() and int((got == fill).all(axis=0).sum()) >= int((gx == 0).sum())
    assert cog_validate(str(cog), quiet=True)[0]


def test_emit_cog_bands_match_the_granule(emit_rfl: tuple[Path, Path]) -> None:
    nc, cog = emit_rfl
    with h5py.File(nc, "r") as f:
        wl = f["sensor_band_parameters/wavelengths"][...]
        fw = f["sensor_band_parameters/fwhm"][...]
        good = f["sensor_band_parameters/good_wavelengths"][...]
        gt = f.attrs["geotransform"]
    with rasterio.open(cog) as ds:
        bands = bands_from_dataset(ds)
        assert ds.count == len(wl) == 285
        assert [b.center_wavelength for b in bands] == [float(w) for w in wl]
        assert [b.fwhm for b in bands] == [float(w) for w in fw]
        assert [b.good for b in bands] == [bool(g) for g in good]
        assert ds.transform.to_gdal() == pytest.approx(tuple(gt))
