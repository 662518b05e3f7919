"""Synthetic scenes: exact sensor formats (checked through GDAL), plausible spectra, determinism, streaming."""

from __future__ import annotations

import hashlib
import json
import tracemalloc

import numpy as np
import pytest
import rasterio

from hsi.sources import read_scene
from hsi.sources.envi import read_header
from hsi.sources.synthetic import CLASSES, synthesize

HEALTHY, STRESSED, DEAD, SOIL, WATER, OIL = range(6)


def _band(wl: np.ndarray, nm: float) -> int:
    return int(np.argmin(np.abs(wl - nm)))  # never searchsorted: Classic is not monotonic


def _cube(meta) -> np.ndarray:
    with rasterio.open(meta.layout.data_path) as ds:
        raw = ds.read().astype(np.float64)  # (band, y, x)
    scale = np.array([b.scale for b in meta.bands])[:, None, None]
    return raw * scale


@pytest.fixture(scope="module")
def ng_l2(tmp_path_factory):
    hdr = synthesize(
        tmp_path_factory.mktemp("ng"),
        source="aviris-ng",
        level="l2",
        width=80,
        height=90,
        seed=7,
        truth=True,
        rotation_deg=42.0,
    )
    return hdr, read_scene(hdr)


def test_ng_format_through_gdal(ng_l2):
    hdr, meta = ng_l2
    assert hdr.name == "ang20240101t000700_rfl_v2p9_img.hdr"
    h = read_header(hdr)
    for field in (
        "description",
        "file_type",
        "map_info",
        "wavelength_units",
        "wavelength",
        "bbl",
        "fwhm",
        "data_ignore_value",
    ):
        assert getattr(h, field) is not None, field
    assert h.map_info.rotation_deg == 42.0 and h.map_info.zone == 11
    with rasterio.open(meta.layout.data_path) as ds:
        assert ds.count == 425 and ds.dtypes[0] == "float32" and ds.nodata == -9999
        assert ds.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "LINE"
        assert meta.transform == pytest.approx(tuple(ds.transform)[:6])
    assert meta.layout.byte_order == "little" and meta.is_rotated
    wl = np.array(meta.wavelengths)
    assert wl[0] == pytest.approx(376.7, abs=0.5) and wl[-1] == pytest.approx(2500, abs=1.5)
    assert np.diff(wl).mean() == pytest.approx(5.01, abs=0.01)
    assert np.mean([b.fwhm for b in meta.bands]) == pytest.approx(5.5, abs=0.2)
    assert not meta.bands[0].good and not meta.bands[_band(wl, 1400)].good and meta.bands[_band(wl, 800)].good


def test_ng_rotated_fill_and_truth(ng_l2):
    hdr, meta = ng_l2
    truth = np.load(hdr.with_name(hdr.name[:-4] + "_truth.npy"))
    info = json.loads(hdr.with_name(hdr.name[:-4] + "_truth.json").read_text())
    assert info["classes"] == list(CLASSES) and truth.shape == (90, 80)
    cube = _cube(meta)
    fill = truth == 255
    assert fill[0, 0] or fill[0, -1]  # a corner outside the swath
    assert 0.05 < fill.mean() < 0.5
    assert np.all(cube[:, fill] == -9999) and not np.any(cube[:, ~fill] == -9999)
    present = set(np.unique(truth[~fill]).tolist())
    assert {WATER, OIL} & present and {HEALTHY, SOIL} & present


def test_ng_spectral_features(ng_l2):
    hdr, meta = ng_l2
    truth = np.load(hdr.with_name(hdr.name[:-4] + "_truth.npy"))
    cube = _cube(meta)
    wl = np.array(meta.wavelengths)
    r = {nm: cube[_band(wl, nm)] for nm in (670, 800, 1705, 1729, 1741)}
    ndvi = (r[800] - r[670]) / (r[800] + r[670])
    veg = truth == HEALTHY
    assert veg.sum() > 20 and np.median(ndvi[veg]) > 0.75 and np.mean(ndvi[veg] > 0.6) > 0.98
    la, lb, lc = (wl[_band(wl, nm)] for nm in (1705, 1729, 1741))
    hi = (lb - la) * (r[1741] - r[1705]) / (lc - la) + r[1705] - r[1729]
    oil, water = truth == OIL, truth == WATER
    if oil.sum() and water.sum():
        assert np.median(hi[oil]) > np.median(hi[water]) + 0.005
    # coherent patches: most pixels share their class with their right neighbour
    valid = (truth[:, 1:] != 255) & (truth[:, :-1] != 255)
    assert np.mean(truth[:, 1:][valid] == truth[:, :-1][valid]) > 0.85


def test_oil_deeper_1730_than_water_always_present(tmp_path):
    for seed in range(3):
        hdr = synthesize(tmp_path, width=60, height=60, seed=seed, truth=True)
        truth = np.load(hdr.with_name(hdr.name[:-4] + "_truth.npy"))
        if (truth == OIL).any() and (truth == WATER).any():
            break
    meta = read_scene(hdr)
    cube, wl = _cube(meta), np.array(meta.wavelengths)
    # continuum-removed (absolute) depth of the 1730 nm C-H feature; water is dark and featureless
    depth = 0.5 * (cube[_band(wl, 1690)] + cube[_band(wl, 1790)]) - cube[_band(wl, 1730)]
    oil, water = np.median(depth[truth == OIL]), np.median(depth[truth == WATER])
    assert oil > 0.01 and oil > water + 0.01


