"""Open activated cubes and products as lazy, dask-backed ``xarray.DataArray``s.

    >>> import hsi
    >>> cube = hsi.open_item("aviris-ng-ang20150420t182050")          # an id, an item, or an href
    >>> cube.sel(wavelength=[660, 860], method="nearest")              # reads 2 band planes, not 425
    >>> cube.isel(x=10, y=20).plot()                                    # the spectrum at a pixel

The cube is band-interleaved (``INTERLEAVE=BAND``): every dask chunk is one band plane (or a
window of one), read with ``rasterio`` under the store's GDAL environment (credentials for S3
come from the configuration), so selecting k bands reads k band planes. Values are the stored
numbers times ``raster:scale`` plus ``raster:offset``; nodata becomes NaN. Coordinates:
``wavelength`` (nm, the dimension), ``fwhm`` (nm), ``good_band``, ``band`` (name) and
``band_index`` (1-based), plus ``x``/``y`` with the CRS and transform through rioxarray.

``item`` may be a :class:`pystac.Item`, an item id (looked up in the configured catalog: the
static catalog or the STAC API), the href of an item JSON (path, ``s3://``, ``http(s)://``), or
the path/URI of a GeoTIFF written by the pipeline (band metadata from its tags).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pystac
import rasterio
from rasterio.windows import Window

from hsi.errors import InvalidInputError, ItemNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from hsi.catalog import Catalog
    from hsi.config import PipelineConfig
    from hsi.services import Services

__all__ = ["DEFAULT_CHUNK", "odc_stac_config", "open_item", "open_product"]

DEFAULT_CHUNK = 2048  # pixels along y and x (rounded up to the COG block size)
CUBE_ASSET, PRODUCT_ASSET = "cube", "data"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- band table
@dataclass(frozen=True)
class _Band:
    index: int  # 1-based band number in the file
    name: str
    wavelength: float | None  # nm
    fwhm: float | None  # nm
    good: bool
    scale: float
    offset: float


def _bands_from_stac(entries: Sequence[Mapping[str, Any]], ds: Any) -> list[_Band]:
    out = []
    for i, b in enumerate(entries, start=1):
        wl, fw = b.get("eo:center_wavelength"), b.get("eo:full_width_half_max")
        out.append(
            _Band(
                index=i,
                name=str(b.get("name") or f"b{i:03d}"),
                wavelength=float(wl) * 1000.0 if wl is not None else None,
                fwhm=float(fw) * 1000.0 if fw is not None else None,
                good=bool(b.get("hsi:good_band", True)),
                scale=float(b.get("raster:scale", ds.scales[i - 1] if i <= ds.count else 1.0)),
                offset=float(b.get("raster:offset", ds.offsets[i - 1] if i <= ds.count else 0.0)),
            )
        )
    return out


def _bands_from_tags(ds: Any) -> list[_Band]:
    from hsi.scene import bands_from_dataset

    out = []
    for b, desc in zip(bands_from_dataset(ds), ds.descriptions, strict=True):
        name = (desc or "").split(" ")[0] or f"b{b.index:03d}"
        out.append(_Band(b.index, name, b.center_wavelength, b.fwhm, b.good, b.scale, b.offset))
    return out


# ------------------------------------------------------------------------------------ reading
class _BandReader:
    """Reads one window of one band; opens the file per call under the store's GDAL environment."""

    def __init__(self, path: str, env: Callable[[], AbstractContextManager[Any]]) -> None:
        self.path, self.env = path, env

    def __call__(
        self,
        band: int,
        row: int,
        col: int,
        h: int,
        w: int,
        scale: float,
        offset: float,
        nodata: Any,
        mask: bool,
    ) -> np.ndarray:
        with self.env(), rasterio.open(self.path) as ds:
            raw = ds.read(band, window=Window(col, row, w, h))
        if not mask:
            return raw[None]
        out = raw.astype(np.float64 if raw.dtype == np.float64 else np.float32)
        bad = np.isnan(out) if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)) else None
        if bad is None:
            bad = raw == nodata
        if scale != 1.0 or offset != 0.0:
            out = out * out.dtype.type(scale) + out.dtype.type(offset)
        out[bad] = np.nan
        return out[None]


def _splits(n: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(step, n - s)) for s in range(0, n, step)]


def _chunk(size: Any, block: int, default: int) -> int:
    if size in (None, "auto"):
        size = default
    size = int(size)
    if size <= 0:
        raise InvalidInputError(f"chunks: a chunk size must be a positive number of pixels, got {size}")
    return max(block, math.ceil(size / block) * block)


# ---------------------------------------------------------------------------------- resolving
@dataclass
class _Target:
    href: str  # absolute href of the raster
    item: pystac.Item | None
    asset: pystac.Asset | None


