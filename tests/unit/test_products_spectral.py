"""SAM, PCA and continuum removal against Spectral Python on a real Specim Fenix cube.

The cube (23 x 38 x 450, uint16, reflectance scale 65535, ignore value 0) comes from
napari-hippo 0.2.0 (MIT); see tests/data/products/fenix/ATTRIBUTION.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import spectral
from spectral.algorithms.continuum import spectral_continuum

from hsi.errors import ProductError
from hsi.products import compute_array, get_product, run_product
from hsi.products.spectral import continuum, load_reference_csv, resample_nearest
from hsi.products.testing import band_table, write_activated_cog

DATA = Path(__file__).resolve().parents[1] / "data"
CANDIDATES = [DATA / "napari_hippo_fenix.hdr", DATA / "products" / "fenix" / "image.hdr"]


@pytest.fixture(scope="module")
def fenix() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw uint16 cube (bands, lines, samples), reflectance (lines, samples, bands), wavelengths)."""
    hdr = next(p for p in CANDIDATES if p.exists())
    img = spectral.envi.open(str(hdr))  # spectral applies the reflectance scale factor itself
    wl = np.asarray(img.bands.centers, dtype=np.float64)
    cube = np.fromfile(hdr.with_suffix(".dat"), dtype="<u2").reshape(450, 38, 23)  # BSQ raw counts
    refl = np.asarray(img.load(), dtype=np.float64)  # (lines, samples, bands)
    np.testing.assert_allclose(refl, np.moveaxis(cube, 0, 2) / 65535.0, rtol=1e-6)
    refl[(cube == 0).any(axis=0)] = np.nan  # data ignore value -> pixel nodata
    return cube, refl, wl


@pytest.fixture(scope="module")
def fenix_cog(fenix, tmp_path_factory) -> Path:
    cube, _, wl = fenix
    path = tmp_path_factory.mktemp("fenix") / "fenix.tif"
    return write_activated_cog(
        path, band_table(wl, 3.36, scale=1 / 65535.0), cube, dtype="uint16", nodata=0, block=16
    )


def _valid(refl: np.ndarray) -> np.ndarray:
    return np.isfinite(refl).all(axis=2)


def test_continuum_equals_spectral_python(fenix) -> None:
    _, refl, wl = fenix
    ok = _valid(refl)
    spectra = refl[ok].astype(np.float64)
    ours = continuum(spectra, wl)
    ref = spectral_continuum(spectra, wl)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    removed = spectral.remove_continuum(spectra, wl)
    np.testing.assert_allclose(spectra / ours, removed, rtol=1e-9)


