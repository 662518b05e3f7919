"""The analysis-ready COG: layout, band metadata, pixel values and rotated grids, checked against
independent readers (GDAL's own ENVI driver, numpy on the raw bytes, rio-cogeo's validator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate

from hsi.cog import CogProfile, write_cog, write_quicklook
from hsi.scene import bands_from_dataset
from hsi.sources import read_scene
from hsi.sources.envi import read_header
from hsi.sources.synthetic import synthesize


def _source_values(hdr: Path, band: int, row: int, col: int) -> float:
    """Raw value through GDAL's ENVI driver (an independent reader of the same file)."""
    with rasterio.open(read_scene(hdr).layout.data_path) as ds:
        return float(ds.read(band, window=((row, row + 1), (col, col + 1)))[0, 0])


@pytest.fixture(scope="module")
def ng_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ng")
    hdr = synthesize(d, source="aviris-ng", level="l2", width=70, height=90, seed=3)
    cog = d / "out" / "cube.tif"
    write_cog(read_scene(hdr), cog)
    return hdr, cog


def test_cog_is_valid_and_band_interleaved(ng_scene: tuple[Path, Path]) -> None:
    _, cog = ng_scene
    valid, errors, _warnings = cog_validate(str(cog), quiet=True)
    assert valid, errors
    with rasterio.open(cog) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND"
        assert ds.profile["tiled"]
        assert ds.compression.name.lower() == "zstd"


def test_band_metadata_equals_header(ng_scene: tuple[Path, Path]) -> None:
    hdr, cog = ng_scene
    header = read_header(hdr)
    with rasterio.open(cog) as ds:
        assert ds.count == header.bands == 425
        assert ds.dtypes[0] == "float32"
        assert ds.nodata == -9999.0
        bands = bands_from_dataset(ds)
        assert [b.center_wavelength for b in bands] == pytest.approx(list(header.wavelength_nm))
        assert [b.fwhm for b in bands] == pytest.approx(list(header.fwhm_nm))
        bbl = header.bbl
        assert bbl is not None
        assert [b.good for b in bands] == [bool(v) for v in bbl]
        assert ds.descriptions[99].startswith("b100 ")
        # GDAL's standard IMAGERY domain is written too (micrometres)
        assert float(ds.tags(100, ns="IMAGERY")["CENTRAL_WAVELENGTH_UM"]) == pytest.approx(
            header.wavelength_nm[99] / 1000
        )


def test_pixels_equal_source_at_sampled_locations(ng_scene: tuple[Path, Path]) -> None:
    hdr, cog = ng_scene
    rng = np.random.default_rng(0)
    with rasterio.open(cog) as ds:
        for _ in range(25):
            b, r, c = int(rng.integers(1, 426)), int(rng.integers(0, 90)), int(rng.integers(0, 70))
            got = float(ds.read(b, window=((r, r + 1), (c, c + 1)))[0, 0])
            assert got == _source_values(hdr, b, r, c)


def test_classic_int16_big_endian_bip_keeps_gains_as_scales(tmp_path: Path) -> None:
    hdr = synthesize(tmp_path, source="aviris-classic", level="l1b", width=40, height=50, seed=5)
    meta = read_scene(hdr)
    assert meta.layout.byte_order == "big" and meta.layout.interleave == "bip"
    gain_file = next(tmp_path.glob("*.gain"))
    gains = np.loadtxt(gain_file, usecols=0)  # independent parse of the .gain file: one gain per channel
    info = write_cog(meta, tmp_path / "c.tif")
    assert info.dtype == "int16"
    raw = np.fromfile(meta.layout.data_path, dtype=">i2").reshape(50, 40, 224)  # BIP: line, sample, band
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.scales == pytest.approx(tuple(1.0 / gains))
        for b, r, c in [(1, 0, 0), (33, 10, 20), (120, 49, 39), (224, 25, 3)]:
            v = ds.read(b, window=((r, r + 1), (c, c + 1)))[0, 0]
            assert v == raw[r, c, b - 1]
            assert v * ds.scales[b - 1] == pytest.approx(raw[r, c, b - 1] / gains[b - 1])
        # non-monotonic wavelengths are kept in sensor order
        wl = [b.center_wavelength for b in bands_from_dataset(ds)]
        assert wl == pytest.approx([b.center_wavelength for b in meta.bands])
        assert any(w1 < w0 for w0, w1 in zip(wl, wl[1:], strict=False))