def test_ng_radiance(tmp_path):
    hdr = synthesize(tmp_path, source="aviris-ng", level="l1b", width=20, height=10, seed=1)
    meta = read_scene(hdr)
    assert hdr.name == "ang20240101t000100_rdn_v2p9_img.hdr"
    assert meta.level == "l1b" and meta.units == "uW nm-1 cm-2 sr-1"
    cube, wl = _cube(meta), np.array(meta.wavelengths)
    assert 1 < np.median(cube[_band(wl, 550)]) < 40  # plausible uW nm-1 cm-2 sr-1
    assert np.median(cube[_band(wl, 1380)]) < 0.2 * np.median(cube[_band(wl, 1250)])  # water vapour


@pytest.mark.parametrize("level", ["l1b", "l2"])
def test_classic_format_through_gdal(tmp_path, level):
    hdr = synthesize(tmp_path, source="aviris-classic", level=level, width=30, height=20, seed=2, truth=True)
    meta = read_scene(hdr)
    # the radiance is named as delivered, scene 1 of the line (..rdn_e_sc01_ort_img): its own item
    scene = "f240101t01p00r03-sc01" if level == "l1b" else "f240101t01p00r03"
    assert meta.source == "aviris-classic" and meta.scene_id == scene and meta.level == level
    with rasterio.open(meta.layout.data_path) as ds:
        assert ds.count == 224 and ds.dtypes[0] == "int16"
        assert ds.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "PIXEL"
    assert meta.layout.byte_order == "big" and meta.layout.interleave == "bip"
    wl = np.array(meta.wavelengths)
    assert np.any(np.diff(wl) < 0) and wl[32] < wl[31]  # overlapping spectrometers, sensor order
    assert len(set(b.fwhm for b in meta.bands)) > 10
    spc = hdr.parent / ("f240101t01p00r03rdn_e.spc" if level == "l1b" else "f240101t01p00r03_refl.spc")
    assert len(spc.read_text().splitlines()) == 224
    truth = np.load(hdr.with_name(hdr.name[:-4] + "_truth.npy"))
    cube = _cube(meta)
    if level == "l2":
        assert meta.bands[0].scale == pytest.approx(1e-4)
        veg = truth == HEALTHY
        if veg.any():
            ndvi = (cube[_band(wl, 800)] - cube[_band(wl, 670)]) / (
                cube[_band(wl, 800)] + cube[_band(wl, 670)]
            )
            assert np.median(ndvi[veg]) > 0.6
    else:
        assert meta.bands[0].scale == pytest.approx(1 / 300) and meta.bands[-1].scale == pytest.approx(
            1 / 2400
        )
        assert 1 < np.median(cube[_band(wl, 550)]) < 40


def test_classic_spc_used_when_header_lacks_wavelengths(tmp_path):
    hdr = synthesize(tmp_path, source="aviris-classic", level="l1b", width=4, height=3, seed=0)
    with_wl = read_scene(hdr)
    text = hdr.read_text()
    kept = [
        ln
        for ln in text.split("\n")
        if ln.startswith(
            (
                "ENVI",
                "description",
                "samples",
                "lines",
                "bands",
                "header offset",
                "file type",
                "data type",
                "interleave",
                "byte order",
                "map info",
            )
        )
    ]
    hdr.write_text("\n".join(kept) + "\n")
    meta = read_scene(hdr)
    assert meta.wavelengths == pytest.approx(with_wl.wavelengths)
    assert [b.fwhm for b in meta.bands] == pytest.approx([b.fwhm for b in with_wl.bands])
    assert meta.extra["spc file"].endswith(".spc")


def test_deterministic_by_seed(tmp_path):
    def digest(seed: int, sub: str) -> str:
        hdr = synthesize(tmp_path / sub, width=16, height=12, seed=seed, rotation_deg=10.0)
        data = hdr.with_name(hdr.name[:-4])
        return hashlib.sha256(data.read_bytes() + hdr.read_bytes()).hexdigest()

    assert digest(3, "a") == digest(3, "b")
    assert digest(3, "c") != digest(4, "d")


def test_progress_and_streaming_memory(tmp_path):
    calls: list[tuple[int, int]] = []
    tracemalloc.start()
    try:
        hdr = synthesize(tmp_path, width=160, height=900, seed=0, progress=lambda d, t: calls.append((d, t)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = hdr.with_name(hdr.name[:-4]).stat().st_size
    assert size == 160 * 900 * 425 * 4  # ~245 MB written
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB cube"
    assert calls[-1] == (900, 900) and len(calls) > 5
    assert all(b[0] > a[0] for a, b in zip(calls, calls[1:], strict=False))


def test_bad_parameters(tmp_path):
    from hsi.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="emit"):
        synthesize(tmp_path, source="emit")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not a valid"):
        synthesize(tmp_path, scene_id="f240101t01p00r01")
