"""Engine: valid COG output, overviews, descriptions, nodata propagation, reads only needed bands."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from PIL import Image
from rio_cogeo import cog_validate

from hsi.products import get_product, run_product, write_preview
from hsi.products.engine import FLOAT_PRODUCT_ZSTD_LEVEL, iter_windows, product_profile
from hsi.products.testing import band_table, write_activated_cog

WL = np.arange(400.0, 2501.0, 10.0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    rng = np.random.default_rng(1)
    h, w = 300, 280
    data = np.round(rng.uniform(0.05, 0.6, (WL.size, h, w)) * 1e4).astype("int16")
    data[:, :20, :30] = -9999  # nodata block in every band
    r = int(np.argmin(np.abs(WL - 655)))  # 650 nm: nearest to the spyndex red centre (tie -> lower)
    data[r, 100:110, 100:110] = -9999  # nodata only in the red band
    good = [not (1340 <= x <= 1445 or 1790 <= x <= 1955) for x in WL]
    path = tmp_path_factory.mktemp("scene") / "ang_test_rfl.tif"
    write_activated_cog(
        path, band_table(WL, 10.0, good=good, scale=1e-4), data, dtype="int16", nodata=-9999, block=64
    )
    return path, data


def test_output_cog_valid_with_overviews_descriptions_and_nodata(scene, tmp_path) -> None:
    src, data = scene
    res = run_product(get_product("index:NDVI"), str(src), str(tmp_path / "ndvi.tif"), window_size=128)
    valid, errors, _ = cog_validate(res.output_path)
    assert valid, errors
    with rasterio.open(res.output_path) as ds:
        assert ds.overviews(1), "product COG must carry overviews"
        assert ds.descriptions[0].startswith("NDVI")
        assert ds.nodata == -9999.0 and ds.dtypes[0] == "float32"
        out = ds.read(1)
        assert ds.tags()["HSI_PRODUCT"] == "index:NDVI"
    assert (out[:20, :30] == -9999).all()
    assert (out[100:110, 100:110] == -9999).all()  # red nodata alone is enough
    assert (out[200:, 200:] != -9999).all()
    n_idx, r_idx = (int(np.argmin(np.abs(WL - c))) for c in (830.0, 655.0))
    nir, red = data[n_idx, 250, 250] * np.float32(1e-4), data[r_idx, 250, 250] * np.float32(1e-4)
    assert out[250, 250] == pytest.approx((nir - red) / (nir + red), rel=1e-5)
    assert res.stats[0]["nodata"] == 20 * 30 + 100 and res.windows == 9
    assert res.to_dict()["selected_bands"][0]["wavelength"] == 830.0


def test_reads_only_selected_bands(scene, tmp_path, monkeypatch) -> None:
    calls: list[tuple[int, ...]] = []
    orig = rasterio.io.DatasetReader.read

    def spy(self, indexes=None, *a, **kw):
        calls.append(tuple(indexes) if isinstance(indexes, list | tuple) else (indexes,))
        return orig(self, indexes, *a, **kw)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    res = run_product(get_product("index:NDVI"), str(scene[0]), str(tmp_path / "n.tif"), window_size=128)
    src_reads = calls[: res.windows]
    assert len(src_reads) == res.windows
    assert all(set(c) == set(res.bands_read) for c in src_reads)
    assert len(res.bands_read) == 2  # of 211


def test_the_source_is_opened_with_decoding_threads_unless_the_caller_sets_them(scene, tmp_path, monkeypatch):
    # GTiff takes GDAL_NUM_THREADS when a dataset is opened: the reads of a scene of many blocks
    # decode on every core; a scene of one block per band is decoded on the caller's thread, where
    # GDAL's threads cost more than they save
    tiny = tmp_path / "ang_tiny_rfl.tif"
    good = [not (1340 <= x <= 1445 or 1790 <= x <= 1955) for x in WL]
    table = band_table(WL, 10.0, good=good, scale=1e-4)
    write_activated_cog(tiny, table, scene[1][:, :40, :40], dtype="int16", nodata=-9999, block=64)
    opened: list[tuple[str, str | None]] = []
    orig = rasterio.open

    def spy(path, *a, **kw):
        if str(path) in (str(scene[0]), str(tiny)):
            opened.append((str(path), rasterio.env.getenv().get("GDAL_NUM_THREADS")))
        return orig(path, *a, **kw)

    monkeypatch.setattr(rasterio, "open", spy)
    src = str(scene[0])
    a = run_product(get_product("index:NDVI"), src, str(tmp_path / "a.tif"))
    assert opened[-1] == (src, "ALL_CPUS")  # the dataset the engine reads from
    opened.clear()
    b = run_product(get_product("index:NDVI"), src, str(tmp_path / "b.tif"), gdal_env={"GDAL_NUM_THREADS": 1})
    assert opened == [(src, 1)]  # the caller's value, one open
    opened.clear()
    t = run_product(get_product("index:NDVI"), str(tiny), str(tmp_path / "t.tif"))
    assert opened == [(str(tiny), None)]
    with (
        rasterio.open(a.output_path) as da,
        rasterio.open(b.output_path) as db,
        rasterio.open(t.output_path) as dt,
    ):
        assert np.array_equal(da.read(), db.read())
        assert np.array_equal(dt.read(), da.read(window=((0, 40), (0, 40))))


def test_float_outputs_compress_fast_and_class_outputs_small() -> None:
    # behind predictor 3, ZSTD 9 saves ~0.5% of a float product at ~7x the CPU of level 1
    assert product_profile(600, 600, "float32").level == FLOAT_PRODUCT_ZSTD_LEVEL == 1
    assert product_profile(600, 600, "uint8").level == 9
    assert product_profile(600, 600, "float32").blocksize == 512


def test_bad_bands_skipped_by_full_spectrum_products(scene, tmp_path) -> None:
    res = run_product(
        get_product("pca"), str(scene[0]), str(tmp_path / "pca.tif"), {"n_components": 2}, max_chunk_mb=4
    )
    chosen = {b["wavelength"] for b in res.selected_bands}
    assert not any(1340 <= w <= 1445 or 1790 <= w <= 1955 for w in chosen)
    assert len(chosen) == sum(not (1340 <= x <= 1445 or 1790 <= x <= 1955) for x in WL)
    assert res.windows > 9  # 4 MB budget forced smaller windows
    assert res.fit_summary["explained_variance_ratio"][0] > 0


def test_classifier_preview_and_oil_mask(scene, tmp_path) -> None:
    res = run_product(get_product("oil-spill"), str(scene[0]), str(tmp_path / "oil.tif"))
    assert set(res.class_counts) == {"no oil", "oil"}
    png = write_preview(res.output_path, tmp_path / "oil.png")
    im = Image.open(png)
    assert max(im.size) <= 512 and im.mode == "RGB"
    png2 = write_preview(res.output_path, tmp_path / "hi.png", band=1, max_size=128)
    assert max(Image.open(png2).size) <= 300


def test_iter_windows_aligned_to_blocks() -> None:
    ws = list(iter_windows(1000, 700, (256, 256), 512))
    assert ws[0].width == 512 and ws[0].height == 512 and len(ws) == 4
    assert all(w.col_off % 256 == 0 and w.row_off % 256 == 0 for w in ws)
    assert sum(w.width * w.height for w in ws) == 1000 * 700
