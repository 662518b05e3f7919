"""Orthorectification through a geometric lookup table (GLT), exact and in bounded memory.

A GLT is a map grid whose two integer layers name, for every output pixel, the sensor pixel
(sample, line) that goes there (:class:`hsi.scene.GltRef`). Conventions (ENVI GLT, EMIT and
AVIRIS-NG product documents): entries are **1-based**; **0 = no sensor pixel** (the output pixel
is fill); AVIRIS-NG writes **negative** entries where a pixel was filled from its nearest
neighbour, the pixel being ``abs(v)`` (``GltRef.infill=False`` treats those as no pixel).

Every output pixel is *exactly* the sensor pixel its GLT entry names: no resampling, no
interpolation. When the GLT grid is rotated (AVIRIS-NG ``map info`` with ``rotation=``), the
output grid is north-up at the GLT's resolution and each output pixel takes the GLT entry of the
GLT cell whose area holds its centre (nearest), then that entry's sensor pixel.

Streaming: :func:`write_cog_glt` walks the output in COG blocks; for each block it reads that
block of the GLT, then only the sensor lines the block names, in slabs of at most
``budget_bytes`` (:func:`orthorectify_window`). Memory is one output block plus one slab,
whatever the scene size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from hsi.cube import CubeReader, open_cube
from hsi.errors import DataFileError
from hsi.scene import GltRef, SceneMetadata

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "GltReader",
    "attach_glt",
    "glt_from_envi",
    "glt_output_grid",
    "open_glt",
    "orthorectify_raster",
    "orthorectify_window",
    "write_cog_glt",
]

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 64 << 20  # sensor slab per read


class GltReader:
    """Windowed reads of a GLT: ``read(rows, cols)`` -> 0-based (sample, line) arrays, -1 = none."""

    def __init__(self, ref: GltRef) -> None:
        self.ref = ref
        self.shape = (ref.height, ref.width)
        self._nc: Any = None
        self._cube: Any = None
        if ref.x_variable is not None and ref.y_variable is not None:
            import h5netcdf

            from hsi.netcdf import open_variable

            self._nc = h5netcdf.File(ref.path, "r")
            self._x = open_variable(self._nc, ref.path, ref.x_variable)
            self._y = open_variable(self._nc, ref.path, ref.y_variable)
            if self._x.shape != self.shape or self._y.shape != self.shape:
                raise DataFileError(
                    ref.path, f"GLT layers are {self._x.shape}/{self._y.shape}, expected {self.shape}"
                )
        elif ref.layout is not None:
            from hsi.cube import Cube

            if ref.layout.count < 2:
                raise DataFileError(ref.path, "an ENVI GLT needs 2 bands (sample, line)")
            self._cube = Cube(ref.layout)
        else:
            raise ValueError("GltRef needs netCDF variables or an ENVI layout")

    def read_raw(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The GLT entries as stored (1-based, 0 = none, negative = infill)."""
        (r0, r1), (c0, c1) = rows, cols
        if self._nc is not None:
            return (
                np.asarray(self._x[r0:r1, c0:c1]).astype(np.int64),
                np.asarray(self._y[r0:r1, c0:c1]).astype(np.int64),
            )
        block = self._cube.read(rows, cols)
        return block[0].astype(np.int64), block[1].astype(np.int64)

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """0-based sensor (sample, line) of every GLT cell in the window; -1 where there is none."""
        gx, gy = self.read_raw(rows, cols)
        return _decode(gx, gy, self.ref.infill)

    def close(self) -> None:
        if self._nc is not None:
            self._nc.close()
            self._nc = None
        if self._cube is not None:
            self._cube.close()
            self._cube = None

    def __enter__(self) -> GltReader:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _decode(gx: np.ndarray, gy: np.ndarray, infill: bool) -> tuple[np.ndarray, np.ndarray]:
    none = (gx == 0) | (gy == 0)
    if not infill:
        none |= (gx < 0) | (gy < 0)
    sx = np.where(none, -1, np.abs(gx) - 1)
    sy = np.where(none, -1, np.abs(gy) - 1)
    return sx, sy


