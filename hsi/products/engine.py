"""Windowed product engine: activated COG in, product COG out, bounded memory.

``run_product`` opens the activated cube (local path or ``/vsis3/...``), selects the product's
bands, iterates windows aligned to the COG block grid, reads ONLY the selected band indexes of
each window (raw values; nodata -> NaN; ``physical = raw*scale + offset``), calls the product's
``compute`` and streams every output window into :class:`hsi.cog.CogSink` (the project's one
streaming COG writer), which builds the overviews and lays out the final COG with band
descriptions, nodata and product tags. Nothing holds the whole cube or output in
memory: peak memory is one window of the selected bands plus one output window (full-spectrum
products shrink their windows to ``max_chunk_mb``).

Pixels where any selected input is nodata/NaN, or where the product returns a non-finite value,
become output nodata.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from hsi.cog import CogProfile, CogSink
from hsi.products.bands import select_bands, wavelength_map
from hsi.products.base import BandRequest, ComputeContext, OutputSpec, Params, Product, SelectedBand
from hsi.products.results import ProductResult, Stats, WindowStats, window_stats
from hsi.scene import BandInfo, bands_from_dataset

__all__ = [
    "compute_array",
    "decoding_threads",
    "iter_windows",
    "open_source",
    "overview_resampling",
    "product_profile",
    "run_on_dataset",
    "run_product",
]

log = logging.getLogger(__name__)

TAG_PREFIX = "HSI_"
QUANTITY_TAG = "HSI_QUANTITY"  # written by activation (hsi.cog): what the cube holds


def iter_windows(width: int, height: int, block: tuple[int, int], window_size: int) -> Iterator[Window]:
    """Windows aligned to the block grid, about ``window_size`` pixels on a side (>= one block)."""
    bh, bw = block
    wh = max(bh, (window_size // bh) * bh) if window_size >= bh else max(1, window_size)
    ww = max(bw, (window_size // bw) * bw) if window_size >= bw else max(1, window_size)
    for r in range(0, height, wh):
        for c in range(0, width, ww):
            yield Window(c, r, min(ww, width - c), min(wh, height - r))


class WindowReader:
    """Reads the selected bands of a window as physical float32 with NaN for nodata."""

    def __init__(
        self,
        ds: Any,
        product: Product,
        params: Params,
        selected: Sequence[SelectedBand],
        bands: Sequence[BandInfo],
        windows: list[Window],
        adjust: Sequence[Any] = (),
    ) -> None:
        self.ds = ds
        self.adjust = list(adjust)  # hsi.products.inputs (TOA reflectance, quality masks)
        self.windows = windows
        self.unique = sorted({s.index for s in selected})
        pos = {b: i for i, b in enumerate(self.unique)}
        info = {b.index: b for b in bands}
        self.scale = np.array([info[b].scale for b in self.unique], dtype=np.float32)[:, None, None]
        self.offset = np.array([info[b].offset for b in self.unique], dtype=np.float32)[:, None, None]
        self.groups: list[tuple[str, bool, list[int]]] = []
        for spec in product.input_specs(params):
            idx = [pos[s.index] for s in selected if s.input == spec.name]
            self.groups.append((spec.name, isinstance(spec, BandRequest), idx))
        self.nodata = ds.nodata

    def read(self, window: Window) -> dict[str, np.ndarray]:
        raw = self.ds.read(indexes=self.unique, window=window)
        arr = raw.astype(np.float32)
        if self.nodata is not None and not (isinstance(self.nodata, float) and math.isnan(self.nodata)):
            arr[raw == self.nodata] = np.nan
        del raw
        arr *= self.scale
        arr += self.offset
        for adj in self.adjust:
            adj(arr, self.unique, window)
        out = {}
        for name, single, idx in self.groups:
            out[name] = arr[idx[0]] if single else arr[idx]
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for w in self.windows:
            yield self.read(w)


@contextlib.contextmanager
def _prefetch(reader: WindowReader, windows: list[Window]) -> Iterator[Iterator[dict[str, np.ndarray]]]:
    """The reader's chunks of ``windows`` in order, each read on a thread while the caller works
    on the previous one (at most one chunk ahead). One window: read here, no thread to start."""
    if len(windows) <= 1:
        yield (reader.read(w) for w in windows)
        return
    pool = ThreadPoolExecutor(1, thread_name_prefix="product-read")

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        ahead = pool.submit(reader.read, windows[0]) if windows else None
        for k in range(len(windows)):
            assert ahead is not None
            chunk = ahead.result()
            ahead = pool.submit(reader.read, windows[k + 1]) if k + 1 < len(windows) else None
            yield chunk

    try:
        yield chunks()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finish(
    out: np.ndarray, chunk: Mapping[str, np.ndarray], spec: OutputSpec, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(output cast to spec.dtype with nodata, invalid mask (n_out, h, w))."""
    out = np.asarray(out)
    if out.ndim == 2:
        out = out[None]
    if out.shape[0] != spec.count:
        raise ValueError(f"product '{name}' returned {out.shape[0]} bands, declared {spec.count}")
    bad_in = np.zeros(out.shape[1:], dtype=bool)
    for a in chunk.values():
        bad_in |= np.isnan(a) if a.ndim == 2 else np.isnan(a).any(axis=0)
    invalid = ~np.isfinite(out) | bad_in[None]
    res = np.where(invalid, spec.nodata, out).astype(spec.dtype)
    return res, invalid