def test_rotated_grid_lands_north_up_with_right_corners_and_nodata_fill(tmp_path: Path) -> None:
    hdr = synthesize(tmp_path, source="aviris-ng", level="l2", width=60, height=80, rotation_deg=42, seed=9)
    meta = read_scene(hdr)
    with rasterio.open(meta.layout.data_path) as src:  # GDAL's reading of the rotated map info
        src_t, w, h = src.transform, src.width, src.height
    assert abs(src_t.b) > 0 and abs(src_t.d) > 0
    info = write_cog(meta, tmp_path / "r.tif")
    with rasterio.open(tmp_path / "r.tif") as ds:
        t = ds.transform
        assert t.b == 0 and t.d == 0 and t.e < 0  # north-up
        res = np.hypot(src_t.a, src_t.d)
        assert t.a == pytest.approx(res) and -t.e == pytest.approx(res)
        corners = [src_t @ (c, r) for c, r in ((0, 0), (w, 0), (w, h), (0, h))]
        xs, ys = zip(*corners, strict=True)
        left, bottom, right, top = ds.bounds
        assert left == pytest.approx(min(xs)) and top == pytest.approx(max(ys))
        assert right >= max(xs) - 1e-6 and right - max(xs) < res
        assert bottom <= min(ys) + 1e-6 and min(ys) - bottom < res
        # outside the rotated swath: nodata; every source pixel centre maps to its own value
        full = ds.read(50)
        assert full[0, 0] == ds.nodata == -9999.0
        assert full[-1, -1] == -9999.0
        inv = ~t
        for r, c in [(0, 0), (10, 30), (79, 59), (40, 1)]:
            x, y = src_t @ (c + 0.5, r + 0.5)
            oc, orow = inv @ (x, y)
            assert full[int(orow), int(oc)] == _source_values(hdr, 50, r, c)
        with rasterio.open(meta.layout.data_path) as src:
            src_valid = int((src.read(50) != -9999.0).sum())
        valid = int((full != ds.nodata).sum())
        assert valid == pytest.approx(src_valid, rel=0.03)  # no silent loss of pixels (nearest resampling)
    assert info.footprint["type"] == "Polygon"


def test_quicklook_carries_the_pyramid(ng_scene: tuple[Path, Path], tmp_path: Path) -> None:
    _, cog = ng_scene
    idx = write_quicklook(cog, tmp_path / "rgb.tif", tmp_path / "ql.png", png_size=32)
    with rasterio.open(cog) as ds:
        wl = [b.center_wavelength for b in bands_from_dataset(ds)]
    assert [round(wl[i - 1] / 10) * 10 for i in idx] == pytest.approx([640, 550, 460], abs=10)
    with rasterio.open(tmp_path / "rgb.tif") as rgb:
        assert rgb.count == 3 and rgb.dtypes[0] == "uint8"
        assert cog_validate(str(tmp_path / "rgb.tif"), quiet=True)[0]
    with rasterio.open(tmp_path / "ql.png") as png:
        assert max(png.width, png.height) <= 32
        assert png.read().max() > 0


def test_profile_overviews_on_demand(tmp_path: Path) -> None:
    hdr = synthesize(tmp_path, source="aviris-ng", level="l2", width=300, height=300, seed=1)
    write_cog(read_scene(hdr), tmp_path / "o.tif", CogProfile(overview_level=1, blocksize=128))
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.overviews(1) == [2]
        assert ds.block_shapes[0] == (128, 128)
    assert cog_validate(str(tmp_path / "o.tif"), quiet=True)[0]


def test_no_partial_cog_left_on_failure(tmp_path: Path) -> None:
    hdr = synthesize(tmp_path, source="aviris-ng", level="l2", width=20, height=20, seed=2)
    meta = read_scene(hdr)
    Path(meta.layout.data_path).write_bytes(Path(meta.layout.data_path).read_bytes()[:1000])
    from hsi.errors import DataFileError

    with pytest.raises(DataFileError, match="truncated"):
        write_cog(meta, tmp_path / "x" / "t.tif")
    assert not list((tmp_path / "x").glob("*")) if (tmp_path / "x").exists() else True


def test_unrotated_transform_is_kept(ng_scene: tuple[Path, Path]) -> None:
    hdr, cog = ng_scene
    with rasterio.open(read_scene(hdr).layout.data_path) as src, rasterio.open(cog) as ds:
        assert ds.transform.almost_equals(src.transform)
        assert ds.crs == src.crs
        assert isinstance(ds.transform, Affine)
