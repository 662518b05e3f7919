"""The COG writer's own tile path (:mod:`hsi.tiles`) against GDAL, and against the writer before it.

* Every tile the sink encodes (predictor 2 or 3, ZSTD / DEFLATE / none, edge tiles, unaligned
  windows, overviews) is decoded by GDAL -- the format's own reader -- to exactly the pixels the
  GDAL path writes from the same windows, with the same band metadata, tags and layout.
* The analysis-ready cubes and products the pipeline writes have the same pixel checksums, band
  metadata and layout as the writer before this change (commit a8099d6, where GDAL's
  ``COPY_SRC_OVERVIEWS`` copy compressed every tile): the checksums below were computed with that
  commit's code on the same deterministic inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zstandard
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate

from hsi import tiff_ifds, tile_codec, tiles
from hsi.cog import CogProfile, CogSink, write_cog
from hsi.products import get_product, run_product
from hsi.products.testing import band_table, write_activated_cog
from hsi.sources import read_scene
from hsi.sources.emit_synth import synthesize_emit
from hsi.sources.synthetic import synthesize


def cog_digest(path: Path) -> dict[str, Any]:
    """Pixels (sha256 of every level's decoded bands) and everything a reader sees besides."""
    with rasterio.open(path) as ds:
        out: dict[str, Any] = {
            "size": [ds.width, ds.height, ds.count],
            "dtype": ds.dtypes[0],
            "nodata": ds.nodata,
            "crs": ds.crs.to_wkt() if ds.crs else None,
            "transform": list(ds.transform)[:6],
            "blocks": ds.block_shapes[0],
            "structure": {
                k: v for k, v in ds.tags(ns="IMAGE_STRUCTURE").items() if k in ("COMPRESSION", "INTERLEAVE")
            },
            "predictor": ds.profile.get("predictor"),
            "tags": ds.tags(),
            "descriptions": list(ds.descriptions),
            "scales": list(ds.scales),
            "offsets": list(ds.offsets),
            "band_tags": [ds.tags(i) for i in range(1, ds.count + 1)],
            "imagery": [ds.tags(i, ns="IMAGERY") for i in range(1, ds.count + 1)],
            "overviews": ds.overviews(1),
            "pixels": [hashlib.sha256(ds.read().tobytes()).hexdigest()],
        }
        for i in range(len(ds.overviews(1))):
            with rasterio.open(path, overview_level=i) as ov:
                out["pixels"].append(hashlib.sha256(ov.read().tobytes()).hexdigest())
    return out


def _short(d: dict[str, Any]) -> str:
    """A checksum of a digest (pixels and metadata together)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.fixture
def gdal_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The sink's GDAL path: a staging GeoTIFF copied into the COG layout by GDAL."""
    monkeypatch.setattr(tile_codec, "supported", lambda compress: False)
    yield


def _write(
    path: Path, data: np.ndarray, profile: CogProfile, win: int, nodata: float | None, res: str
) -> None:
    count, h, w = data.shape
    sink = CogSink(
        path,
        width=w,
        height=h,
        count=count,
        dtype=data.dtype.name,
        crs="EPSG:32611",
        transform=Affine(5.0, 0.0, 500000.0, 0.0, -5.0, 4000000.0),
        nodata=nodata,
        profile=profile,
        descriptions=[f"band {i}" for i in range(count)],
        band_tags=[{"WAVELENGTH": str(400 + i)} for i in range(count)],
        band_ns_tags=[{"IMAGERY": {"CENTRAL_WAVELENGTH_UM": str(0.4 + i / 1000)}} for i in range(count)],
        scales=[0.5] * count,
        offsets=[1.0] * count,
        tags={"HSI_TEST": "1"},
        overview_resampling=res,
    )
    with sink:
        for r in range(0, h, win):
            for c in range(0, w, win):
                block = data[:, r : r + win, c : c + win]
                sink.write(block[0] if count == 1 else block, (r, min(r + win, h)), (c, min(c + win, w)))


CASES = [
    # dtype, bands, width, height, profile, write window, nodata, overview resampling
    ("float32", 5, 700, 530, CogProfile(), 256, -9999.0, "nearest"),  # the cube's profile, edge tiles
    ("float64", 2, 300, 260, CogProfile(blocksize=256), 100, None, "nearest"),  # unaligned windows
    ("int16", 3, 1100, 1030, CogProfile(blocksize=512, overview_level=2), 256, -9999, "average"),
    ("uint16", 2, 513, 700, CogProfile(blocksize=256, overview_level=1), 300, 0, "nearest"),
    ("float32", 1, 2048, 1500, CogProfile(blocksize=512, overview_level=3), 300, -9999.0, "average"),
    ("uint8", 2, 300, 200, CogProfile(compress="DEFLATE"), 128, 255, "nearest"),
    ("int32", 2, 260, 300, CogProfile(compress="NONE", predictor=1), 256, None, "nearest"),
]


@pytest.mark.parametrize(("dtype", "bands", "width", "height", "profile", "win", "nodata", "res"), CASES)
def test_tiles_decode_to_the_pixels_gdal_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dtype: str,
    bands: int,
    width: int,
    height: int,
    profile: CogProfile,
    win: int,
    nodata: float | None,
    res: str,
) -> None:
    rng = np.random.default_rng(7)
    smooth = np.cumsum(rng.normal(size=(bands, height, width)), axis=2)  # predictors have work to do
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        data = np.clip(smooth * 40 + (info.min + info.max) / 2, info.min, info.max).astype(dtype)
    else:
        data = smooth.astype(dtype)
    if nodata is not None:
        data[:, :17, :23] = nodata  # a nodata corner: overviews and padding must treat it alike
    ours = tmp_path / "tiles.tif"
    _write(ours, data, profile, win, nodata, res)
    with monkeypatch.context() as m:
        m.setattr(tile_codec, "supported", lambda compress: False)
        theirs = tmp_path / "gdal.tif"
        _write(theirs, data, profile, win, nodata, res)

    a, b = cog_digest(ours), cog_digest(theirs)
    assert a == b
    with rasterio.open(ours) as ds:
        np.testing.assert_array_equal(ds.read(), data)
    valid, errors, _ = cog_validate(str(ours), quiet=True)
    assert valid and not errors
    # same codec and predictor, so about the same size (tiles are compressed by the same libraries)
    assert abs(ours.stat().st_size / theirs.stat().st_size - 1) < 0.03
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ours.name, theirs.name])  # no leftovers