def test_continuum_depth_product_through_engine(fenix, fenix_cog, tmp_path) -> None:
    wl = fenix[2]
    res = run_product(
        get_product("continuum-depth"),
        str(fenix_cog),
        str(tmp_path / "cr.tif"),
        {"lo_nm": 2100, "hi_nm": 2400},
    )
    sel = (wl >= 2100) & (wl <= 2400)
    assert [b["index"] for b in res.selected_bands] == list(np.flatnonzero(sel) + 1)
    with rasterio.open(res.output_path) as ds:
        depth = ds.read(1)
        pos = ds.read(2)
    cube = fenix[0]
    # The cube's ignore-value zeros all sit below 400 nm: every pixel is valid in this window.
    assert (cube == 0).any() and (cube[sel] != 0).all()
    # reference: the same float32 physical values the engine computed on
    phys = np.moveaxis(cube[sel].astype(np.float32) * np.float32(1 / 65535.0), 0, 2).astype(np.float64)
    cr = spectral.remove_continuum(phys.reshape(-1, sel.sum()), wl[sel])
    np.testing.assert_allclose(depth.ravel(), 1.0 - cr.min(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pos.ravel(), wl[sel][cr.argmin(axis=1)], atol=1e-3)


def _refs_csv(path: Path, wl: np.ndarray, refl: np.ndarray) -> tuple[Path, np.ndarray]:
    members = np.stack([refl[5, 5], refl[20, 10], refl[30, 18]])
    lines = ["wavelength_nm,alpha,beta,gamma"] + [
        f"{w:.6f}," + ",".join(f"{v:.9f}" for v in members[:, i]) for i, w in enumerate(wl)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path, members


def test_sam_equals_spectral_python(fenix, fenix_cog, tmp_path) -> None:
    _, refl, wl = fenix
    csv_path, members = _refs_csv(tmp_path / "refs.csv", wl, refl)
    res = run_product(
        get_product("sam"), str(fenix_cog), str(tmp_path / "sam.tif"), {"references": str(csv_path)}
    )
    assert [b["name"] for b in res.output_bands] == ["angle_alpha", "angle_beta", "angle_gamma", "class"]
    with rasterio.open(res.output_path) as ds:
        out = ds.read()
    phys = np.round(refl * 65535).astype(np.float32) * np.float32(1 / 65535.0)
    ok = _valid(refl)
    ref = spectral.spectral_angles(np.where(ok[..., None], phys, 1.0).astype(np.float64), members)
    for c in range(3):
        np.testing.assert_allclose(out[c][ok], ref[..., c][ok], atol=2e-5)
    np.testing.assert_array_equal(out[3][ok], ref.argmin(axis=2)[ok] + 1)
    assert out[3][5, 5] == 1 and out[3][20, 10] == 2
    assert set(res.class_counts) == {"unclassified", "alpha", "beta", "gamma"}
    assert res.class_counts["unclassified"] == 0


def test_reference_resampling_is_nearest_without_bridging_gaps(tmp_path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("wavelength_nm,a,b\n500,0.1,0.5\n510,0.2,\n600,0.3,0.7\n")
    wl, names, vals = load_reference_csv(p)
    assert names == ["a", "b"] and vals.shape == (2, 3)
    out = resample_nearest(wl, vals, np.array([503.0, 508.0, 550.0, 598.0]), 10.0)
    np.testing.assert_array_equal(out[0, [0, 1, 3]], [0.1, 0.2, 0.3])
    assert np.isnan(out[0, 2])  # 550 nm is 40 nm from any sample: not interpolated
    assert out[1, 1] == 0.5 and out[1, 3] == 0.7  # empty cell skipped, nearest finite sample used
    with pytest.raises(ProductError, match="rows do not match"):
        bad = tmp_path / "bad.csv"
        bad.write_text("wavelength_nm,a\n500,1,2\n")
        load_reference_csv(bad)


def test_pca_two_pass_equals_spectral_python(fenix, fenix_cog, tmp_path) -> None:
    _, refl, wl = fenix
    ticks: list[tuple[int, int]] = []
    res = run_product(
        get_product("pca"),
        str(fenix_cog),
        str(tmp_path / "pca.tif"),
        {"n_components": 4},
        window_size=16,
        progress=lambda k, n: ticks.append((k, n)),
    )
    assert res.windows > 4 and ticks[-1] == (res.windows, res.windows)  # really windowed
    phys = (np.round(refl * 65535).astype(np.float32) * np.float32(1 / 65535.0)).astype(np.float64)
    ok = _valid(refl)
    pc = spectral.principal_components(phys[ok][None, :, :])
    np.testing.assert_allclose(res.fit_summary["eigenvalues"], pc.eigenvalues[:4], rtol=1e-5)
    ref = pc.reduce(num=4).transform(phys[ok])  # (n_valid, 4)
    with rasterio.open(res.output_path) as ds:
        out = ds.read()
    for c in range(4):
        ours = out[c][ok].astype(np.float64)
        sign = np.sign(np.dot(ours, ref[:, c]))
        np.testing.assert_allclose(sign * ours, ref[:, c], atol=1e-4 * np.abs(ref[:, c]).max())
    assert (out[:, ~ok] == -9999).all()


def test_pca_in_memory_path_matches(fenix) -> None:
    cube, refl, wl = fenix
    out = compute_array(
        get_product("pca"), cube, band_table(wl, 3.36, scale=1 / 65535.0), {"n_components": 2}, nodata=0
    )
    assert out.shape == (2, 38, 23) and (out[:, ~_valid(refl)] == -9999).all()
