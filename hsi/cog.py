"""Analysis-ready cube writing: scene -> band-interleaved Cloud-Optimized GeoTIFF, in bounded memory.

The cube is never loaded whole. The source binary is read tile by tile with positioned reads
(:mod:`hsi.cube`) driven by our own parsed :class:`~hsi.scene.SceneMetadata` (every ENVI data
type, byte order and interleave; band metadata from our header parsing, not GDAL's guesses). A
rotated sensor grid is resampled north-up by inverse-mapping each output tile (nearest
neighbour; fill = nodata). :class:`CogSink` compresses the tiles on every core while the next
window is read (:mod:`hsi.tiles`) and writes them after a header GDAL writes, in the COG layout
GDAL's ``COPY_SRC_OVERVIEWS`` gives (the former path, kept for codecs :mod:`hsi.tiles` does not
encode: a tiled staging GeoTIFF that GDAL copied, recompressing every tile on one thread per band
block). The outputs are pixel-identical (tests/unit/test_cog_tiles.py). Measured: a WarpedVRT + ``cog_translate`` path was ~2000x slower on rotated 425-band grids, and
``rio cogeo create``'s peak memory grows with the scene while this writer's stays flat
(benchmarks/activation.py).

Layout decisions (see docs/ARCHITECTURE.md and benchmarks/activation.py):

* ``INTERLEAVE=BAND`` so a product reading k of N bands does I/O proportional to k. GDAL 3.10's
  COG driver ignores INTERLEAVE; the GTiff + ``COPY_SRC_OVERVIEWS`` path honours it.
* No overviews on the cube by default: on a 425-band cube they cost many times the write; the
  small RGB quicklook COG (:func:`write_quicklook`) carries the full pyramid instead.
* Raw digital numbers are kept with per-band scale/offset (AVIRIS-Classic gains, reflectance
  scale factors), so int16 cubes stay int16; ``read()`` returns raw values, apply scales to get
  physical values.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rasterio.transform import Affine
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_translate

from hsi import tile_codec, tiles
from hsi.cog_profile import CogProfile
from hsi.cube import open_cube, read_rotated_window
from hsi.faults import fault_point
from hsi.geo import bbox_of, footprint
from hsi.scene import (
    IMAGERY_DOMAIN,
    TAG_FWHM,
    TAG_GOOD,
    TAG_IMAGERY_FWHM_UM,
    TAG_IMAGERY_WAVELENGTH_UM,
    TAG_WAVELENGTH,
    SceneMetadata,
    nearest_good_band,
)

__all__ = [
    "CogInfo",
    "CogProfile",
    "Progress",
    "band_tags",
    "default_nodata",
    "CogSink",
    "write_cog",
    "write_quicklook",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)

#: the widest window of a BIL or BSQ cube read at once (its lines are read once per window)
_WIDE_WINDOW_BYTES = 320 << 20


@dataclass(frozen=True)
class CogInfo:
    """What was written (feeds the STAC item)."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs_wkt: str | None
    epsg: int | None
    transform: tuple[float, ...]
    # lon/lat (EPSG:4326); None without georeferencing (a pixel grid has no place on the map)
    bbox: tuple[float, float, float, float] | None
    footprint: dict[str, Any] | None  # GeoJSON polygon in EPSG:4326 (the scene's true outline)
    interleave: str
    #: creation options as read back from the written file (compress, predictor, blocksize, overviews)
    written: dict[str, Any] = field(default_factory=dict)