def test_a_single_tile_output_is_written_by_gdal_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One tile per band (a product of a small scene): GDAL writes the COG from the in-memory staging
    file. Building the tile path's header template would cost more than the tiles themselves."""
    made: list[int] = []
    real = tiles.TileWriter

    def counting(*a: Any, **kw: Any) -> Any:
        made.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(tiles, "TileWriter", counting)
    data = np.cumsum(np.random.default_rng(2).normal(size=(2, 40, 50)), axis=2).astype("float32")
    small, large = tmp_path / "small.tif", tmp_path / "large.tif"
    _write(small, data, CogProfile(blocksize=256, overview_level=1), 16, -9999.0, "average")
    assert made == []
    _write(
        large, np.tile(data, (1, 7, 6)), CogProfile(blocksize=256, overview_level=1), 256, -9999.0, "average"
    )
    assert made == [1]  # more than one tile: the tile path
    with rasterio.open(small) as ds:
        np.testing.assert_array_equal(ds.read(), data)
        assert ds.overviews(1) == [2] and ds.descriptions == ("band 0", "band 1")
        assert ds.tags()["HSI_TEST"] == "1" and ds.tags(2)["WAVELENGTH"] == "401"
    valid, errors, _ = cog_validate(str(small), quiet=True)
    assert valid and not errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large.tif", "small.tif"]  # no leftovers


