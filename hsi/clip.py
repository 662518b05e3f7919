"""AOI clips of product COGs, published as their own items (``hsi-<product>-clips``).

A clip reads only the AOI window of the product COG (a windowed read: I/O proportional to the
window), sets pixels outside the AOI polygon to nodata, and writes a small COG. Identity:
``<product item id>-<aoi key[:8]>`` in ``<product collection>-clips``; the clip's key covers the
product item (id + data asset checksum), the clip algorithm/version and the AOI geometry, so a
re-run with the same product and AOI is a skip and a recomputed product makes the clip stale.
Provenance: ``derived_from`` the product item.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from rasterio.features import geometry_mask
from rasterio.warp import transform_geom
from rasterio.windows import Window, from_bounds

from hsi.activation import check_done, public_href
from hsi.geo import bbox_of, footprint
from hsi.planning import Aoi
from hsi.services import Services
from hsi.stac.items import COG_MEDIA_TYPE, AssetRef
from hsi.stac.provenance import InputRef, Provenance, RunInfo, apply_provenance, derivation_key
from hsi.storage import ObjectInfo

__all__ = [
    "CLIP_ALGORITHM",
    "CLIP_VERSION",
    "ClipPlan",
    "build_clip_item",
    "clip_collection",
    "clip_item_id",
    "plan_clip",
    "write_clip",
]

log = logging.getLogger(__name__)

CLIP_ALGORITHM = "hsi.clip"
CLIP_VERSION = "1.0.0"


def clip_collection(product_collection: str) -> str:
    return f"{product_collection}-clips"


def clip_item_id(product_item_id: str, aoi: Aoi) -> str:
    return f"{product_item_id}-{aoi.short}"


@dataclass(frozen=True)
class ClipPlan:
    """A clip decided from the product item (small and picklable)."""

    collection: str
    item_id: str
    key: str
    source_href: str  # the product's data asset
    input: InputRef
    aoi_geometry: Mapping[str, Any]
    aoi_key: str

    def parameters(self) -> dict[str, Any]:
        return {"aoi": dict(self.aoi_geometry), "aoi_key": self.aoi_key}


def plan_clip(services: Services, product: pystac.Item, aoi: Aoi) -> ClipPlan:
    cid = product.collection_id or ""
    data = product.assets.get("data")
    if data is None:
        raise ValueError(f"product item {cid}/{product.id} has no 'data' asset to clip")
    checksum = data.extra_fields.get("file:checksum") or f"size:{data.extra_fields.get('file:size')}"
    ref = InputRef(
        collection=cid,
        id=product.id,
        href=services.catalog.item_href(cid, product.id),
        checksums={"data": checksum},
    )
    plan = ClipPlan(
        collection=clip_collection(cid),
        item_id=clip_item_id(product.id, aoi),
        key="",
        source_href=data.href,
        input=ref,
        aoi_geometry=aoi.geometry,
        aoi_key=aoi.key,
    )
    key = derivation_key([ref], CLIP_ALGORITHM, CLIP_VERSION, plan.parameters())
    return ClipPlan(**{**plan.__dict__, "key": key})


def is_done(services: Services, plan: ClipPlan) -> str | None:
    """The skip reason when the clip item is up to date, else None."""
    return check_done(services, plan.collection, plan.item_id, plan.key)


def _open(services: Services, href: str) -> tuple[str, Any]:
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href, rasterio.Env()
    store = services.store_for(href)
    env_factory = getattr(store, "rasterio_env", None)
    return store.gdal_path(href), (env_factory() if env_factory else rasterio.Env(**store.gdal_env()))


def _aoi_window(ds: Any, geom_native: Mapping[str, Any]) -> Window | None:
    xs = [p[0] for poly in _rings(geom_native) for p in poly]
    ys = [p[1] for poly in _rings(geom_native) for p in poly]
    w = from_bounds(min(xs), min(ys), max(xs), max(ys), ds.transform)
    c0, r0 = max(math.floor(w.col_off), 0), max(math.floor(w.row_off), 0)
    c1, r1 = min(math.ceil(w.col_off + w.width), ds.width), min(math.ceil(w.row_off + w.height), ds.height)
    return Window(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None


def _rings(geom: Mapping[str, Any]) -> list[list[list[float]]]:
    if geom["type"] == "Polygon":
        return [geom["coordinates"][0]]
    return [poly[0] for poly in geom["coordinates"]]


def write_clip(services: Services, plan: ClipPlan, dst: Path) -> dict[str, Any] | None:
    """Write the AOI clip of the product COG to ``dst``; None when the AOI misses the raster.

    Returns the projection fields and footprint of the clip.
    """
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    path, env = _open(services, plan.source_href)
    with env, rasterio.open(path) as ds:
        geom = transform_geom("EPSG:4326", ds.crs, plan.aoi_geometry) if ds.crs else dict(plan.aoi_geometry)
        win = _aoi_window(ds, geom)
        if win is None:
            return None
        data = ds.read(window=win)  # only the AOI window is read
        transform = ds.window_transform(win)
        outside = geometry_mask([geom], out_shape=(int(win.height), int(win.width)), transform=transform)
        nodata = (
            ds.nodata if ds.nodata is not None else (np.nan if np.issubdtype(data.dtype, np.floating) else 0)
        )
        data[:, outside] = nodata
        profile = {
            "driver": "GTiff",
            "width": int(win.width),
            "height": int(win.height),
            "count": ds.count,
            "dtype": data.dtype.name,
            "nodata": nodata,
            "crs": ds.crs,
            "transform": transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "ZSTD",
        }
        tags = ds.tags()
        band_meta = [(ds.descriptions[i], ds.tags(i + 1)) for i in range(ds.count)]
        crs = ds.crs
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmpdir:
        tmp = Path(tmpdir) / "clip.tif"
        with rasterio.open(tmp, "w", **profile) as out:
            out.write(data)
            out.update_tags(**tags, HSI_CLIP_AOI_KEY=plan.aoi_key, HSI_CLIP_OF=plan.input.id)
            for i, (desc, btags) in enumerate(band_meta, start=1):
                if desc:
                    out.set_band_description(i, desc)
                out.update_tags(i, **btags)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Non-standard compression schema")
            cog_translate(
                str(tmp),
                str(dst),
                dict(cog_profiles.get("zstd"), blockxsize=256, blockysize=256),
                nodata=nodata,
                quiet=True,
                forward_band_tags=True,
                in_memory=True,
            )
    fp = footprint(transform, int(win.width), int(win.height), crs)
    epsg = crs.to_epsg() if crs else None
    return {
        "footprint": fp,
        "bbox": bbox_of(fp),
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:shape": [int(win.height), int(win.width)],
        "proj:transform": list(transform)[:6],
        "window": [int(win.col_off), int(win.row_off), int(win.width), int(win.height)],
    }


def build_clip_item(
    services: Services,
    plan: ClipPlan,
    product: pystac.Item,
    written: Mapping[str, Any],
    uploaded: ObjectInfo,
    run: RunInfo,
) -> pystac.Item:
    """The clip item with provenance (``derived_from`` the product item)."""
    keep = ("instruments", "hsi:source", "hsi:scene_id", "hsi:product", "hsi:product_version", "hsi:classes")
    props = {k: product.properties[k] for k in keep if k in product.properties}
    props.update({k: written[k] for k in ("proj:code", "proj:shape", "proj:transform") if written.get(k)})
    props["hsi:clip_window"] = written["window"]
    props["title"] = (
        f"{product.properties.get('hsi:product', product.id)} clip {plan.aoi_key[:8]} of {product.id}"
    )
    item = pystac.Item(
        id=plan.item_id,
        geometry=written["footprint"],
        bbox=list(written["bbox"]),
        datetime=product.datetime,
        properties=props,
        collection=plan.collection,
        stac_extensions=[e for e in product.stac_extensions if "processing" not in e],
    )
    if product.datetime is None:
        item.common_metadata.start_datetime = product.common_metadata.start_datetime
        item.common_metadata.end_datetime = product.common_metadata.end_datetime
    ref = AssetRef(
        public_href(services, uploaded.uri),
        COG_MEDIA_TYPE,
        ("data",),
        "AOI clip (COG)",
        uploaded.size,
        uploaded.checksum,
    )
    asset = ref.to_asset()
    src = product.assets["data"].extra_fields.get("bands")
    if src:
        asset.extra_fields["bands"] = [{k: v for k, v in b.items() if k != "statistics"} for b in src]
    asset.extra_fields["raster:spatial_resolution"] = abs(float(written["proj:transform"][0]))
    item.add_asset("data", asset)
    prov = Provenance(
        algorithm=CLIP_ALGORITHM,
        algorithm_version=CLIP_VERSION,
        parameters=plan.parameters(),
        inputs=[plan.input],
        level=str(product.properties.get("processing:level", "L3")),
        lineage=f"AOI {plan.aoi_key[:8]} window of {plan.input.collection}/{plan.input.id} "
        f"(windowed read; pixels outside the AOI set to nodata)",
        run=run,
    )
    item = apply_provenance(item, prov)
    if item.properties["hsi:product_key"] != plan.key:
        raise RuntimeError(f"{plan.collection}/{plan.item_id}: key mismatch between plan and provenance")
    return item
