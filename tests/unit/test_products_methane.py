"""ch4-mf: CH4 matched filter per column on a synthetic radiance scene with a known plume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from hsi.errors import ProductError
from hsi.products import compute_array, get_product, run_product
from hsi.products.methane import ch4_lut, ch4_unit_absorption, column_filters
from hsi.products.plumes import WindowedComponents
from hsi.products.testing import MethaneScene, band_table, write_activated_cog
from hsi.sources.synthetic import sensor_table

PEAK = 1500.0
H, W = 512, 32


@pytest.fixture(scope="module")
def scene() -> tuple[MethaneScene, np.ndarray, list]:
    t = sensor_table("aviris-ng")  # AVIRIS-NG L1B band centres and FWHM
    sel = (t.wavelength >= 2050) & (t.wavelength <= 2500)
    wl, fw = t.wavelength[sel], t.fwhm[sel]
    sc = MethaneScene(H, W, wl, fw, peak_ppm_m=PEAK, plume_center=(256.0, 16.0), plume_sigma_px=3.5, seed=1)
    return sc, sc.window(slice(0, H), slice(0, W)), band_table(list(wl), list(fw))


def test_unit_absorption_matches_mag1c_arithmetic() -> None:
    # mag1c's generate_template_from_bands, written out on the vendored table (same data, same steps)
    wave, rads, conc = ch4_lut()
    centers, fwhm = np.array([2150.0, 2250.0, 2300.0, 2350.0, 2400.0]), np.array([5.5, 5.6, 6.0, 5.6, 10.0])
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    resp = np.exp(-((wave[:, None] - centers[None, :]) ** 2) / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2)
    resp /= resp.sum(axis=0)
    lograd = np.log(rads @ resp)
    slope = np.linalg.lstsq(np.stack((np.ones_like(conc), conc)).T, lograd, rcond=None)[0][1]
    k = ch4_unit_absorption(centers, fwhm)
    np.testing.assert_allclose(k, -slope, rtol=1e-12)
    assert k[np.argmin(np.abs(centers - 2300))] > 5 * k[0] > 0  # CH4 absorbs most near 2.3 µm
    with pytest.raises(ValueError, match="outside the CH4 table"):
        ch4_unit_absorption([1500.0], [5.0])


def test_recovers_injected_plume_within_10_percent_and_zero_outside(scene) -> None:
    sc, cube, bands = scene
    out = compute_array(get_product("ch4-mf"), cube, bands, quantity="radiance")
    alpha, mask = out[0].astype(np.float64), out[1]
    truth = sc.enhancement(slice(0, H), slice(0, W))
    core, plume, outside = truth >= 0.5 * PEAK, truth >= 0.1 * PEAK, truth < 0.01 * PEAK
    assert abs(alpha[core].mean() / truth[core].mean() - 1.0) < 0.10
    assert abs(alpha[plume].mean() / truth[plume].mean() - 1.0) < 0.10
    assert np.median(np.abs(alpha[core] - truth[core])) < 0.10 * PEAK  # per pixel, noise included
    assert abs(alpha[outside].mean()) < 0.01 * PEAK  # ~0 background
    assert alpha[outside].std() < 0.12 * PEAK
    # plume mask: the plume, nothing else
    assert mask[truth < 0.1 * PEAK].sum() == 0
    assert mask[truth >= 600].mean() > 0.8


def test_plume_inside_statistics_is_excluded_on_the_second_pass(scene) -> None:
    sc, cube, bands = scene
    truth = sc.enhancement(slice(0, H), slice(0, W))
    core = truth >= 0.5 * PEAK
    single = compute_array(get_product("ch4-mf"), cube, bands, {"exclude_sigma": None}, quantity="radiance")
    robust = compute_array(get_product("ch4-mf"), cube, bands, quantity="radiance")
    r_single = single[0][core].mean() / truth[core].mean()
    r_robust = robust[0][core].mean() / truth[core].mean()
    assert r_single < 0.9 < r_robust  # the plume suppresses itself when it stays in the statistics


def test_streamed_cog_equals_in_memory_and_item_facts(scene, tmp_path: Path) -> None:
    sc, cube, bands = scene
    src = write_activated_cog(tmp_path / "rdn.tif", bands, cube, tags={"HSI_QUANTITY": "radiance"})
    dst = tmp_path / "ch4.tif"
    # 16-px windows: per-column statistics over 32 window rows, plume components across window borders
    res = run_product(get_product("ch4-mf"), str(src), str(dst), window_size=16)
    assert res.windows == (H // 16) * (W // 16)
    mem = compute_array(get_product("ch4-mf"), cube, bands, quantity="radiance")
    with rasterio.open(dst) as ds:
        alpha, mask = ds.read(1), ds.read(2)
        assert ds.tags()["HSI_PREVIEW_BAND"] == "1"
        assert ds.descriptions[0].startswith("ch4_ppm_m")
    np.testing.assert_allclose(alpha, mem[0], atol=0.05)
    np.testing.assert_array_equal(mask, mem[1])
    assert res.fit_summary is not None and res.fit_summary["plumes"] == 1
    plume = res.fit_summary["largest_plumes"][0]
    assert plume["pixels"] == int(mask.sum()) and plume["rows"][0] <= 256 <= plume["rows"][1]
    assert res.class_counts is not None and res.class_counts["plume"] == int(mask.sum())
    st = res.stats[0]
    assert st["valid"] == H * W and abs(st["mean"]) < 0.02 * PEAK
    props = res.stac_properties()
    assert props["hsi:fit"]["plumes"] == 1 and props["hsi:fit"]["units"] == "ppm m"
    details = json.loads(Path(res.sidecars["fit"]).read_text())
    assert len(details["bands"]) == len([b for b in bands if 2100 <= b.center_wavelength <= 2450])
    assert len(details["column_noise_ppm_m"]) == W


def test_refuses_what_is_not_radiance(scene, tmp_path: Path) -> None:
    _, cube, bands = scene
    p = get_product("ch4-mf")
    with pytest.raises(ProductError, match="needs radiance.*holds 'surface reflectance'"):
        compute_array(p, cube, bands, quantity="surface reflectance")
    small = cube[:, :8, :8]
    refl = write_activated_cog(tmp_path / "rfl.tif", bands, small, tags={"HSI_QUANTITY": "reflectance"})
    with pytest.raises(ProductError, match=r"ch4-mf' needs radiance, but cube .*rfl.tif holds 'reflectance'"):
        run_product(p, str(refl), str(tmp_path / "x.tif"))
    unknown = write_activated_cog(tmp_path / "unk.tif", bands, small)
    with pytest.raises(ProductError, match="does not say what it holds"):
        run_product(p, str(unknown), str(tmp_path / "y.tif"))
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "y.tif").exists()
    nofwhm = band_table([b.center_wavelength for b in bands], None)
    with pytest.raises(ProductError, match="needs each band's FWHM"):
        compute_array(p, cube, nofwhm, quantity="radiance")


def test_non_positive_pixels_are_nodata_and_left_out(scene) -> None:
    _, cube, bands = scene
    bad = cube.copy()
    bad[:, 10, 5] = 0.0  # fill
    bad[40, 20, 7] = -1.0  # one dead band
    out = compute_array(get_product("ch4-mf"), bad, bands, quantity="radiance")
    assert out[0, 10, 5] == -9999.0 and out[0, 20, 7] == -9999.0 and out[1, 20, 7] == -9999.0
    assert (out[0] != -9999.0).sum() == H * W - 2


@pytest.mark.parametrize("win", [7, 16, 33])
def test_components_joined_across_windows_equal_whole_image_labels(win: int) -> None:
    rng = np.random.default_rng(win)
    h, w = 70, 50
    cand = ndimage.binary_opening(rng.random((h, w)) < 0.45) | (rng.random((h, w)) < 0.05)
    alpha = rng.random((h, w)) * 100
    comps = WindowedComponents(w)
    for r in range(0, h, win):
        for c in range(0, w, win):
            comps.add(cand[r : r + win, c : c + win], alpha[r : r + win, c : c + win], r, c)
    keep, plumes = comps.resolve(min_pixels=5)
    lab, n = ndimage.label(cand, structure=np.ones((3, 3)))
    sizes = np.bincount(lab.ravel())[1:]
    expect = sorted((int(s) for s in sizes if s >= 5), reverse=True)
    assert [p["pixels"] for p in plumes] == expect
    big = next(p for p in plumes if p["pixels"] == expect[0])
    comp = lab == (np.argmax(sizes) + 1)
    assert big["max_ppm_m"] == pytest.approx(alpha[comp].max())
    assert big["sum_ppm_m_pixels"] == pytest.approx(alpha[comp].sum())


def test_pooled_statistics_for_short_columns() -> None:
    k = 4
    n = np.array([100, 3, 100])
    rng = np.random.default_rng(0)
    x = [rng.random((m, k)) + 1 for m in n]
    s1 = np.stack([xi.sum(0) for xi in x])
    s2 = np.stack([xi.T @ xi for xi in x])
    f, mu, sigma, pooled = column_filters(n, s1, s2, np.full(k, 1e-5), 0.0, True)
    assert pooled.tolist() == [False, True, False]
    np.testing.assert_allclose(mu[1], np.concatenate(x).mean(0))
    np.testing.assert_allclose(mu[0], x[0].mean(0))
    t = -mu * 1e-5
    np.testing.assert_allclose(np.einsum("wk,wk->w", f, t), 1.0)  # unit gain on the target
