"""Radiance -> TOA reflectance equals an independent computation (within 1e-5 relative); reflectance
products on radiance either record the conversion or refuse; EMIT quality masks apply by default."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pvlib
import pystac
import pytest
import rasterio
from rasterio.windows import Window

from hsi.activation import convert
from hsi.errors import ProductError
from hsi.products import get_product, run_product
from hsi.products.inputs import ToaReflectance
from hsi.quantities import build_adjustments, plan_inputs, split_params
from hsi.scene import bands_from_dataset
from hsi.sources.emit_synth import synthesize_emit
from hsi.toa import band_solar_irradiance


def _esun_independent(centre: float, fwhm: float) -> float:
    """ASTM G173 extraterrestrial column read from pvlib's CSV with the csv module; Gaussian
    response; trapezoid rule on the file's grid within +-6 sigma (plain Python)."""
    path = Path(pvlib.__file__).parent / "data" / "ASTMG173.csv"
    with open(path) as fh:
        rows = list(csv.reader(fh))[2:]
    sigma = fwhm / (2 * math.sqrt(2 * math.log(2)))
    pts = [(float(r[0]), float(r[1])) for r in rows if abs(float(r[0]) - centre) <= 6 * sigma]
    num = den = 0.0
    for (x0, e0), (x1, e1) in zip(pts, pts[1:], strict=False):
        g0, g1 = math.exp(-0.5 * ((x0 - centre) / sigma) ** 2), math.exp(-0.5 * ((x1 - centre) / sigma) ** 2)
        num += 0.5 * (x1 - x0) * (e0 * g0 + e1 * g1)
        den += 0.5 * (x1 - x0) * (g0 + g1)
    return num / den


def test_band_solar_irradiance_equals_independent_convolution() -> None:
    centres, fwhm = [381.0, 550.0, 865.0, 1240.0, 1700.5, 2200.0], [8.5, 8.5, 8.6, 8.5, 8.5, 8.5]
    got = band_solar_irradiance(centres, fwhm)
    exp = [_esun_independent(c, f) for c, f in zip(centres, fwhm, strict=True)]
    assert np.allclose(got, exp, rtol=1e-12)
    assert 1.7 < got[1] < 2.0  # ~1.86 W m-2 nm-1 at 550 nm


@pytest.fixture(scope="module")
def rad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    d = tmp_path_factory.mktemp("toa")
    nc = synthesize_emit(d, level="l1b", crosstrack=36, downtrack=48, seed=5)
    return nc, convert(nc, d / "out")


def _item(conv: object, with_obs: bool) -> pystac.Item:
    meta, cog, files = conv.meta, conv.cog, conv.files  # type: ignore[attr-defined]
    item = pystac.Item(meta.item_id, cog.footprint, list(cog.bbox), meta.datetime, {})
    if with_obs:
        item.add_asset("obs", pystac.Asset(str(files["obs"])))
    return item


def _independent_rho(nc: Path, bands: list[int], when: object, zenith: str | float) -> np.ndarray:
    """rho = pi L d^2 / (E cos(theta)) from the granule itself (h5py + NumPy GLT), L in uW cm-2 -> W m-2."""
    with h5py.File(nc, "r") as f:
        L = f["radiance"][...]
        wl, fw = f["sensor_band_parameters/wavelengths"][...], f["sensor_band_parameters/fwhm"][...]
        gx, gy = f["location/glt_x"][...], f["location/glt_y"][...]
    obs_path = nc.with_name(nc.name.replace("_RAD_", "_OBS_"))
    with h5py.File(obs_path, "r") as f:
        sza_sensor = f["obs"][..., 4]
    valid = gx != 0
    d = float(np.asarray(pvlib.solarposition.nrel_earthsun_distance(pd.DatetimeIndex([when])))[0])
    out = np.full((len(bands), *gx.shape), np.nan)
    for k, b in enumerate(bands):
        e = _esun_independent(float(wl[b - 1]), float(fw[b - 1]))
        sza = sza_sensor[gy[valid] - 1, gx[valid] - 1] if zenith == "obs" else float(zenith)
        Lw = L[gy[valid] - 1, gx[valid] - 1, b - 1].astype(np.float64) * 0.01
        out[k][valid] = math.pi * Lw * d * d / (e * np.cos(np.radians(sza)))
    return out