def _prepare(
    product: Product, bands: Sequence[BandInfo], scene_id: str, params: Mapping[str, Any] | Params | None
) -> tuple[Params, list[SelectedBand], ComputeContext]:
    p = product.parse_params(params)
    selected = select_bands(product, bands, scene_id, p)
    ctx = ComputeContext(
        product=product.name,
        scene_id=scene_id,
        selected=tuple(selected),
        wavelengths=wavelength_map(product, selected, p),
        output=product.output_spec(p),
    )
    return p, selected, ctx


def compute_array(
    product: Product,
    cube: np.ndarray,
    bands: Sequence[BandInfo],
    params: Mapping[str, Any] | Params | None = None,
    *,
    scene_id: str = "array",
    nodata: float | None = None,
    quantity: str | None = None,
) -> np.ndarray:
    """Run ``product`` on an in-memory raw cube (N, h, w) in one chunk (tests, notebooks).

    Same selection, scaling, nodata handling and output conversion as :func:`run_product`;
    ``quantity`` says what the cube holds (products with ``requires_quantity`` check it).
    """
    product.check_quantity(quantity, f"array '{scene_id}'")
    p, selected, ctx = _prepare(product, bands, scene_id, params)
    ctx.grid = {"width": int(cube.shape[2]), "height": int(cube.shape[1]), "crs": None, "transform": None}

    class _DS:
        def read(self, indexes: list[int], window: Window) -> np.ndarray:
            return cube[[i - 1 for i in indexes]]

    _DS.nodata = nodata  # type: ignore[attr-defined]
    reader = WindowReader(_DS(), product, p, selected, bands, [Window(0, 0, cube.shape[2], cube.shape[1])])
    if product.fit is not None:
        ctx.state = product.fit(reader, p, ctx)
    chunk = reader.read(reader.windows[0])
    res, _ = _finish(product.compute(chunk, p, ctx), chunk, ctx.output, product.name)
    return res


def _overview_levels(width: int, height: int, block: int) -> int:
    levels, size = 0, max(width, height)
    while size > block // 2 and min(width, height) >> (levels + 1) >= 1:
        size //= 2
        levels += 1
    return max(levels, 1) if min(width, height) >= 2 else 0


