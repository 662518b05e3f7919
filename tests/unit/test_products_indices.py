"""Spectral indices against independent references: spyndex itself and hand-computed formulas."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import spyndex

from hsi.products import compute_array, get_product, run_product
from hsi.products.indices import CONSTANT_OVERRIDES, spyndex_index_names
from hsi.products.testing import band_table, write_activated_cog

GRID = np.arange(380.0, 2511.0, 5.0)  # AVIRIS-NG-like sampling
RNG = np.random.default_rng(42)
CUBE = RNG.uniform(0.02, 0.6, size=(GRID.size, 4, 6)).astype(np.float32)
BANDS = band_table(GRID, 5.0)


def _nearest(wl: float) -> int:
    return int(np.argmin(np.abs(GRID - wl)))


def _spyndex_expected(name: str, cube: np.ndarray = CUBE) -> np.ndarray:
    """spyndex.computeIndex with band values chosen independently (window centre, nearest band)."""
    idx = spyndex.indices[name]
    params: dict[str, object] = {}
    for sym in idx.bands:
        if sym in spyndex.bands:
            b = spyndex.bands[sym]
            params[sym] = cube[_nearest((b.min_wavelength + b.max_wavelength) / 2)]
        elif sym.startswith("lambda"):
            b = spyndex.bands[sym[6:]]
            centre = (b.min_wavelength + b.max_wavelength) / 2
            params[sym] = float(GRID[_nearest(centre)]) if sym[6:] in idx.bands else centre
        else:  # spyndex's default unless the project overrides it (SAVI's L = 0.5, Huete 1988)
            params[sym] = CONSTANT_OVERRIDES.get((name, sym), (spyndex.constants[sym].default,))[0]
    with np.errstate(all="ignore"):
        return np.asarray(spyndex.computeIndex(name, params=params), dtype=np.float64)


def test_exposed_family_is_large_and_skips_unsupported() -> None:
    names = set(spyndex_index_names())
    assert len(names) > 200
    assert {"NDVI", "EVI", "SAVI", "NDII", "MSI", "FAI", "CRSWIR"} <= names
    assert "NIRvP" not in names  # PAR has no default
    assert not any(spyndex.indices[n].application_domain in ("radar", "kernel") for n in names)
    assert not any({"T", "T1", "T2"} & set(spyndex.indices[n].bands) for n in names)


@pytest.mark.parametrize("name", spyndex_index_names())
def test_every_spyndex_index_matches_spyndex(name: str) -> None:
    ours = compute_array(get_product(f"index:{name}"), CUBE, BANDS)[0].astype(np.float64)
    expected = _spyndex_expected(name)
    expected = np.broadcast_to(expected, ours.shape)
    finite = np.isfinite(expected) & (np.abs(expected) < 1e30)
    np.testing.assert_allclose(ours[finite], expected[finite], rtol=1e-5, atol=1e-5)
    assert np.all(ours[~finite] == -9999.0)


def test_spyndex_constants_are_parameters() -> None:
    savi = get_product("index:SAVI")
    got = compute_array(savi, CUBE, BANDS, {"L": 0.5})[0]
    n, r = CUBE[_nearest(830)], CUBE[_nearest(655)]
    np.testing.assert_allclose(got, 1.5 * (n - r) / (n + r + 0.5), rtol=1e-5)


@pytest.mark.parametrize("name", ["NDVI", "EVI", "FAI"])
def test_spyndex_through_engine_cog(tmp_path, name: str) -> None:
    src = write_activated_cog(
        tmp_path / "scene.tif",
        band_table(GRID, 5.0, scale=1e-4),
        np.round(CUBE * 1e4).astype("int16"),
        dtype="int16",
        nodata=-9999,
    )
    res = run_product(get_product(f"index:{name}"), str(src), str(tmp_path / "out.tif"))
    with rasterio.open(res.output_path) as ds:
        got = ds.read(1).astype(np.float64)
    phys = np.round(CUBE * 1e4).astype(np.float32) * np.float32(1e-4)
    expected = _spyndex_expected(name, phys)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert {b["input"] for b in res.selected_bands} == set(spyndex.indices[name].bands) & set(spyndex.bands)


# --- narrow-band indices: expected numbers computed by hand ----------------------------------
def _spectrum(values: dict[float, float], base: float = 0.2) -> tuple[np.ndarray, list]:
    spec = np.full(GRID.size, base, dtype=np.float32)
    for wl, v in values.items():
        spec[_nearest(wl)] = v
    return spec[:, None, None], BANDS


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("NDWI_GAO", {860: 0.5, 1240: 0.3}, 0.25),  # (0.5-0.3)/(0.8)
        ("PRI", {531: 0.06, 570: 0.04}, 0.2),  # (0.02)/(0.10); 531 -> band 530 nm
        ("REIP", {670: 0.04, 700: 0.08, 740: 0.40, 780: 0.50}, 723.75),  # 700+40*(0.27-0.08)/0.32
        ("CAI", {2000: 0.30, 2100: 0.25, 2200: 0.32}, 0.06),  # 0.5*(0.62)-0.25
        ("WBI", {900: 0.50, 970: 0.45}, 1.1111111),
        ("PSRI_NB", {500: 0.03, 680: 0.05, 750: 0.40}, 0.05),  # (0.05-0.03)/0.4
    ],
)
def test_narrow_band_indices_by_hand(name: str, values: dict, expected: float) -> None:
    cube, bands = _spectrum(values)
    got = compute_array(get_product(f"index:{name}"), cube, bands)[0, 0, 0]
    assert got == pytest.approx(expected, rel=1e-5)


def test_rgri_uses_window_means() -> None:
    spec = np.full(GRID.size, 0.3, dtype=np.float32)
    spec[(GRID >= 500) & (GRID < 600)] = 0.2  # green mean 0.2 ...
    spec[_nearest(550)] = 0.4  # ... except one band: mean over 20 bands = (19*0.2+0.4)/20 = 0.21
    spec[(GRID >= 600) & (GRID < 700)] = 0.105  # red mean 0.105
    got = compute_array(get_product("index:RGRI_NB"), spec[:, None, None], BANDS)[0, 0, 0]
    assert got == pytest.approx(0.105 / 0.21, rel=1e-5)


def test_reip_uses_actual_band_centres() -> None:
    grid = np.array([660.0, 672.0, 703.0, 736.0, 783.0, 800.0])
    spec = np.array([0.03, 0.04, 0.08, 0.40, 0.50, 0.5], dtype=np.float32)[:, None, None]
    got = compute_array(get_product("index:REIP"), spec, band_table(grid, 10.0))[0, 0, 0]
    # λ700 -> 703, λ740 -> 736: 703 + 33*(0.27-0.08)/(0.40-0.08)
    assert got == pytest.approx(703 + 33 * 0.19 / 0.32, rel=1e-6)


# --- Hydrocarbon Index and oil band depths ------------------------------------------------------
def test_hydrocarbon_index_by_hand_exact_bands() -> None:
    grid = np.array([1650, 1660, 1705, 1729, 1741, 1780, 2230, 2300, 2400], dtype=float)
    r = np.array([0.1, 0.1, 0.10, 0.08, 0.11, 0.1, 0.1, 0.1, 0.1], dtype=np.float32)[:, None, None]
    out = compute_array(get_product("oil-spill"), r, band_table(grid, 5.0))
    assert out[0, 0, 0] == pytest.approx(24 * 0.01 / 36 + 0.10 - 0.08, rel=1e-5)  # 0.0266667


def test_hydrocarbon_index_uses_selected_centres_and_depths() -> None:
    grid = np.arange(1600.0, 2500.0, 10.0)  # 10 nm sampling: A->1700, B->1730, C->1740
    spec = np.full(grid.size, 0.2, dtype=np.float32)
    at = {w: i for i, w in enumerate(grid)}
    spec[at[1700.0]], spec[at[1730.0]], spec[at[1740.0]] = 0.20, 0.17, 0.22
    # 1.73 µm continuum: shoulders 1660 (0.2) and 1780 (0.2) -> depth = 1 - 0.17/0.2 = 0.15
    # 2.3 µm feature: shoulders 2230 (0.2), 2400 (0.2); dip 0.16 at 2310 -> depth 0.2
    spec[at[2310.0]] = 0.16
    out = compute_array(get_product("oil-spill"), spec[:, None, None], band_table(grid, 10.0))[:, 0, 0]
    hi = (1730 - 1700) * (0.22 - 0.20) / (1740 - 1700) + 0.20 - 0.17  # 0.045
    np.testing.assert_allclose(out[:3], [hi, 0.15, 0.2], rtol=1e-5)
    assert out[3] == 1.0  # HI > 0 and depth >= 0.01
    no_oil = compute_array(
        get_product("oil-spill"), spec[:, None, None], band_table(grid, 10.0), {"hi_threshold": 0.05}
    )
    assert no_oil[3, 0, 0] == 0.0


def test_sloped_continuum_depth() -> None:
    from hsi.products.oil import linear_continuum_depth

    left, right = np.array([[0.1]], np.float32), np.array([[0.3]], np.float32)
    feat = np.array([[[0.15]], [[0.1]]], np.float32)  # at 1700 (Rc .1667) and 1730 (Rc .2)
    d = linear_continuum_depth(left, right, feat, 1660.0, 1780.0, np.array([1700.0, 1730.0]))
    # Rc(1700) = 0.1 + 0.2*40/120 = 0.16667 -> 0.1; Rc(1730) = 0.1 + 0.2*70/120 = 0.21667 -> 0.53846
    assert d[0, 0] == pytest.approx(1 - 0.1 / (0.1 + 0.2 * 70 / 120), rel=1e-5)


def test_catalogue_read_from_spyndex_data_matches_spyndex() -> None:
    """The tables read without importing spyndex (fast `hsi products`) are spyndex's own."""
    from hsi.products.indices import _catalogue

    cat = _catalogue()
    assert cat.version == spyndex.__version__
    assert set(cat.indices) == set(spyndex.indices)
    for name, idx in spyndex.indices.items():
        mine = cat.indices[name]
        for attr in ("bands", "formula", "long_name", "reference", "application_domain"):
            assert getattr(mine, attr) == getattr(idx, attr), (name, attr)
    assert set(cat.bands) == set(spyndex.bands)
    for sym, b in spyndex.bands.items():
        assert (cat.bands[sym].min_wavelength, cat.bands[sym].max_wavelength) == (
            b.min_wavelength,
            b.max_wavelength,
        )
    assert {k: c.default for k, c in cat.constants.items()} == {
        k: c.default for k, c in spyndex.constants.items()
    }