@pytest.mark.parametrize("with_obs", [True, False])
def test_toa_reflectance_equals_independent_computation(rad: tuple, with_obs: bool) -> None:
    nc, conv = rad
    item = _item(conv, with_obs)
    with rasterio.open(conv.files["cube"]) as ds:
        bands = bands_from_dataset(ds)
        tags = ds.tags()
        plan = plan_inputs("index:NDVI", "reflectance", item, tags, bands, split_params({})[1])
        assert tags["HSI_QUANTITY"] == "radiance" and tags["HSI_UNITS"] == "uW nm-1 cm-2 sr-1"
        sel = [20, 55, 160, 250]
        arr = ds.read(sel, window=Window(0, 0, ds.width, ds.height)).astype(np.float32)
    (adj,) = build_adjustments(plan, lambda h: (h, rasterio.Env()))
    assert isinstance(adj, ToaReflectance)
    arr[arr == -9999] = np.nan
    adj(arr, sel, Window(0, 0, arr.shape[2], arr.shape[1]))
    adj.close()
    rec = plan.records["toa_reflectance"]
    assert plan.records["input_quantity"] == "toa-reflectance"
    assert rec["units_to_W_m2_sr_nm"] == 0.01 and "ASTM G173" in rec["esun"]
    if with_obs:
        assert rec["solar_zenith"].startswith("per pixel: asset 'obs' band 5")
        zen: str | float = "obs"
    else:
        assert rec["solar_zenith"].startswith("scene: ")
        lon, lat = (item.bbox[0] + item.bbox[2]) / 2, (item.bbox[1] + item.bbox[3]) / 2
        zen = float(
            pvlib.solarposition.get_solarposition(pd.DatetimeIndex([item.datetime]), lat, lon)["zenith"].iloc[
                0
            ]
        )
    exp = _independent_rho(nc, sel, item.datetime, zen)
    ok = np.isfinite(exp)
    assert ok.sum() > 0.3 * ok.size and np.array_equal(ok, np.isfinite(arr))
    assert np.max(np.abs(arr[ok] / exp[ok] - 1)) < 1e-5
    assert 0.0 < np.nanmedian(arr) < 1.0  # reflectance, not radiance


def test_reflectance_product_on_radiance_records_the_conversion(rad: tuple, tmp_path: Path) -> None:
    nc, conv = rad
    item = _item(conv, True)
    prod = get_product("index:NDVI")
    with rasterio.open(conv.files["cube"]) as ds:
        plan = plan_inputs(
            prod.name, prod.needs, item, ds.tags(), bands_from_dataset(ds), split_params({})[1]
        )
    adjust = build_adjustments(plan, lambda h: (h, rasterio.Env()))
    res = run_product(prod, str(conv.files["cube"]), str(tmp_path / "ndvi.tif"), adjust=adjust)
    for a in adjust:
        a.close()
    nir, red = (s["index"] for s in sorted(res.selected_bands, key=lambda s: -s["wavelength"]))
    n, r = _independent_rho(nc, [nir, red], item.datetime, "obs")
    exp = (n - r) / (n + r)
    with rasterio.open(tmp_path / "ndvi.tif") as ds:
        got = ds.read(1, masked=True).astype(np.float64).filled(np.nan)
    ok = np.isfinite(exp)
    assert np.array_equal(ok, np.isfinite(got))
    assert np.max(np.abs(got[ok] - exp[ok])) < 1e-5


def test_reflectance_product_on_radiance_can_refuse(rad: tuple) -> None:
    _, conv = rad
    with rasterio.open(conv.files["cube"]) as ds:
        tags, bands = ds.tags(), bands_from_dataset(ds)
    prod_params, opts = split_params({"radiance": "refuse", "k": 1})
    assert prod_params == {"k": 1}
    with pytest.raises(
        ProductError, match="needs reflectance but .* holds radiance; run it with radiance=toa"
    ):
        plan_inputs("index:NDVI", "reflectance", _item(conv, True), tags, bands, opts)
    # a product that takes any quantity runs on radiance unchanged, nothing recorded
    assert plan_inputs("pca", "any", _item(conv, True), tags, bands, opts).records == {}