def run_product(
    product: Product,
    src_path: str,
    dst_path: str,
    params: Mapping[str, Any] | Params | None = None,
    *,
    window_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
    gdal_env: Mapping[str, Any] | None = None,
    scene_id: str | None = None,
    max_chunk_mb: float = 256.0,
    rasterio_env: Any = None,
    context: Mapping[str, Any] | None = None,
    adjust: Sequence[Any] = (),
    dask: Any = None,
    env_factory: Callable[[], Any] | None = None,
) -> ProductResult:
    """Compute ``product`` over the activated COG ``src_path`` into the COG ``dst_path`` (local).

    ``src_path`` is anything GDAL opens (local path, ``/vsis3/...``); ``rasterio_env`` (a
    ``rasterio.Env``, e.g. ``S3Store.rasterio_env()`` carrying credentials) replaces the plain
    ``rasterio.Env(**gdal_env)`` the source is read under. ``adjust``: window adjustments applied to
    the physical input values before ``compute`` (:mod:`hsi.products.inputs`: TOA reflectance, masks).
    ``dask`` (a ``distributed.Client`` or scheduler address) maps the windows over its workers, which
    open ``src_path`` under ``env_factory()`` (a picklable callable returning a ``rasterio.Env``;
    default ``rasterio.Env(**gdal_env)``): see :func:`run_on_dataset`.
    """
    sid = scene_id or Path(src_path).name.split(".")[0]
    env = rasterio_env if rasterio_env is not None else rasterio.Env(**dict(gdal_env or {}))
    with env, open_source(src_path) as ds:
        product.check_quantity(ds.tags().get(QUANTITY_TAG), f"cube {src_path}")
        return run_on_dataset(
            product,
            ds,
            bands_from_dataset(ds),
            src_path,
            dst_path,
            params,
            scene_id=sid,
            window_size=window_size,
            max_chunk_mb=max_chunk_mb,
            progress=progress,
            context=context,
            adjust=adjust,
            dask=dask,
            env_factory=env_factory if env_factory is not None else _GdalEnv(dict(gdal_env or {})),
        )


@contextlib.contextmanager
def open_source(path: str) -> Iterator[Any]:
    """``path`` opened for the engine's reads. A dataset of more than one block per band is opened
    under :func:`decoding_threads`, so that one read decodes its blocks on every core; one of a
    single block per band (a small scene) is decoded on the caller's thread, where GDAL's decoding
    threads cost more than they save (a 16 x 16 cube of 425 bands: ~10 against ~4 ms per read). A
    ``GDAL_NUM_THREADS`` the caller's environment sets is kept."""
    caller_sets = rasterio.env.hasenv() and "GDAL_NUM_THREADS" in rasterio.env.getenv()
    ds = rasterio.open(path)
    try:
        bh, bw = ds.block_shapes[0]
        if not caller_sets and (ds.width > bw or ds.height > bh):
            ds.close()
            with decoding_threads():
                ds = rasterio.open(path)
        yield ds
    finally:
        ds.close()


@contextlib.contextmanager
def decoding_threads() -> Iterator[None]:
    """Open datasets under this so that GDAL decodes the blocks of one read on every core (GTiff
    takes ``GDAL_NUM_THREADS`` when a dataset is *opened*, not when it is read). A value the
    caller's environment already sets is kept."""
    if rasterio.env.hasenv() and "GDAL_NUM_THREADS" in rasterio.env.getenv():
        yield
        return
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        yield


@dataclass(frozen=True)
class _GdalEnv:
    """A picklable ``rasterio.Env`` factory of plain GDAL options (what a Dask worker opens under)."""

    options: dict[str, Any]

    def __call__(self) -> Any:
        return rasterio.Env(**self.options)