def _services(services: Services | None, config: PipelineConfig | str | Path | None) -> Services:
    if services is not None:
        return services
    from hsi.services import Services

    return Services.from_config(config)


def _is_item_href(s: str) -> bool:
    return s.lower().endswith((".json", ".geojson"))


def _read_item_href(href: str, get_services: Callable[[], Services]) -> pystac.Item:
    if href.startswith("s3://"):
        store = get_services().store_for(href)
        try:
            doc = json.loads(store.get_bytes(href))
        except FileNotFoundError as e:
            raise InvalidInputError(f"{href}: no such item file") from e
        item = pystac.Item.from_dict(doc)
        item.set_self_href(href)
        return item
    if not href.startswith(("http://", "https://")) and not Path(href).is_file():
        raise InvalidInputError(f"{href}: no such item file")
    return pystac.Item.from_file(href)


def _find_item(item_id: str, catalog: Catalog) -> pystac.Item:
    found = list(catalog.search(ids=[item_id]))
    cubes = [it for it in found if CUBE_ASSET in it.assets]
    products = [
        it for it in found if PRODUCT_ASSET in it.assets and not (it.collection_id or "").endswith("-raw")
    ]
    if cubes or products:
        return (cubes or products)[0]
    if found:
        raise InvalidInputError(
            f"item {item_id} is a raw scene (collection {found[0].collection_id}): "
            f"activate it first (hsi activate {item_id})"
        )
    raise ItemNotFoundError(None, item_id, catalog.href)


def _resolve(
    item: pystac.Item | str | Path,
    asset: str | None,
    get_services: Callable[[], Services],
    catalog: Catalog | None,
) -> _Target:
    if isinstance(item, Path):
        item = str(item)
    if isinstance(item, str):
        if _is_item_href(item):
            item = _read_item_href(item, get_services)
        elif "://" in item or "/" in item or Path(item).suffix.lower() in (".tif", ".tiff"):
            if not item.startswith(("s3://", "http://", "https://")) and not Path(item).is_file():
                raise InvalidInputError(f"{item}: no such file")
            return _Target(item, None, None)
        else:
            item = _find_item(item, catalog if catalog is not None else get_services().catalog)
    if not isinstance(item, pystac.Item):
        raise InvalidInputError(
            f"open_item: expected an item, an item id or an href, got {type(item).__name__}"
        )
    key = asset or (CUBE_ASSET if CUBE_ASSET in item.assets else PRODUCT_ASSET)
    a = item.assets.get(key)
    if a is None:
        raise InvalidInputError(
            f"item {item.id} has no asset '{key}' (assets: {', '.join(sorted(item.assets)) or 'none'})"
        )
    href = a.get_absolute_href() or a.href
    return _Target(href, item, a)


def _gdal_source(href: str, get_services: Callable[[], Services]) -> tuple[str, Callable[[], Any]]:
    if href.startswith("s3://"):
        store = get_services().store_for(href)
        factory = getattr(store, "rasterio_env", None)
        if factory is not None:
            return store.gdal_path(href), factory
        opts = store.gdal_env()
        return store.gdal_path(href), lambda: rasterio.Env(**opts)
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href, rasterio.Env
    if href.startswith("file://"):
        href = href[len("file://") :]
    return href, rasterio.Env


# ------------------------------------------------------------------------------------- public
def open_item(
    item: pystac.Item | str | Path,
    *,
    bands: Sequence[str | int] | None = None,
    wavelengths: Iterable[float] | None = None,
    good_only: bool = False,
    chunks: Mapping[str, int | str] | int | str | None = None,
    mask_and_scale: bool = True,
    asset: str | None = None,
    config: PipelineConfig | str | Path | None = None,
    services: Services | None = None,
    catalog: Catalog | None = None,
) -> xr.DataArray:
    """A lazy ``(wavelength, y, x)`` DataArray of an activated cube (see the module docstring).

    ``bands``: names (``"b057"``) or 1-based band numbers; ``wavelengths``: nm, the nearest band of
    each; ``good_only``: drop bands flagged bad. ``chunks``: pixels per chunk along ``y``/``x``
    (an int or ``{"y": .., "x": ..}``; default 2048, rounded up to the COG block); along
    ``wavelength`` a chunk is always one band. ``mask_and_scale=False`` keeps the stored numbers
    (no NaN, no scale/offset). ``config``/``services``/``catalog`` say where ids and ``s3://``
    hrefs are looked up (default: the configuration, as every ``hsi`` command).
    """
    return _open(
        item,
        bands=bands,
        wavelengths=wavelengths,
        good_only=good_only,
        chunks=chunks,
        mask_and_scale=mask_and_scale,
        asset=asset,
        config=config,
        services=services,
        catalog=catalog,
        spectral=True,
    )