def glt_from_envi(path: Path | str, *, infill: bool = True) -> GltRef:
    """The GLT of an ENVI GLT file (header or data path): 2 integer bands (sample, line), its grid
    from ``map info`` (rotation allowed)."""
    from hsi.errors import HeaderError
    from hsi.scene import RasterLayout
    from hsi.sources.envi import check_data_file, find_data_file, find_header, read_header
    from hsi.sources.georef import map_info_crs_wkt, map_info_transform

    p = Path(path)
    hdr_path = p if p.suffix == ".hdr" else find_header(p)
    if hdr_path is None:
        raise HeaderError(p, "no ENVI header found for this GLT")
    hdr = read_header(hdr_path)
    lay = RasterLayout(
        data_path=find_data_file(hdr.path) if p.suffix == ".hdr" else p,
        header_path=hdr.path,
        width=hdr.samples,
        height=hdr.lines,
        count=hdr.bands,
        dtype=hdr.dtype,
        interleave=hdr.interleave,  # type: ignore[arg-type]
        byte_order=hdr.byte_order_name,  # type: ignore[arg-type]
        header_offset=hdr.header_offset,
    )
    check_data_file(lay)
    if lay.count < 2 or np.dtype(lay.dtype).kind not in "iu":
        raise HeaderError(
            hdr.path, f"a GLT has 2 integer bands (sample, line), this has {lay.count} x {lay.dtype}"
        )
    if hdr.map_info is None:
        raise HeaderError(hdr.path, "a GLT needs 'map info' (its output grid)", field="map info")
    transform = map_info_transform(hdr.map_info)
    crs_wkt = map_info_crs_wkt(hdr.map_info, hdr.coordinate_system_string, hdr.path)
    return GltRef(
        path=lay.data_path,
        width=lay.width,
        height=lay.height,
        transform=transform,
        crs_wkt=crs_wkt,
        layout=lay,
        infill=infill,
    )


def attach_glt(meta: SceneMetadata, glt: GltRef) -> SceneMetadata:
    """``meta`` as a sensor-geometry scene orthorectified through ``glt`` (its map grid = the GLT's)."""
    from dataclasses import replace

    return replace(meta, glt=glt, transform=glt.transform, crs_wkt=glt.crs_wkt)


def open_glt(ref: GltRef) -> GltReader:
    return GltReader(ref)


def glt_output_grid(ref: GltRef) -> tuple[Affine, int, int]:
    """The output grid: the GLT grid itself, or a north-up grid covering it when it is rotated."""
    t = Affine(*ref.transform)
    if not ref.is_rotated:
        return t, ref.width, ref.height
    xs, ys = zip(
        *(t @ (c, r) for c, r in ((0, 0), (ref.width, 0), (ref.width, ref.height), (0, ref.height))),
        strict=True,
    )
    left, bottom, right, top = min(xs), min(ys), max(xs), max(ys)
    xres, yres = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    width = math.ceil((right - left) / xres - 1e-9)
    height = math.ceil((top - bottom) / yres - 1e-9)
    return Affine(xres, 0.0, left, 0.0, -yres, top), width, height