def run_on_dataset(
    product: Product,
    ds: Any,
    bands: Sequence[BandInfo],
    src_path: str,
    dst_path: str,
    params: Mapping[str, Any] | Params | None = None,
    *,
    scene_id: str,
    window_size: int = 512,
    max_chunk_mb: float = 256.0,
    windows: list[Window] | None = None,
    progress: Callable[[int, int], None] | None = None,
    context: Mapping[str, Any] | None = None,
    adjust: Sequence[Any] = (),
    dask: Any = None,
    env_factory: Callable[[], Any] | None = None,
) -> ProductResult:
    """The engine on an open dataset: anything with rasterio's ``width``, ``height``, ``count``,
    ``crs``, ``transform``, ``block_shapes``, ``nodata`` and ``read(indexes, window)`` (a rasterio
    dataset, or :class:`hsi.products.sensor.SensorDataset`). ``windows`` overrides the block-aligned
    windows (a reader whose reads cost whole lines of every band).

    ``dask``: a ``distributed.Client``, a scheduler address or a
    :class:`hsi.products.dask_engine.DaskTarget`; the windows are then computed on its
    workers (:mod:`hsi.products.dask_engine`: each worker opens ``src_path`` under ``env_factory()``
    and reads only its window's bands) and written here in window order: the output is identical to
    a run without it. Products with a fit pass, input adjustments and sensor-geometry readers always
    run here, and so does a product of one window (a small scene: cheaper computed than shipped)."""
    sid = scene_id
    p, selected, ctx = _prepare(product, bands, sid, params)
    n_in = len({s.index for s in selected})
    if windows is None:
        bh, bw = ds.block_shapes[0]
        wsize = window_size
        while n_in * wsize * wsize * 4 > max_chunk_mb * 2**20 and wsize > 16:
            wsize //= 2
        windows = list(iter_windows(ds.width, ds.height, (bh, bw), wsize))
    reader = WindowReader(ds, product, p, selected, bands, windows, adjust)
    ctx.grid = {"width": ds.width, "height": ds.height, "crs": ds.crs, "transform": ds.transform}
    ctx.scratch = Path(dst_path).parent
    ctx.extra = dict(context or {})
    log.info(
        "product %s on %s: %d bands of %d, %d windows",
        product.name,
        sid,
        n_in,
        ds.count,
        len(windows),
    )
    if product.fit is not None:
        # the fit passes read the window bands again: a bounded GDAL block cache keeps memory flat
        with rasterio.Env(GDAL_CACHEMAX=128):
            ctx.state = product.fit(reader, p, ctx)
    blocks: Iterable[Block]
    if dask is not None and (product.fit is not None or adjust or not hasattr(ds, "files")):
        log.info("product %s: runs windowed in this process (a fit pass, input adjustments or a "
                 "sensor-geometry reader do not go over Dask)", product.name)  # fmt: skip
        dask = None
    if dask is not None and len(windows) == 1:  # shipping it to a worker costs more than computing it
        dask = None
    if dask is not None:
        from hsi.products.dask_engine import WindowJob, dask_blocks

        job = WindowJob(product, p, tuple(selected), tuple(bands), ctx, src_path, env_factory)
        blocks = dask_blocks(dask, job, windows)
    else:
        blocks = _local_blocks(product, p, ctx, reader, windows)
    try:
        return _write(
            product, p, ctx, reader, windows, ds, sid, src_path, dst_path, selected, progress, blocks
        )
    finally:
        stop = getattr(blocks, "close", None)  # a generator: its read-ahead thread / Dask futures end now
        if stop is not None:
            stop()
        close = getattr(ctx.state, "close", None)
        if close is not None:
            close()


#: one computed window: (window, output block cast to the output dtype, its partial statistics)
Block = tuple[Window, np.ndarray, WindowStats]


def _compute_chunk(
    product: Product, p: Params, ctx: ComputeContext, w: Window, chunk: dict[str, np.ndarray]
) -> Block:
    """``compute`` on one window's bands, converted to the output dtype, with its statistics."""
    ctx.window = w
    res, invalid = _finish(product.compute(chunk, p, ctx), chunk, ctx.output, product.name)
    return w, res, window_stats(ctx.output, res, invalid)


def compute_window(
    product: Product, p: Params, ctx: ComputeContext, reader: WindowReader, w: Window
) -> Block:
    """Read one window's bands, ``compute``, convert to the output dtype, take its statistics."""
    return _compute_chunk(product, p, ctx, w, reader.read(w))


def _local_blocks(
    product: Product, p: Params, ctx: ComputeContext, reader: WindowReader, windows: list[Window]
) -> Iterator[Block]:
    """The windows computed here, each read one ahead on a thread (only that thread touches the
    dataset) while the previous one is computed."""
    with _prefetch(reader, windows) as chunks:
        for w, chunk in zip(windows, chunks, strict=True):
            block = _compute_chunk(product, p, ctx, w, chunk)
            del chunk  # the input bands are not kept while the caller writes the block
            yield block


#: ZSTD level of floating-point product outputs. Behind predictor 3 the low mantissa bytes of a
#: measurement are noise: level 9 saves ~0.5% of the bytes at ~7x the CPU of level 1 (EVI on 2048^2:
#: 12.22 against 12.28 MB, 253 against 34 ms). Integer outputs (classes, masks) keep level 9, where it
#: saves ~20% (docs/ARCHITECTURE.md, "Product outputs").
FLOAT_PRODUCT_ZSTD_LEVEL = 1


