"""Tree-mortality classes on synthetic pixels built from simple, documented spectral shapes."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from hsi.products import compute_array, get_product, run_product
from hsi.products.testing import band_table, write_activated_cog

WL = np.arange(400.0, 2501.0, 10.0)


def _gauss(centre: float, width: float, depth: float) -> np.ndarray:
    return depth * np.exp(-0.5 * ((WL - centre) / width) ** 2)


def healthy() -> np.ndarray:
    """Green canopy: dark red (chlorophyll), red edge to a 0.45 NIR plateau, deep liquid-water
    absorptions at 970/1200/1450/1940 nm, SWIR falling with water; no visible cellulose feature."""
    r = np.where(WL < 700, 0.05, 0.05 + 0.40 / (1 + np.exp(-(WL - 720) / 12)))
    r = r + _gauss(550, 30, 0.04) - _gauss(1200, 60, 0.10) - _gauss(970, 30, 0.03)
    swir = WL > 1300
    r[swir] = 0.30 - 0.10 * (WL[swir] - 1300) / 1200 - _gauss(1940, 60, 0.15)[swir]
    return r


def dead() -> np.ndarray:
    """Grey/red-stage dead crown: high visible, weak red edge (NDVI ~0.2), dry SWIR (high, no
    liquid water) with the 2100 nm cellulose/lignin absorption (CAI ~ +0.05)."""
    r = 0.12 + 0.10 * (WL - 400) / 400
    r = np.where(WL >= 780, 0.30 + 0.05 * (WL - 780) / 1720, r)
    return r - _gauss(2100, 40, 0.05)


def soil() -> np.ndarray:
    """Bright bare soil: smooth monotonic ramp (NDVI ~0.08) with a clay 2200 nm dip (CAI < 0)."""
    return 0.10 + 0.25 * (WL - 400) / 2100 - _gauss(2200, 25, 0.04)


def stressed() -> np.ndarray:
    """Green but drying: healthy shape with NIR reduced and little liquid water (NDWI < 0.02)."""
    r = healthy()
    r = r + _gauss(1200, 60, 0.10)  # water absorption gone
    r[WL > 1200] += 0.02
    return r


def _cube() -> np.ndarray:
    px = [healthy(), dead(), soil(), stressed()]
    return np.stack(px, axis=1)[:, None, :].astype(np.float32)  # (bands, 1, 4)


def _ndvi_ndwi_cai(r: np.ndarray) -> tuple[float, float, float]:
    at = {w: v for w, v in zip(WL, r, strict=True)}
    ndvi = (at[800] - at[670]) / (at[800] + at[670])
    ndwi = (at[860] - at[1240]) / (at[860] + at[1240])
    cai = 0.5 * (at[2000] + at[2200]) - at[2100]
    return ndvi, ndwi, cai


def test_synthetic_spectra_have_the_documented_index_ranges() -> None:
    h, d, s, st = (_ndvi_ndwi_cai(f()) for f in (healthy, dead, soil, stressed))
    assert h[0] > 0.6 and h[1] > 0.02 and h[2] < 0.02
    assert 0.15 < d[0] < 0.3 and d[2] > 0.02
    assert 0.0 < s[0] < 0.1
    assert s[0] < 0.3 and s[2] < 0.0
    assert st[0] > 0.6 and st[1] < 0.02


def test_classes_on_synthetic_pixels() -> None:
    out = compute_array(get_product("tree-mortality"), _cube(), band_table(WL, 10.0))
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [1, 3, 0, 2]  # healthy, dead, non-vegetation, stressed


def test_thresholds_are_parameters() -> None:
    out = compute_array(
        get_product("tree-mortality"),
        _cube(),
        band_table(WL, 10.0),
        {"cai_dead": 0.5, "ndvi_vegetation": 0.1},
    )
    assert out[0, 0].tolist() == [1, 2, 0, 2]  # dead no longer recognised -> stressed (ndvi ~0.23 >= 0.1)


def test_engine_class_fractions_and_nodata(tmp_path) -> None:
    cube = np.tile(_cube(), (1, 8, 4))  # 8 x 16: columns cycle healthy, dead, soil, stressed
    cube[:, 0, 0] = -9999.0  # one nodata pixel
    src = write_activated_cog(tmp_path / "s.tif", band_table(WL, 10.0), cube)
    res = run_product(get_product("tree-mortality"), str(src), str(tmp_path / "m.tif"))
    assert res.class_counts == {"non-vegetation": 32, "healthy": 31, "stressed": 32, "dead": 32}
    assert sum(res.class_fractions.values()) == pytest.approx(1.0)
    assert res.class_fractions["healthy"] == pytest.approx(31 / 127)
    props = res.stac_properties()
    assert props["hsi:class_fractions"] == res.class_fractions
    with rasterio.open(res.output_path) as ds:
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8"
        assert ds.read(1)[0, 0] == 255