def _glt_window(
    glt: GltReader, dst_t: Affine, rows: tuple[int, int], cols: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(sample, line) 0-based for every pixel of an output window (-1 = fill)."""
    ref = glt.ref
    if not ref.is_rotated:
        return glt.read(rows, cols)
    (r0, r1), (c0, c1) = rows, cols
    cc, rr = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    x = dst_t.a * cc + dst_t.b * rr + dst_t.c
    y = dst_t.d * cc + dst_t.e * rr + dst_t.f
    inv = ~Affine(*ref.transform)
    gc = np.floor(inv.a * x + inv.b * y + inv.c).astype(np.int64)
    gr = np.floor(inv.d * x + inv.e * y + inv.f).astype(np.int64)
    inside = (gc >= 0) & (gc < ref.width) & (gr >= 0) & (gr < ref.height)
    sx = np.full(gc.shape, -1, dtype=np.int64)
    sy = np.full(gc.shape, -1, dtype=np.int64)
    if inside.any():
        gr0, gr1 = int(gr[inside].min()), int(gr[inside].max()) + 1
        gc0, gc1 = int(gc[inside].min()), int(gc[inside].max()) + 1
        bx, by = glt.read((gr0, gr1), (gc0, gc1))
        sx[inside] = bx[gr[inside] - gr0, gc[inside] - gc0]
        sy[inside] = by[gr[inside] - gr0, gc[inside] - gc0]
    return sx, sy


def orthorectify_window(
    cube: CubeReader,
    sample: np.ndarray,
    line: np.ndarray,
    fill: float,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    path: Path | str = "<cube>",
) -> np.ndarray:
    """(bands, h, w): ``out[:, i, j] = cube[:, line[i, j], sample[i, j]]``, ``fill`` where < 0.

    Reads only the sensor lines the window names, in slabs of at most ``budget_bytes``.
    """
    n, lines, samples = cube.shape
    valid = (sample >= 0) & (line >= 0)
    out = np.full((n, *sample.shape), fill, dtype=cube.dtype)
    if not valid.any():
        return out
    vs, vl = sample[valid], line[valid]
    if int(vs.max()) >= samples or int(vl.max()) >= lines:
        raise DataFileError(
            path,
            f"the GLT names sensor pixel (sample {int(vs.max()) + 1}, line {int(vl.max()) + 1}) outside "
            f"the {samples} x {lines} cube: GLT and cube do not belong together",
        )
    c0, c1 = int(vs.min()), int(vs.max()) + 1
    l0, l1 = int(vl.min()), int(vl.max()) + 1
    line_bytes = n * (c1 - c0) * cube.dtype.itemsize
    step = max(1, budget_bytes // max(1, line_bytes))
    vals = np.empty((n, vs.size), dtype=cube.dtype)
    # a reader that keeps the pixel-interleaved order (EMIT netCDF) gathers the named pixels from the
    # slab as stored, instead of transposing the whole slab to (band, line, sample) first
    pixels = getattr(cube, "read_pixels", None)
    for a in range(l0, l1, step):
        b = min(a + step, l1)
        sel = (vl >= a) & (vl < b)
        if not sel.any():
            continue
        if pixels is not None:
            vals[:, sel] = pixels((a, b), (c0, c1))[vl[sel] - a, vs[sel] - c0].T
        else:
            vals[:, sel] = cube.read((a, b), (c0, c1))[:, vl[sel] - a, vs[sel] - c0]
    out[:, valid] = vals
    return out


def write_cog_glt(
    meta: SceneMetadata,
    dst_path: str | Path,
    profile: Any = None,
    *,
    progress: Any = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> Any:
    """A sensor-geometry scene orthorectified through its GLT into one band-interleaved COG.

    Same profile, band description and tags as :func:`hsi.cog.write_cog` (which calls this for
    scenes with ``meta.glt``); fill = the scene's nodata (or the dtype default).
    """
    from hsi.cog import CogInfo, CogProfile, default_nodata, scene_sink
    from hsi.geo import bbox_of, footprint

    if meta.glt is None:
        raise ValueError(f"{meta.scene_id}: no GLT")
    ref = meta.glt
    profile = profile or CogProfile()
    nodata = meta.nodata if meta.nodata is not None else default_nodata(meta.layout.dtype)
    dst_t, width, height = glt_output_grid(ref)
    crs = CRS.from_wkt(ref.crs_wkt) if ref.crs_wkt else None
    log.info(
        "%s: sensor geometry %dx%d -> GLT grid %dx%d (exact lookup, fill %s)",
        meta.scene_id,
        meta.layout.width,
        meta.layout.height,
        width,
        height,
        nodata,
    )
    sink = scene_sink(
        meta,
        dst_path,
        profile,
        width=width,
        height=height,
        crs=crs,
        transform=dst_t,
        nodata=nodata,
        extra_tags={"HSI_GEOMETRY": "glt-orthorectified"},
    )
    env = {"GDAL_CACHEMAX": 256, "GDAL_NUM_THREADS": "ALL_CPUS"}
    with rasterio.Env(**env), open_cube(meta) as cube, open_glt(ref) as glt, sink:
        windows = sink.block_windows()
        for k, (rows, cols) in enumerate(windows, start=1):
            sx, sy = _glt_window(glt, dst_t, rows, cols)
            block = orthorectify_window(
                cube, sx, sy, nodata, budget_bytes=budget_bytes, path=meta.layout.data_path
            )
            sink.write(block, rows, cols)
            if progress is not None:
                progress(k, len(windows))
    fp = footprint(Affine(*ref.transform), ref.width, ref.height, crs)
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
            bbox=bbox_of(fp),
            footprint=fp,
            interleave=(out.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") or "").upper(),
        )


class _RasterCube:
    """A GDAL raster (e.g. a product computed in sensor geometry) as a :class:`hsi.cube.CubeReader`."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.shape = (ds.count, ds.height, ds.width)
        self.dtype: np.dtype[Any] = np.dtype(ds.dtypes[0])

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        from rasterio.windows import Window

        (r0, r1), (c0, c1) = rows, cols
        return np.asarray(self.ds.read(window=Window(c0, r0, c1 - c0, r1 - r0)))

    def close(self) -> None:  # the dataset belongs to the caller
        pass

    def __enter__(self) -> _RasterCube:
        return self

    def __exit__(self, t: Any, e: Any, tb: Any) -> None:
        pass


def orthorectify_raster(
    src_path: str | Path,
    ref: GltRef,
    dst_path: str | Path,
    profile: Any = None,
    *,
    overview_resampling: str = "nearest",
    extra_tags: dict[str, str] | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> tuple[int, int]:
    """A raster in the GLT's sensor geometry (its size = the sensor cube's) into a COG on the GLT's
    grid, by the same exact lookup as :func:`write_cog_glt`; dtype, nodata (the fill), band
    descriptions, band tags and dataset tags are kept. Returns the output (width, height).

    This is how a product computed before orthorectification (EMIT's own practice) is
    orthorectified after: every output pixel is the product value of the sensor pixel its GLT
    entry names."""
    from hsi.cog import CogProfile, CogSink, default_nodata

    dst_t, width, height = glt_output_grid(ref)
    crs = CRS.from_wkt(ref.crs_wkt) if ref.crs_wkt else None
    with rasterio.open(src_path) as src, open_glt(ref) as glt:
        cube = _RasterCube(src)
        fill = src.nodata if src.nodata is not None else default_nodata(src.dtypes[0])
        sink = CogSink(
            dst_path,
            width=width,
            height=height,
            count=src.count,
            dtype=src.dtypes[0],
            crs=crs,
            transform=dst_t,
            nodata=fill,
            profile=profile or CogProfile(),
            descriptions=list(src.descriptions),
            band_tags=[src.tags(b) for b in range(1, src.count + 1)],
            tags={**src.tags(), **(extra_tags or {})},
            overview_resampling=overview_resampling,
        )
        with rasterio.Env(GDAL_CACHEMAX=128, GDAL_NUM_THREADS="ALL_CPUS"), sink:
            for rows, cols in sink.block_windows():
                sx, sy = _glt_window(glt, dst_t, rows, cols)
                sink.write(orthorectify_window(cube, sx, sy, fill, budget_bytes=budget_bytes, path=src_path),
                           rows, cols)  # fmt: skip
    return width, height