def product_profile(width: int, height: int, dtype: str = "float32") -> CogProfile:
    """The COG layout of a product on a ``width`` x ``height`` grid (blocks, overview levels) and its
    compression level for ``dtype``."""
    block = 512 if min(width, height) >= 512 else 256
    level = FLOAT_PRODUCT_ZSTD_LEVEL if np.dtype(dtype).kind == "f" else CogProfile.level
    return CogProfile(blocksize=block, overview_level=_overview_levels(width, height, block), level=level)


def overview_resampling(spec: OutputSpec) -> str:
    """Classes keep their labels in overviews; measurements are averaged."""
    return "nearest" if spec.classes is not None else "average"


def _write(
    product: Product,
    p: Params,
    ctx: ComputeContext,
    reader: WindowReader,
    windows: list[Window],
    ds: Any,
    sid: str,
    src_path: str,
    dst_path: str,
    selected: Sequence[SelectedBand],
    progress: Callable[[int, int], None] | None,
    blocks: Iterable[Block],
) -> ProductResult:
    """The compute pass: every window's output block, in window order, into the streaming COG sink."""
    spec = ctx.output
    stats = Stats(spec)
    dst = Path(dst_path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tags = {
        f"{TAG_PREFIX}PRODUCT": product.name,
        f"{TAG_PREFIX}PRODUCT_VERSION": product.version,
        f"{TAG_PREFIX}PARAMS": json.dumps(p.model_dump(mode="json"), sort_keys=True),
        f"{TAG_PREFIX}SCENE_ID": sid,
        f"{TAG_PREFIX}COLORMAP": spec.colormap,
    }
    if spec.preview_band is not None:
        tags[f"{TAG_PREFIX}PREVIEW_BAND"] = str(spec.preview_band + 1)
    if spec.classes is not None:
        tags[f"{TAG_PREFIX}CLASSES"] = json.dumps({str(k): v for k, v in spec.classes.items()})
        tags[f"{TAG_PREFIX}CLASS_BAND"] = str((spec.class_band or 0) + 1)
        if spec.class_colors:
            tags[f"{TAG_PREFIX}CLASS_COLORS"] = json.dumps(
                {str(k): list(v) for k, v in spec.class_colors.items()}
            )
    sink = CogSink(
        dst,
        width=ds.width,
        height=ds.height,
        count=spec.count,
        dtype=spec.dtype,
        crs=ds.crs,
        transform=ds.transform,
        nodata=spec.nodata,
        profile=product_profile(ds.width, ds.height, spec.dtype),
        descriptions=[f"{b.name}: {b.description}" for b in spec.bands],
        band_tags=[{"NAME": b.name} for b in spec.bands],
        tags=tags,
        overview_resampling=overview_resampling(spec),
    )
    # windowed: the next window is read (GDAL decompresses without the GIL) while this one is computed
    # and the sink's pool compresses the finished tiles (see _local_blocks); over Dask the blocks come
    # from the workers in window order
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS", GDAL_CACHEMAX=128), sink:
        for k, (w, res, part) in enumerate(blocks, start=1):
            stats.add(part)
            r0, c0 = int(w.row_off), int(w.col_off)
            sink.write(res, (r0, r0 + int(w.height)), (c0, c0 + int(w.width)))
            if progress is not None:
                progress(k, len(windows))
    st, counts, fractions = stats.result()
    fit_summary = None
    sidecars: dict[str, str] = {}
    if ctx.state is not None and hasattr(ctx.state, "summary"):
        fit_summary = ctx.state.summary(spec.count)
    if ctx.state is not None and hasattr(ctx.state, "details"):
        side = dst.with_name(f"{dst.stem}_fit.json")
        side.write_text(json.dumps(ctx.state.details(spec.count, ctx), indent=1, allow_nan=False))
        sidecars["fit"] = str(side)
    return ProductResult(
        product=product.name,
        version=product.version,
        params=p.model_dump(mode="json"),
        scene_id=sid,
        source=src_path,
        output_path=str(dst),
        selected_bands=[s.as_dict() for s in selected],
        output_bands=[{"name": b.name, "description": b.description} for b in spec.bands],
        dtype=spec.dtype,
        nodata=spec.nodata,
        width=ds.width,
        height=ds.height,
        stats=st,
        class_counts=counts,
        class_fractions=fractions,
        fit_summary=fit_summary,
        bands_read=reader.unique,
        windows=len(windows),
        sidecars=sidecars,
    )