def default_nodata(dtype: str) -> float:
    """Fill value for a dtype when the source declares none (needed for rotated grids)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return -9999.0
    info = np.iinfo(dt)
    return float(info.min if dt.kind == "i" else info.max)


class CogSink:
    """Stream windows into a band-interleaved COG at ``dst``, compressing tiles on every core.

    ``write(array, rows, cols)`` any number of times (any windows; each pixel once); leaving the
    ``with`` block without error finishes the file next to ``dst`` and renames it into place. On
    error nothing is left at ``dst``. Tiles are encoded by :mod:`hsi.tiles` on a thread pool while
    the caller reads its next window, and assembled after a GDAL-written header in the COG layout;
    GDAL builds the overviews (when the profile asks for them) from an uncompressed staging file, as
    before. Memory is bounded by the tiles in flight (about two windows) plus partly written tiles.
    A compression :mod:`hsi.tiles` does not encode goes through GDAL: a tiled staging GeoTIFF copied
    into the COG layout (``COPY_SRC_OVERVIEWS``, as rio-cogeo does). So is an output of one tile per
    band (a product of a small scene), from an in-memory staging file: the tile path's header
    template would cost more than its tiles (the batch's 16 x 16 products: ~31 against ~35 ms each).

    ``array`` must not be modified after ``write`` returns (the sink may still be encoding it).
    """

    def __init__(
        self,
        dst: str | Path,
        *,
        width: int,
        height: int,
        count: int,
        dtype: str,
        crs: Any,
        transform: Affine,
        nodata: float | None,
        profile: CogProfile | None = None,
        descriptions: Sequence[str] | None = None,
        band_tags: Sequence[Mapping[str, str]] | None = None,
        band_ns_tags: Sequence[Mapping[str, Mapping[str, str]]] | None = None,
        scales: Sequence[float] | None = None,
        offsets: Sequence[float] | None = None,
        tags: Mapping[str, str] | None = None,
        overview_resampling: str = "nearest",
    ) -> None:
        self.dst = Path(dst)
        self.profile = profile or CogProfile()
        self.meta: dict[str, Any] = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": count,
            "dtype": dtype,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": self.profile.blocksize,
            "blockysize": self.profile.blocksize,
            "interleave": "band",
            "bigtiff": "YES" if width * height * count * np.dtype(dtype).itemsize > 3.5e9 else "NO",
        }
        self.descriptions = descriptions
        self.band_tags = band_tags
        self.band_ns_tags = band_ns_tags
        self.scales = scales
        self.offsets = offsets
        self.tags = dict(tags or {})
        self.overview_resampling = overview_resampling
        self._ds: Any = None  # the uncompressed staging file (GDAL path, or overviews to build)
        self._tmpdir: str | None = None
        self._tiles: tiles.TileWriter | None = None
        self._memfile: MemoryFile | None = None

    @property
    def _levels(self) -> list[int]:
        return [2**j for j in range(1, self.profile.overview_level + 1)]

    def __enter__(self) -> CogSink:
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = tempfile.mkdtemp(prefix=f".{self.dst.name}.", dir=self.dst.parent)
        try:
            if tile_codec.supported(self.profile.compress) and not self._single_tile():
                try:
                    self._tiles = tiles.TileWriter(self, Path(self._tmpdir))
                except ValueError as e:  # a header this module cannot patch: GDAL writes the tiles
                    log.warning("%s; GDAL writes the tiles", e)
            if self._tiles is None or self._levels:
                self._ds = self._staging()
        except BaseException:
            self._cleanup()
            raise
        return self

    def _staging(self) -> Any:
        """The uncompressed staging file: in memory when small (the overviews of a product), else
        next to ``dst``."""
        if self._single_tile() or (
            self._tiles is not None and self._raw_bytes() <= tiles.MEMORY_STAGING_BYTES
        ):
            self._memfile = MemoryFile()
            return self._memfile.open(**self.meta)
        return rasterio.open(Path(self._tmpdir or ".") / "staging.tif", "w", **self.meta)

    def _single_tile(self) -> bool:
        """One tile per band: GDAL writes the file at once (no header template to build)."""
        b = self.profile.blocksize
        return bool(self.meta["width"] <= b and self.meta["height"] <= b)

    def _raw_bytes(self) -> int:
        m = self.meta
        return int(m["width"] * m["height"] * m["count"] * np.dtype(m["dtype"]).itemsize)

    def block_windows(self, max_cols: int = 0) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Write windows: one block row high, ``max_cols`` wide (block-aligned; default one block)."""
        b = self.profile.blocksize
        step = max(b, (max_cols // b) * b)
        w, h = self.meta["width"], self.meta["height"]
        return [
            ((r, min(r + b, h)), (c, min(c + step, w))) for r in range(0, h, b) for c in range(0, w, step)
        ]

    def write(self, array: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        if array.ndim == 2:
            array = array[np.newaxis]
        if self._ds is not None:
            self._ds.write(array, window=Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0]))
        if self._tiles is not None:
            self._tiles.write(array, rows, cols)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        ds, self._ds = self._ds, None
        try:
            if exc_type is not None:
                if ds is not None:
                    ds.close()
                if self._tiles is not None:
                    self._tiles.abort()
                return
            part = Path(self._tmpdir or ".") / "final.tif"  # same filesystem as dst: atomic rename
            if self._tiles is not None:
                if ds is not None:  # overviews: GDAL builds them from the staging file
                    ds.build_overviews(self._levels, Resampling[self.overview_resampling])
                    ds.close()
                    self._tiles.add_overviews(ds.name)
                self._tiles.finish(part)
            else:
                self._describe(ds)
                if self._levels:
                    ds.build_overviews(self._levels, Resampling[self.overview_resampling])
                ds.close()
                opts = self.profile.creation_options(self.meta["dtype"])
                opts["bigtiff"] = self.meta["bigtiff"]
                rio_copy(ds.name, str(part), copy_src_overviews=True, **opts)
            os.replace(part, self.dst)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        if self._memfile is not None:
            self._memfile.close()
            self._memfile = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _describe(self, ds: Any) -> None:
        for i in range(self.meta["count"]):
            if self.descriptions:
                ds.set_band_description(i + 1, self.descriptions[i])
            if self.band_tags:
                ds.update_tags(i + 1, **self.band_tags[i])
            if self.band_ns_tags:
                for ns, t in self.band_ns_tags[i].items():
                    ds.update_tags(i + 1, ns=ns, **t)
        if self.scales:
            ds.scales = tuple(self.scales)
        if self.offsets:
            ds.offsets = tuple(self.offsets)
        if self.tags:
            ds.update_tags(**self.tags)


def _north_up(meta: SceneMetadata) -> tuple[Affine, int, int]:
    """North-up grid covering a rotated scene at its native resolution."""
    t = Affine(*meta.transform)  # type: ignore[misc]
    w, h = meta.layout.width, meta.layout.height
    left, bottom, right, top = _rotated_bounds(t, w, h)
    xres, yres = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    width, height = math.ceil((right - left) / xres - 1e-9), math.ceil((top - bottom) / yres - 1e-9)
    return Affine(xres, 0.0, left, 0.0, -yres, top), width, height


def _rotated_bounds(t: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    xs, ys = zip(*(t @ (c, r) for c, r in ((0, 0), (width, 0), (width, height), (0, height))), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def band_tags(meta: SceneMetadata) -> tuple[list[dict[str, str]], list[dict[str, dict[str, str]]]]:
    """Per-band tags (default and IMAGERY domains) of the scene's bands, as every cube COG carries."""
    tags, ns_tags = [], []
    for b in meta.bands:
        t = {TAG_GOOD: "1" if b.good else "0"}
        im: dict[str, str] = {}
        if b.center_wavelength is not None:
            t[TAG_WAVELENGTH] = repr(b.center_wavelength)
            im[TAG_IMAGERY_WAVELENGTH_UM] = repr(b.center_wavelength / 1000.0)
        if b.fwhm is not None:
            t[TAG_FWHM] = repr(b.fwhm)
            im[TAG_IMAGERY_FWHM_UM] = repr(b.fwhm / 1000.0)
        tags.append(t)
        ns_tags.append({IMAGERY_DOMAIN: im} if im else {})
    return tags, ns_tags


def scene_sink(
    meta: SceneMetadata,
    dst_path: str | Path,
    profile: CogProfile,
    *,
    width: int,
    height: int,
    crs: CRS | None,
    transform: Affine,
    nodata: float | None,
    extra_tags: Mapping[str, str] | None = None,
) -> CogSink:
    """The :class:`CogSink` of a scene's cube on a given grid: the scene's dtype, band descriptions,
    band tags, scales and offsets, and the ``HSI_*`` dataset tags (both writers use it)."""
    tags, ns_tags = band_tags(meta)
    return CogSink(
        dst_path,
        width=width,
        height=height,
        count=meta.layout.count,
        dtype=np.dtype(meta.layout.dtype).name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        profile=profile,
        descriptions=[b.description() for b in meta.bands],
        band_tags=tags,
        band_ns_tags=ns_tags,
        scales=[b.scale for b in meta.bands],
        offsets=[b.offset for b in meta.bands],
        tags={
            "HSI_SCENE_ID": meta.scene_id,
            "HSI_SOURCE": meta.source,
            "HSI_QUANTITY": meta.quantity,
            **(extra_tags or {}),
            **({"HSI_UNITS": meta.units} if meta.units else {}),
        },
    )


def write_cog(
    meta: SceneMetadata,
    dst_path: str | Path,
    profile: CogProfile | None = None,
    *,
    progress: Progress | None = None,
) -> CogInfo:
    """Write the scene as one band-interleaved COG at ``dst_path`` (a local path) in bounded memory.

    The cube is read and written one output tile at a time. The COG keeps the source's digital
    numbers; per-band scale/offset make them physical. A rotated grid is resampled north-up
    (nearest neighbour) with fill = nodata. The COG appears at ``dst_path`` only when complete.
    """
    if meta.glt is not None:  # sensor geometry: exact lookup through the GLT
        from hsi.glt import write_cog_glt

        info: CogInfo = write_cog_glt(meta, dst_path, profile, progress=progress)
        return info
    profile = profile or CogProfile()
    georef = meta.crs_wkt is not None and meta.transform is not None  # a CRS without a grid places nothing
    if not georef:
        log.warning("%s: no georeferencing in the header; the COG carries pixel coordinates", meta.scene_id)
    cube = open_cube(meta)
    nodata = meta.nodata
    if nodata is None and meta.is_rotated:
        nodata = default_nodata(meta.layout.dtype)
    src_t = Affine(*meta.transform) if meta.transform else Affine.identity()
    if meta.is_rotated:
        dst_t, width, height = _north_up(meta)
        log.info(
            "%s: rotated grid -> north-up %dx%d (nearest, fill %s)", meta.scene_id, width, height, nodata
        )
    else:
        dst_t, width, height = src_t, meta.layout.width, meta.layout.height
    crs = CRS.from_wkt(meta.crs_wkt) if georef and meta.crs_wkt else None
    sink = scene_sink(
        meta, dst_path, profile, width=width, height=height, crs=crs, transform=dst_t, nodata=nodata
    )
    env = {"GDAL_CACHEMAX": 256, "GDAL_NUM_THREADS": "ALL_CPUS"}
    with rasterio.Env(**env), cube, sink:
        wide = 0
        if not meta.is_rotated and meta.layout.interleave in ("bil", "bsq"):
            # a BIL line (a BSQ band row) holds every column: read each once, in windows as wide
            # as _WIDE_WINDOW_BYTES allows, rather than once per tile column
            per_col = meta.layout.count * profile.blocksize * np.dtype(meta.layout.dtype).itemsize
            wide = _WIDE_WINDOW_BYTES // per_col
        windows = sink.block_windows(max_cols=wide)
        for k, (rows, cols) in enumerate(windows, start=1):
            if meta.is_rotated:
                block = read_rotated_window(cube, src_t, dst_t, rows, cols, nodata)  # type: ignore[arg-type]
            else:
                block = cube.read(rows, cols)
            sink.write(block, rows, cols)
            if progress is not None:
                progress(k, len(windows))
            if k == (len(windows) + 1) // 2:
                fault_point("mid-cog")
    fp = footprint(src_t, meta.layout.width, meta.layout.height, crs) if crs is not None else None
    with rasterio.open(dst_path) as out:
        return CogInfo(
            path=str(dst_path),
            width=out.width,
            height=out.height,
            count=out.count,
            dtype=out.dtypes[0],
            nodata=out.nodata,
            crs_wkt=crs.to_wkt() if crs else None,
            epsg=crs.to_epsg() if crs else None,
            transform=tuple(out.transform)[:6],
            bbox=bbox_of(fp) if fp else None,
            footprint=fp,
            interleave=(out.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") or "").upper(),
            written=written_options(out),
        )


def written_options(ds: Any) -> dict[str, Any]:
    """The creation options a GeoTIFF was actually written with, as GDAL reports them (open dataset)."""
    ims = ds.tags(ns="IMAGE_STRUCTURE")
    pred = ims.get("PREDICTOR")
    by, bx = ds.block_shapes[0]
    return {
        "compress": (ims.get("COMPRESSION") or "NONE").upper(),
        "predictor": int(pred) if pred else 1,  # GDAL reports none for the default (1 = no predictor)
        "blocksize": bx if bx == by else [bx, by],
        "overview_level": len(ds.overviews(1)),
    }


def write_quicklook(
    cog_path: str | Path,
    rgb_cog_path: str | Path,
    png_path: str | Path,
    *,
    rgb_nm: tuple[float, float, float] = (640.0, 550.0, 460.0),
    png_size: int = 512,
) -> tuple[int, int, int]:
    """True-colour quicklooks: a full-resolution RGB COG with the overview pyramid, and a small PNG.

    Bands nearest to ``rgb_nm`` (good bands only, argmin |Δλ|: wavelength lists need not be
    monotonic) are stretched to 8 bits with a 2-98 % percentile stretch measured on a decimated
    read. Memory is bounded: the RGB COG is written window by window.
    Returns the 1-based band indexes used (r, g, b).
    """
    from hsi.scene import bands_from_dataset

    rgb_cog_path, png_path = Path(rgb_cog_path), Path(png_path)
    with rasterio.open(cog_path) as src:
        bands = bands_from_dataset(src)
        idx = tuple(found[0].index if (found := nearest_good_band(bands, nm)) else 1 for nm in rgb_nm)
        scale = max(src.width, src.height) / png_size
        ow, oh = max(1, round(src.width / max(scale, 1))), max(1, round(src.height / max(scale, 1)))
        small = src.read(list(idx), out_shape=(3, oh, ow), masked=True, resampling=Resampling.nearest)
        small = small.astype("float64")
        lo_hi = []
        for k in range(3):
            vals = small[k].compressed()
            lo_hi.append(tuple(np.percentile(vals, (2, 98))) if vals.size else (0.0, 1.0))

        def stretch(a: np.ma.MaskedArray) -> tuple[np.ndarray, np.ndarray]:
            out = np.zeros(a.shape, dtype="uint8")
            for k in range(3):
                lo, hi = lo_hi[k]
                span = (hi - lo) or 1.0
                out[k] = np.clip((a[k].filled(lo) - lo) / span * 254 + 1, 1, 255).astype("uint8")
            valid = np.asarray(~np.ma.getmaskarray(a).any(axis=0))
            out[:, ~valid] = 0
            return out, valid

        png, _ = stretch(small)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), MemoryFile() as mem:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            m = mem.open(driver="GTiff", width=ow, height=oh, count=3, dtype="uint8")
            m.write(png)
            rio_copy(m, str(png_path), driver="PNG")
            m.close()
        png_path.with_name(png_path.name + ".aux.xml").unlink(missing_ok=True)

        tmp = Path(
            tempfile.mkdtemp(
                prefix="hsi-rgb-", dir=rgb_cog_path.parent if rgb_cog_path.parent.exists() else None
            )
        )
        try:
            staging = tmp / "rgb.tif"
            meta = {
                "driver": "GTiff",
                "width": src.width,
                "height": src.height,
                "count": 3,
                "dtype": "uint8",
                "crs": src.crs,
                "transform": src.transform,
                "nodata": 0,
                "tiled": True,
                "blockxsize": 256,
                "blockysize": 256,
            }
            with rasterio.open(staging, "w", **meta) as dst:
                for _, w in dst.block_windows(1):
                    block, _valid = stretch(src.read(list(idx), window=w, masked=True).astype("float64"))
                    dst.write(block, window=w)
                dst.descriptions = tuple(
                    f"{c} {bands[i - 1].description()}" for c, i in zip("RGB", idx, strict=True)
                )
            rgb_cog_path.parent.mkdir(parents=True, exist_ok=True)
            cog_translate(
                str(staging),
                str(rgb_cog_path),
                {
                    "driver": "GTiff",
                    "tiled": True,
                    "blockxsize": 256,
                    "blockysize": 256,
                    "compress": "DEFLATE",
                    "interleave": "pixel",
                    "photometric": "RGB",
                },
                nodata=0,
                overview_resampling="average",
                in_memory=False,
                quiet=True,
            )
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return idx  # type: ignore[return-value]