def open_product(
    item: pystac.Item | str | Path,
    *,
    bands: Sequence[str | int] | None = None,
    chunks: Mapping[str, int | str] | int | str | None = None,
    mask_and_scale: bool = True,
    asset: str | None = None,
    config: PipelineConfig | str | Path | None = None,
    services: Services | None = None,
    catalog: Catalog | None = None,
) -> xr.DataArray:
    """A lazy ``(band, y, x)`` DataArray of a product item (``band`` = output band names).

    Categorical products (items with ``hsi:classes``) carry their classes in ``attrs["classes"]``
    (``{value: name}``) and as CF ``flag_values``/``flag_meanings``.
    """
    da = _open(
        item,
        bands=bands,
        wavelengths=None,
        good_only=False,
        chunks=chunks,
        mask_and_scale=mask_and_scale,
        asset=asset,
        config=config,
        services=services,
        catalog=catalog,
        spectral=False,
    )
    classes = da.attrs.get("classes")
    if classes:
        da.attrs["flag_values"] = list(classes)
        da.attrs["flag_meanings"] = " ".join(str(v).replace(" ", "_") for v in classes.values())
    return da


def _select(
    table: list[_Band], bands: Sequence[str | int] | None, wavelengths: Any, good_only: bool
) -> list[_Band]:
    sel = table
    if bands is not None:
        by_name = {b.name: b for b in table}
        picked = []
        for b in bands:
            if isinstance(b, int | np.integer) and not isinstance(b, bool):
                if not 1 <= int(b) <= len(table):
                    raise InvalidInputError(f"bands: band number {b} is outside 1..{len(table)}")
                picked.append(table[int(b) - 1])
            elif str(b) in by_name:
                picked.append(by_name[str(b)])
            else:
                raise InvalidInputError(f"bands: no band named '{b}' (names look like '{table[0].name}')")
        sel = picked
    if wavelengths is not None:
        have = [b for b in sel if b.wavelength is not None]
        if not have:
            raise InvalidInputError(
                "wavelengths: this raster has no band wavelengths; select by bands= instead"
            )
        wl = np.array([b.wavelength for b in have], dtype=float)
        sel = [have[int(np.argmin(np.abs(wl - float(w))))] for w in wavelengths]
    if good_only:
        sel = [b for b in sel if b.good]
    if not sel:
        raise InvalidInputError("the band selection is empty")
    return sel


def _ascending(sel: list[_Band], href: str) -> list[_Band]:
    """The bands in ascending wavelength (``.sel(wavelength=..., method="nearest")`` needs a monotonic
    index): files whose spectrometers overlap (AVIRIS-Classic steps back at three joins) or list bands
    out of order are reordered; ``band_index`` keeps each band's number in the file."""
    wl = [b.wavelength for b in sel]
    if any(a >= b for a, b in zip(wl, wl[1:], strict=False)):  # type: ignore[operator]
        sel = sorted(sel, key=lambda b: (b.wavelength, b.index))
        if len({b.wavelength for b in sel}) < len(sel):
            log.warning(
                "%s: several bands share a wavelength; .sel(wavelength=...) needs unique values: "
                "select them with .isel or by band_index",
                href,
            )
    return sel


