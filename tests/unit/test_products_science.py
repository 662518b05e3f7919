"""Science defects of issue 13: input-file keys, saved PCA model, physical-range masks, SAVI's L,
PRI's sign convention, tree-mortality's limits and forest mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from hsi.errors import InvalidInputError, ProductError
from hsi.production import input_file_refs
from hsi.products import compute_array, get_product, run_product
from hsi.products.testing import band_table, write_activated_cog
from hsi.stac.provenance import InputRef, derivation_key
from hsi_pipeline.cli.products import app

NODATA = -9999.0


def _show(name: str) -> str:
    res = CliRunner().invoke(app, ["show", name])
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())  # unwrap


# --- 1. every input file's content checksum is in the product key --------------------------------
def test_input_file_content_changes_the_key_at_the_same_path(tmp_path: Path) -> None:
    sam = get_product("sam")
    refs = tmp_path / "refs.csv"
    refs.write_text("wavelength_nm,grass\n500,0.05\n800,0.4\n")
    p = sam.parse_params({"references": str(refs)})
    assert sam.input_files(p) == {"references": str(refs)}
    cube = InputRef("aviris-ng-l2", "scene", checksums={"cube": "1220ab"})

    def key() -> str:
        return derivation_key(
            [cube, *input_file_refs(sam.input_files(p))], sam.name, sam.version, p.model_dump()
        )

    k1 = key()
    assert key() == k1  # same content, same key
    refs.write_text("wavelength_nm,grass\n500,0.05\n800,0.5\n")  # same path, new spectra
    k2 = key()
    assert k2 != k1
    (ref,) = input_file_refs(sam.input_files(p))
    assert (
        ref.collection == "file"
        and ref.id == f"references:{refs}"
        and ref.checksums["file"].startswith("1220")
    )
    refs.unlink()
    with pytest.raises(InvalidInputError, match="parameter 'references': cannot read input file"):
        input_file_refs(sam.input_files(p))
    tm = get_product("tree-mortality")
    assert tm.input_files(tm.parse_params({})) == {}
    assert tm.input_files(tm.parse_params({"forest_mask": "/m.tif"})) == {"forest_mask": "/m.tif"}


# --- 2. PCA keeps its fitted model --------------------------------------------------------------
def test_pca_saves_eigenvalues_variance_loadings_and_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wl = np.linspace(450, 2400, 12)
    base = rng.random((3, 12))
    cube = (np.einsum("ck,chw->khw", base, rng.random((3, 40, 40))) + 0.01 * rng.random((12, 40, 40))).astype(
        np.float32
    )
    bands = band_table(list(wl), 10.0)
    src = write_activated_cog(tmp_path / "cube.tif", bands, cube, block=16)
    res = run_product(
        get_product("pca"), str(src), str(tmp_path / "pca.tif"), {"n_components": 3}, window_size=16
    )
    s = res.stac_properties()["hsi:fit"]
    assert s["method"] == "pca" and s["nsamples"] == 1600 and s["n_bands"] == 12
    assert len(s["eigenvalues"]) == 3 and s["eigenvalues"][0] >= s["eigenvalues"][1] >= s["eigenvalues"][2]
    assert 0.99 < s["cumulative_explained_variance"] <= 1.0  # three mixed sources
    d = json.loads(Path(res.sidecars["fit"]).read_text())
    assert [b["index"] for b in d["bands"]] == list(range(1, 13))
    loadings, mean = np.array(d["loadings"]), np.array(d["mean"])
    assert loadings.shape == (12, 3) and len(d["eigenvalues_all"]) == 12
    np.testing.assert_allclose(sum(d["explained_variance_ratio_all"]), 1.0)
    # reproduce the written components from the JSON alone
    x = cube.reshape(12, -1).T.astype(np.float64)
    with rasterio.open(res.output_path) as ds:
        pcs = ds.read().reshape(3, -1).T
    np.testing.assert_allclose(pcs, (x - mean) @ loadings, rtol=1e-4, atol=1e-5)


# --- 3. physically impossible values are nodata ---------------------------------------------------
def _oil_cube(spectra: list[np.ndarray], wl: np.ndarray) -> np.ndarray:
    return np.stack(spectra, axis=1)[:, :, None].astype(np.float32)  # (bands, n, 1)


def test_oil_band_depths_outside_0_1_or_over_dark_continuum_are_nodata() -> None:
    wl = np.arange(1600.0, 2451.0, 5.0)
    bands = band_table(list(wl), 5.0)
    flat = np.full(wl.size, 0.3)
    oil = flat * (1 - 0.3 * np.exp(-((wl - 1730) ** 2) / 200) - 0.2 * np.exp(-((wl - 2310) ** 2) / 300))
    dark = np.full(wl.size, 0.002)  # dark water: shoulders ~0, the ratio is noise
    dark[(wl > 1700) & (wl < 1760)] = -0.03  # a negative sample: depth > 1 before
    bump = flat * (1 + 0.2 * np.exp(-((wl - 1730) ** 2) / 200))  # above its continuum: depth < 0
    out = compute_array(get_product("oil-spill"), _oil_cube([oil, dark, bump], wl), bands)
    hi, d1730, d2300, mask = out[:, :, 0]
    assert 0.25 < d1730[0] < 0.31 and 0.15 < d2300[0] < 0.21 and mask[0] == 1
    assert d1730[1] == NODATA and d2300[1] == NODATA and mask[1] == 0  # dark: denominator near zero
    assert d1730[2] == NODATA and mask[2] == 0  # negative depth: no absorption
    assert np.isfinite(hi).all() and (hi != NODATA).all()  # HI has no denominator: always published
    assert "min_continuum" in _show("oil-spill") and "outside [0, 1]" in _show("oil-spill")


def test_continuum_depth_masks_dark_and_negative_spectra() -> None:
    wl = np.arange(2100.0, 2401.0, 10.0)
    bands = band_table(list(wl), 10.0)
    good = 0.4 * (1 - 0.25 * np.exp(-((wl - 2200) ** 2) / 400))
    dark = np.full(wl.size, 0.003)
    neg = good.copy()
    neg[5] = -0.2
    out = compute_array(get_product("continuum-depth"), _oil_cube([good, dark, neg], wl), bands)
    assert 0.2 < out[0, 0, 0] < 0.26 and out[1, 0, 0] == pytest.approx(2200, abs=10)
    assert (out[:, 1, 0] == NODATA).all() and (out[:, 2, 0] == NODATA).all()


def test_reip_outside_red_edge_window_is_nodata() -> None:
    wl = np.arange(400.0, 1001.0, 5.0)
    bands = band_table(list(wl), 5.0)
    veg = 0.05 + 0.45 / (1 + np.exp(-(wl - 715) / 12))  # red edge inflection at 715 nm
    # dark water: R740 ~ R700, the interpolation's denominator is near zero (REIP ~ 3700 nm)
    water = np.interp(wl, [400, 670, 700, 740, 780, 1000], [0.05, 0.03, 0.010, 0.0101, 0.005, 0.001])
    soil = np.interp(wl, [400, 670, 700, 740, 780, 1000], [0.08, 0.1, 0.12, 0.11, 0.2, 0.25])  # no red edge
    out = compute_array(get_product("index:REIP"), _oil_cube([veg, water, soil], wl), bands)[0, :, 0]
    assert 705 < out[0] < 725
    assert out[1] == NODATA and out[2] == NODATA  # ~3700 nm and ~580 nm before
    assert "680-750 nm" in _show("index:REIP")


# --- 4. SAVI's L ---------------------------------------------------------------------------------
def test_savi_default_l_is_half() -> None:
    savi = get_product("index:SAVI")
    assert savi.parse_params({}).L == 0.5  # type: ignore[attr-defined]
    bands = band_table([655.0, 830.0], 10.0)
    cube = np.array([[[0.08]], [[0.4]]], dtype=np.float32)  # R, N
    out = compute_array(savi, cube, bands)[0, 0, 0]
    assert out == pytest.approx(1.5 * (0.4 - 0.08) / (0.4 + 0.08 + 0.5), rel=1e-6)
    assert compute_array(savi, cube, bands, {"L": 1.0})[0, 0, 0] == pytest.approx(2 * 0.32 / 1.48, rel=1e-6)
    assert get_product("index:EVI").parse_params({}).L == 1.0  # type: ignore[attr-defined]  # EVI keeps 1
    assert "Huete (1988) recommends 0.5" in _show("index:SAVI")


# --- 6. PRI's sign convention --------------------------------------------------------------------
def test_pri_states_its_sign_convention() -> None:
    text = _show("index:PRI")
    assert "Gamon, Peñuelas & Field (1992)" in text and "(R531-R570)/(R531+R570)" in text
    assert "negative of this value" in text


# --- 7. tree-mortality: limits and forest mask ---------------------------------------------------
def test_tree_mortality_limits_are_shown() -> None:
    text = _show("tree-mortality")
    assert "Uncalibrated heuristic" in text and "forest_mask" in text and "dry grass" in text


def test_tree_mortality_forest_mask_scopes_the_classes(tmp_path: Path) -> None:
    wl = [670.0, 800.0, 860.0, 1240.0, 2000.0, 2100.0, 2200.0]
    bands = band_table(wl, 10.0)
    healthy = [0.04, 0.5, 0.5, 0.4, 0.2, 0.2, 0.2]
    straw = [0.3, 0.4, 0.4, 0.45, 0.45, 0.38, 0.45]  # dry matter (CAI 0.07), NDVI ~0.14: "dead"
    cube = np.zeros((7, 16, 16), dtype=np.float32)
    cube[:, :, :8] = np.array(healthy, dtype=np.float32)[:, None, None]
    cube[:, :, 8:] = np.array(straw, dtype=np.float32)[:, None, None]
    src = write_activated_cog(tmp_path / "c.tif", bands, cube, block=16)
    tm = get_product("tree-mortality")
    unscoped = run_product(tm, str(src), str(tmp_path / "a.tif"))
    assert unscoped.class_counts == {"non-vegetation": 0, "healthy": 128, "stressed": 0, "dead": 128}
    with rasterio.open(src) as ds:
        prof = {"driver": "GTiff", "width": 16, "height": 16, "count": 1, "dtype": "uint8",
                "crs": ds.crs, "transform": ds.transform}  # fmt: skip
    mask = tmp_path / "forest.tif"
    with rasterio.open(mask, "w", **prof) as m:
        arr = np.zeros((16, 16), dtype=np.uint8)
        arr[:, :8] = 1  # the forest is the left half; the straw field is not forest
        m.write(arr, 1)
    scoped = run_product(tm, str(src), str(tmp_path / "b.tif"), {"forest_mask": str(mask)}, window_size=8)
    assert scoped.class_counts == {"non-vegetation": 0, "healthy": 128, "stressed": 0, "dead": 0}
    with rasterio.open(tmp_path / "b.tif") as ds:
        out = ds.read(1)
    assert (out[:, 8:] == 255).all() and (out[:, :8] == 1).all()
    wrong = tmp_path / "wrong.tif"
    with rasterio.open(wrong, "w", **{**prof, "width": 8}) as m:
        m.write(np.ones((16, 8), dtype=np.uint8), 1)
    with pytest.raises(ProductError, match="forest_mask .*16 x 8 pixels.*16 x 16: resample"):
        run_product(tm, str(src), str(tmp_path / "c2.tif"), {"forest_mask": str(wrong)})
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(shifted, "w", **{**prof, "transform": from_origin(0, 0, 5, 5)}) as m:
        m.write(np.ones((16, 16), dtype=np.uint8), 1)
    with pytest.raises(ProductError, match="not on the grid"):
        run_product(tm, str(src), str(tmp_path / "c3.tif"), {"forest_mask": str(shifted)})