def test_emit_mask_applies_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    nc = synthesize_emit(tmp_path, level="l2a", crosstrack=36, downtrack=48, seed=6)
    conv = convert(nc, tmp_path / "out")
    item = pystac.Item(conv.meta.item_id, conv.cog.footprint, list(conv.cog.bbox), conv.meta.datetime, {})
    item.add_asset("mask", pystac.Asset(str(conv.files["mask"])))
    prod = get_product("index:NDVI")
    with rasterio.open(conv.files["cube"]) as ds:
        tags, bands = ds.tags(), bands_from_dataset(ds)
    with rasterio.open(conv.files["mask"]) as ms:
        desc = list(ms.descriptions)
        flags = ms.read([1, 2, 3, 5])
    outs = {}
    for mask_on in (True, False):
        plan = plan_inputs(prod.name, prod.needs, item, tags, bands, split_params({"mask": mask_on})[1], desc)
        if mask_on:
            assert plan.records == {
                "quality_mask": {
                    "asset": "mask",
                    "flags": ["Cloud flag", "Cirrus flag", "Water flag", "Dilated Cloud Flag"],
                }
            }
        else:
            assert plan.records == {"quality_mask": "off"}
        adjust = build_adjustments(plan, lambda h: (h, rasterio.Env()))
        run_product(prod, str(conv.files["cube"]), str(tmp_path / f"ndvi{mask_on}.tif"), adjust=adjust)
        for a in adjust:
            a.close()
        with rasterio.open(tmp_path / f"ndvi{mask_on}.tif") as ds:
            outs[mask_on] = ds.read(1, masked=True)
    flagged = (flags == 1).any(axis=0)
    assert flagged.any() and (~flagged & ~np.ma.getmaskarray(outs[False])).any()
    assert np.ma.getmaskarray(outs[True])[flagged].all()  # every flagged pixel is nodata
    unflagged = ~flagged
    assert np.array_equal(
        np.ma.getmaskarray(outs[True])[unflagged], np.ma.getmaskarray(outs[False])[unflagged]
    )
    assert (~np.ma.getmaskarray(outs[False])[flagged]).any()  # without the mask they had values


def test_an_item_without_acquisition_time_is_refused_for_toa(rad: tuple) -> None:
    """A scene without an acquisition time gets its file's modification time as the STAC datetime
    (recorded as hsi:datetime_source): TOA reflectance refuses it instead of computing the sun for
    that day."""
    _, conv = rad
    item = _item(conv, False)
    item.properties["hsi:datetime_source"] = "file modification time"
    with rasterio.open(conv.files["cube"]) as ds:
        tags, bands = ds.tags(), bands_from_dataset(ds)
    with pytest.raises(
        ProductError, match=r"no acquisition time \(its datetime is the file modification time\)"
    ):
        plan_inputs("index:NDVI", "reflectance", item, tags, bands, split_params({})[1])


def test_a_sun_below_the_horizon_is_refused(rad: tuple) -> None:
    _, conv = rad
    item = _item(conv, False)
    lon, lat = (item.bbox[0] + item.bbox[2]) / 2, (item.bbox[1] + item.bbox[3]) / 2
    # 12 hours from the granule's time: the other side of the Earth faces the sun
    item.datetime = item.datetime + pd.Timedelta(hours=12)
    zen = float(
        pvlib.solarposition.get_solarposition(pd.DatetimeIndex([item.datetime]), lat, lon)["zenith"].iloc[0]
    )
    assert zen > 90  # the independent SPA agrees it is night there
    with rasterio.open(conv.files["cube"]) as ds:
        tags, bands = ds.tags(), bands_from_dataset(ds)
    with pytest.raises(ProductError, match="below the horizon: TOA reflectance is undefined"):
        plan_inputs("index:NDVI", "reflectance", item, tags, bands, split_params({})[1])