def _open(
    item: pystac.Item | str | Path,
    *,
    bands: Sequence[str | int] | None,
    wavelengths: Iterable[float] | None,
    good_only: bool,
    chunks: Mapping[str, int | str] | int | str | None,
    mask_and_scale: bool,
    asset: str | None,
    config: PipelineConfig | str | Path | None,
    services: Services | None,
    catalog: Catalog | None,
    spectral: bool,
) -> xr.DataArray:
    import dask.array as dsa
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from dask.base import tokenize

    cache: dict[str, Services] = {}

    def get_services() -> Services:
        if "s" not in cache:
            cache["s"] = _services(services, config)
        return cache["s"]

    target = _resolve(item, asset, get_services, catalog)
    path, env = _gdal_source(target.href, get_services)
    try:
        with env(), rasterio.open(path) as ds:
            entries = (target.asset.extra_fields.get("bands") if target.asset is not None else None) or []
            table = _bands_from_stac(entries, ds) if len(entries) == ds.count else _bands_from_tags(ds)
            height, width, crs, transform = ds.height, ds.width, ds.crs, ds.transform
            dtype, nodata = np.dtype(ds.dtypes[0]), ds.nodata
            by, bx = ds.block_shapes[0] if ds.block_shapes else (256, 256)
    except rasterio.errors.RasterioIOError as e:
        raise InvalidInputError(f"{target.href}: cannot open the raster ({e})") from e

    sel = _select(table, bands, wavelengths, good_only)
    use_wl = spectral and all(b.wavelength is not None for b in sel)
    if use_wl:
        sel = _ascending(sel, target.href)
    if isinstance(chunks, Mapping):
        cy, cx = chunks.get("y", DEFAULT_CHUNK), chunks.get("x", DEFAULT_CHUNK)
    else:
        cy = cx = chunks if chunks is not None else DEFAULT_CHUNK
    ys, xs = _splits(height, _chunk(cy, by, DEFAULT_CHUNK)), _splits(width, _chunk(cx, bx, DEFAULT_CHUNK))
    out_dtype = (np.float64 if dtype == np.float64 else np.float32) if mask_and_scale else dtype
    reader = _BandReader(path, env)
    name = "hsi-open-" + tokenize(target.href, [b.index for b in sel], ys, xs, mask_and_scale)
    graph: dict[Any, Any] = {}
    for i, b in enumerate(sel):
        for yi, (r, h) in enumerate(ys):
            for xi, (c, w) in enumerate(xs):
                graph[(name, i, yi, xi)] = (
                    reader,
                    b.index,
                    r,
                    c,
                    h,
                    w,
                    b.scale,
                    b.offset,
                    nodata,
                    mask_and_scale,
                )
    data = dsa.Array(
        graph,
        name,
        chunks=((1,) * len(sel), tuple(h for _, h in ys), tuple(w for _, w in xs)),
        dtype=out_dtype,
    )

    dim = "wavelength" if use_wl else "band"
    coords: dict[str, Any] = {
        "y": transform.f + (np.arange(height) + 0.5) * transform.e,
        "x": transform.c + (np.arange(width) + 0.5) * transform.a,
        "band_index": (dim, np.array([b.index for b in sel], dtype=np.int32)),
    }
    if use_wl:
        coords["wavelength"] = (dim, np.array([b.wavelength for b in sel], dtype=float), {"units": "nm"})
        coords["band"] = (dim, [b.name for b in sel])
    else:
        coords["band"] = (dim, [b.name for b in sel])
    if any(b.fwhm is not None for b in sel):
        coords["fwhm"] = (dim, np.array([np.nan if b.fwhm is None else b.fwhm for b in sel]), {"units": "nm"})
    coords["good_band"] = (dim, np.array([b.good for b in sel], dtype=bool))

    attrs: dict[str, Any] = {"href": target.href}
    if target.item is not None:
        attrs["item_id"] = target.item.id
        if target.item.collection_id:
            attrs["collection"] = target.item.collection_id
        classes = target.item.properties.get("hsi:classes")
        if classes:
            attrs["classes"] = {int(c["value"]): str(c["name"]) for c in classes}
        q = target.item.properties.get("hsi:quantity")
        if q:
            attrs["quantity"] = q
    if not mask_and_scale and nodata is not None:
        attrs["nodata"] = nodata
    da = xr.DataArray(data, dims=(dim, "y", "x"), coords=coords, attrs=attrs, name=attrs.get("item_id"))
    if crs is not None:
        da = da.rio.write_crs(crs)
    da = da.rio.write_transform(transform)
    da = da.rio.write_nodata(np.nan if mask_and_scale else nodata, encoded=False)
    return da


def odc_stac_config(items: Iterable[pystac.Item], asset: str = CUBE_ASSET) -> dict[str, Any]:
    """``stac_cfg`` for ``odc.stac.load`` that loads the cube as ONE variable with a ``wavelength``
    dimension (nm) instead of one variable per band (``cube.1`` ... ``cube.425``)::

        ds = odc.stac.load(items, bands=["cube"], stac_cfg=odc_stac_config(items), chunks={})
        cube = ds.cube  # (time, y, x, wavelength); nodata is kept as stored, scale/offset not applied

    All items of one collection must share the band table (true for one sensor and level).
    """
    cfg: dict[str, Any] = {}
    for it in items:
        a = it.assets.get(asset)
        bands = (a.extra_fields.get("bands") if a is not None else None) or []
        if not bands or it.collection_id in cfg:
            continue
        wl = [round(float(b["eo:center_wavelength"]) * 1000.0, 4) for b in bands]
        first = bands[0]
        band_cfg: dict[str, Any] = {
            "data_type": first.get("data_type", "float32"),
            "dims": ["y", "x", "wavelength"],
        }
        if first.get("nodata") is not None:
            band_cfg["nodata"] = first["nodata"]
        cfg[it.collection_id or "*"] = {
            "assets": {asset: band_cfg},
            "dims": {"wavelength": len(wl)},
            "coords": {"wavelength": wl},
        }
    return cfg