def test_tile_data_follows_the_headers_in_cog_order(tmp_path: Path) -> None:
    """IFDs first; then the smallest overview's tiles, ..., full resolution last; band by band."""
    data = np.arange(2 * 700 * 600, dtype="float32").reshape(2, 600, 700)
    out = tmp_path / "o.tif"
    _write(out, data, CogProfile(blocksize=256, overview_level=2), 256, None, "nearest")
    raw = out.read_bytes()
    ifds = tiff_ifds.read_ifds(raw)
    assert [(i.width, i.height) for i in ifds] == [(700, 600), (350, 300), (175, 150)]
    first: list[int] = []
    for i in ifds:
        offs = np.frombuffer(raw, i.offsets_type, i.n_tiles, i.offsets_at).astype(np.int64)
        counts = np.frombuffer(raw, i.counts_type, i.n_tiles, i.counts_at).astype(np.int64)
        assert (np.diff(offs) == counts[:-1]).all()  # contiguous, band by band, row-major
        assert offs.min() > max(j.offsets_at for j in ifds)  # all data after all tile arrays
        first.append(int(offs[0]))
    assert first == sorted(first, reverse=True)  # the smallest level's data comes first


@pytest.mark.parametrize(
    ("dtype", "predictor", "level"), [("float32", 3, 9), ("float32", 3, 1), ("int16", 2, 9), ("uint8", 1, 5)]
)
def test_zstd_tiles_are_compressed_as_gdal_compresses_them(
    tmp_path: Path, dtype: str, predictor: int, level: int
) -> None:
    """Not only the pixels: a tile is compressed as GDAL (libtiff) compresses it at the same ZSTD
    level, with the level's parameters for inputs of unknown size, so it decodes to the same stored
    bytes and is GDAL's size to 0.1%. (zstd's small-input table, which a one-shot compression of
    256 KiB picks, was 0.15-1.1% off on these tiles; the blocks themselves are not GDAL's, because
    zstd sizes its hash tables to the tile, and libtiff's stream cannot tell it the size.)"""
    rng = np.random.default_rng(11)
    smooth = np.cumsum(rng.normal(size=(256, 256)), axis=1) * 25 + 100
    tile = np.clip(smooth, 0, 255).astype(dtype) if dtype == "uint8" else smooth.astype(dtype)
    path = tmp_path / "gdal.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=256, height=256, count=1, dtype=dtype, tiled=True,
        blockxsize=256, blockysize=256, compress="ZSTD", zstd_level=level, predictor=predictor,
        crs="EPSG:32611", transform=Affine(5.0, 0.0, 500000.0, 0.0, -5.0, 4000000.0),
    ) as ds:  # fmt: skip
        ds.write(tile, 1)
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    gdal = path.read_bytes()[offset : offset + size]
    ours = tile_codec.encode_tile(tile, predictor, "ZSTD", level)
    d = zstandard.ZstdDecompressor()
    assert d.decompress(ours) == d.decompress(gdal, max_output_size=tile.nbytes)
    assert abs(len(ours) / len(gdal) - 1) < 0.001


