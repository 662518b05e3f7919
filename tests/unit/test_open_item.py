"""hsi.open_item / open_product: lazy xarray views of activated cubes and products (issue 12, must-show 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml

import hsi
from hsi import activation as act
from hsi.demo import activate, build_demo
from hsi.errors import InvalidInputError, ItemNotFoundError
from hsi.services import Services
from hsi.sources.synthetic import synthesize


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("open-item")
    cfg = {
        "storage": {"root": str(root / "assets")},
        "catalog": {"url": str(root / "catalog")},
        "work_dir": str(root / "work"),
    }
    (root / "hsi.yaml").write_text(yaml.safe_dump(cfg))
    svc = Services.from_config(root / "hsi.yaml")
    out = build_demo(svc, width=48, height=64, products=("index:NDVI", "oil-spill"))
    hdr = synthesize(
        root / "raw-classic", source="aviris-classic", level="l1b", width=24, height=32, rotation_deg=25
    )
    classic = act.index_scene(svc, str(hdr))
    activate(svc, classic.id)
    return {"svc": svc, "id": out["item_id"], "classic": classic.id, "root": root}


def _cube_item(svc: Services, item_id: str):
    return next(it for it in svc.catalog.search(ids=[item_id]) if "cube" in it.assets)


def test_open_item_matches_the_item_bands_and_rasterio_reads(demo) -> None:
    svc = demo["svc"]
    item = _cube_item(svc, demo["id"])
    cube = hsi.open_item(demo["id"], services=svc)
    bands = item.assets["cube"].extra_fields["bands"]
    path = item.assets["cube"].get_absolute_href()
    with rasterio.open(path) as ds:
        assert cube.shape == (425, ds.height, ds.width)
        assert cube.dims == ("wavelength", "y", "x")
        assert cube.rio.crs == ds.crs and cube.rio.transform() == ds.transform
        np.testing.assert_allclose(cube.wavelength.values, [b["eo:center_wavelength"] * 1000 for b in bands])
        np.testing.assert_allclose(cube.fwhm.values, [b["eo:full_width_half_max"] * 1000 for b in bands])
        assert cube.good_band.values.tolist() == [b["hsi:good_band"] for b in bands]
        assert cube.band.values.tolist() == [b["name"] for b in bands]
        assert cube.chunks is not None  # lazy, dask-backed
        raw = ds.read(indexes=[1, 100, 425])
        nod = ds.nodata
    got = cube.isel(wavelength=[0, 99, 424]).values
    assert np.isnan(got[raw == nod]).all() and (raw == nod).any()  # rotated grid: nodata corners -> NaN
    ok = raw != nod
    np.testing.assert_allclose(got[ok], raw[ok])  # scale 1, offset 0 on the NG reflectance cube


def test_scale_offset_applied_and_nodata_is_nan(demo) -> None:
    svc = demo["svc"]
    item = _cube_item(svc, demo["classic"])
    cube = hsi.open_item(item, services=svc)
    rng = np.random.default_rng(0)
    with rasterio.open(item.assets["cube"].get_absolute_href()) as ds:
        assert ds.dtypes[0] == "int16"
        for b in rng.choice(ds.count, 5, replace=False) + 1:
            scale, offset = ds.scales[b - 1], ds.offsets[b - 1]
            assert scale != 1.0
            raw = ds.read(int(b))
            got = cube.isel(wavelength=cube.band_index.values.tolist().index(b)).values
            ys, xs = rng.integers(0, ds.height, 20), rng.integers(0, ds.width, 20)
            for y, x in zip(ys, xs, strict=True):
                if raw[y, x] == ds.nodata:
                    assert np.isnan(got[y, x])
                else:
                    assert got[y, x] == pytest.approx(raw[y, x] * scale + offset, rel=1e-6)
            assert np.isnan(got[raw == ds.nodata]).all()
    stored = hsi.open_item(item, services=svc, mask_and_scale=False)
    assert stored.dtype == np.int16 and stored.attrs["nodata"] == -9999


def test_overlapping_spectrometers_give_an_ascending_wavelength_index(demo) -> None:
    """AVIRIS-Classic's four spectrometers overlap: its band list steps back at three joins. The
    wavelength dimension is ascending (``.sel(..., method="nearest")`` works); ``band_index`` keeps
    each band's number in the file, and the values are that band's."""
    svc = demo["svc"]
    item = _cube_item(svc, demo["classic"])
    file_wl = np.array([b["eo:center_wavelength"] * 1000 for b in item.assets["cube"].extra_fields["bands"]])
    assert (np.diff(file_wl) < 0).sum() == 3  # the joins: the reordering below is exercised
    cube = hsi.open_item(item, services=svc)
    assert (np.diff(cube.wavelength.values) > 0).all()
    np.testing.assert_allclose(cube.wavelength.values, file_wl[cube.band_index.values - 1])
    two = cube.sel(wavelength=[660, 860], method="nearest")
    want = [int(np.argmin(abs(file_wl - w))) + 1 for w in (660, 860)]
    assert two.band_index.values.tolist() == want
    with rasterio.open(item.assets["cube"].get_absolute_href()) as ds:
        idx = np.array(want) - 1
        raw = ds.read(want) * np.array(ds.scales)[idx, None, None] + np.array(ds.offsets)[idx, None, None]
        valid = ds.read(want) != ds.nodata
    np.testing.assert_allclose(two.values[valid], raw[valid], rtol=1e-6)


def test_selection_reads_only_the_selected_band_planes(demo, monkeypatch) -> None:
    svc = demo["svc"]
    reads: list[tuple[int, ...]] = []
    orig = rasterio.io.DatasetReader.read

    def counting(self, indexes=None, *a, **kw):  # observe which band planes GDAL is asked for
        reads.append(tuple(np.atleast_1d(indexes).tolist()))
        return orig(self, indexes, *a, **kw)

    cube = hsi.open_item(demo["id"], services=svc)
    monkeypatch.setattr(rasterio.io.DatasetReader, "read", counting)
    two = cube.sel(wavelength=[660, 860], method="nearest")
    two.values  # noqa: B018
    wl = cube.wavelength.values
    want = {int(np.argmin(abs(wl - 660))) + 1, int(np.argmin(abs(wl - 860))) + 1}
    assert {b for r in reads for b in r} == want

    reads.clear()
    sub = hsi.open_item(demo["id"], services=svc, wavelengths=[550, 2200], good_only=True)
    assert sub.sizes["wavelength"] == 2 and bool(sub.good_band.all())
    sub.values  # noqa: B018
    assert len({b for r in reads for b in r}) == 2
    named = hsi.open_item(demo["id"], services=svc, bands=["b010", 20])
    assert named.band.values.tolist() == ["b010", "b020"]
    good = hsi.open_item(demo["id"], services=svc, good_only=True)
    assert good.sizes["wavelength"] == int(cube.good_band.sum()) < 425


def test_open_by_item_href_and_plain_path(demo) -> None:
    svc = demo["svc"]
    item = _cube_item(svc, demo["id"])
    by_href = hsi.open_item(item.get_self_href(), services=svc)
    by_path = hsi.open_item(item.assets["cube"].get_absolute_href())  # band table from the GeoTIFF tags
    np.testing.assert_allclose(by_path.wavelength.values, by_href.wavelength.values, rtol=1e-6)
    assert by_path.good_band.values.tolist() == by_href.good_band.values.tolist()
    np.testing.assert_array_equal(by_path.isel(wavelength=60).values, by_href.isel(wavelength=60).values)


def test_open_product_names_bands_and_classes(demo) -> None:
    svc = demo["svc"]
    oil = hsi.open_product(f"{demo['id']}-oil-spill", services=svc)
    assert oil.dims == ("band", "y", "x")
    assert oil.band.values.tolist() == ["HI", "depth_1730", "depth_2300", "oil_mask"]
    assert oil.attrs["classes"] == {0: "no oil", 1: "oil"}
    mask = oil.sel(band="oil_mask").values
    assert set(np.unique(mask[np.isfinite(mask)])) <= {0.0, 1.0}
    ndvi = hsi.open_product(f"{demo['id']}-index-ndvi", services=svc).squeeze("band")
    v = ndvi.values
    assert np.isfinite(v).any() and np.nanmax(v) <= 1.0 and np.nanmin(v) >= -1.0


def test_user_mistakes_are_one_line_errors(demo, tmp_path: Path) -> None:
    svc = demo["svc"]
    with pytest.raises(ItemNotFoundError):
        hsi.open_item("aviris-ng-nosuchscene", services=svc)
    with pytest.raises(InvalidInputError, match="no band named 'zz'"):
        hsi.open_item(demo["id"], services=svc, bands=["zz"])
    with pytest.raises(InvalidInputError, match="no such file"):
        hsi.open_item(str(tmp_path / "missing.tif"))