def test_tiles_kept_in_a_scratch_file_assemble_to_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large outputs keep their tiles in a scratch file and copy them into place on every core;
    the file is byte for byte the one assembled from memory, overviews and all."""
    rng = np.random.default_rng(5)
    data = np.cumsum(rng.normal(size=(4, 700, 900)), axis=2).astype("float32")
    profile = CogProfile(blocksize=256, overview_level=2)
    in_memory = tmp_path / "memory.tif"
    _write(in_memory, data, profile, 256, None, "average")
    monkeypatch.setattr(tiles, "MEMORY_STAGING_BYTES", 0)
    monkeypatch.setattr(tiles, "COPY_SHARE_BYTES", 1 << 16)  # several copying threads
    scratch = tmp_path / "scratch.tif"
    _write(scratch, data, profile, 256, None, "average")
    assert scratch.read_bytes() == in_memory.read_bytes()
    with rasterio.open(scratch) as ds:
        np.testing.assert_array_equal(ds.read(), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.tif", "scratch.tif"]  # no scratch left


def test_a_failure_mid_write_leaves_nothing(tmp_path: Path) -> None:
    data = np.ones((3, 600, 600), "float32")
    dst = tmp_path / "x.tif"
    with pytest.raises(RuntimeError, match="reader died"), CogSink(
        dst, width=600, height=600, count=3, dtype="float32", crs="EPSG:32611",
        transform=Affine(5.0, 0, 0, 0, -5.0, 0), nodata=None,
    ) as sink:  # fmt: skip
        sink.write(data[:, :256, :256], (0, 256), (0, 256))
        raise RuntimeError("reader died")
    assert list(tmp_path.iterdir()) == []


def test_a_window_written_in_part_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="written only in part"), CogSink(
        tmp_path / "x.tif", width=300, height=300, count=1, dtype="float32", crs="EPSG:32611",
        transform=Affine(5.0, 0, 0, 0, -5.0, 0), nodata=None,
    ) as sink:  # fmt: skip
        sink.write(np.ones((100, 100), "float32"), (0, 100), (0, 100))
    assert list(tmp_path.iterdir()) == []


# --- the outputs before and after the change --------------------------------------------------

#: _short(cog_digest(...)) of each output, written by commit a8099d6 (GDAL compressed every tile)
BEFORE = {
    "ng-l1b": "480720bade71cce5",
    "ng-l1b-rotated": "c2b31f6cc091e7e7",
    "classic-l2": "66d40635484b1743",
    "emit-l2a-glt": "ed9e7436668c3de4",
    "index:NDVI": "b04a95edcc0fda4f",
    "tree-mortality": "a2b03cc5218e2dbb",
    "index:EVI-multi-tile": "f9f0ea12023f197b",
}


def _outputs(tmp: Path) -> dict[str, Path]:
    prof = CogProfile(blocksize=256, compress="ZSTD", level=9)
    out: dict[str, Path] = {}
    for name, kw in {
        "ng-l1b": {"source": "aviris-ng", "level": "l1b", "width": 300, "height": 280, "seed": 4},
        "ng-l1b-rotated": {"source": "aviris-ng", "level": "l1b", "rotation_deg": 23.0, "seed": 5},
        "classic-l2": {"source": "aviris-classic", "level": "l2", "width": 90, "height": 110, "seed": 6},
    }.items():
        hdr = synthesize(tmp / name, **kw)  # type: ignore[arg-type]
        out[name] = tmp / f"{name}.tif"
        write_cog(read_scene(str(hdr)), out[name], prof)
    nc = synthesize_emit(tmp / "emit", level="l2a", crosstrack=40, downtrack=52, seed=2)
    out["emit-l2a-glt"] = tmp / "emit.tif"
    write_cog(read_scene(str(nc)), out["emit-l2a-glt"], prof)
    refl = synthesize(tmp / "refl", source="aviris-ng", level="l2", width=120, height=140, seed=8)
    cube = tmp / "refl.tif"
    write_cog(read_scene(str(refl)), cube, prof)
    for product in ("index:NDVI", "tree-mortality"):
        out[product] = tmp / f"{product.replace(':', '_')}.tif"
        run_product(get_product(product), str(cube), str(out[product]))
    # a product over many tiles, source windows unaligned with the product's 512 blocks
    wl = np.linspace(380.0, 2500.0, 60)
    rng = np.random.default_rng(3)
    data = (rng.uniform(0.05, 0.5, size=(60, 700, 1100)) * 1e4).astype("int16")
    src = write_activated_cog(
        tmp / "many.tif", band_table(wl, 35.0, scale=1e-4), data, dtype="int16", nodata=-9999, block=256
    )
    out["index:EVI-multi-tile"] = tmp / "evi.tif"
    run_product(get_product("index:EVI"), str(src), str(out["index:EVI-multi-tile"]))
    return out


def test_outputs_are_identical_to_the_writer_before_the_change(tmp_path: Path) -> None:
    got = {name: _short(cog_digest(path)) for name, path in _outputs(tmp_path).items()}
    assert got == BEFORE
