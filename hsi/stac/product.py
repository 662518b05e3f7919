"""STAC builder for product items (spectral indices, oil-spill, tree-mortality, SAM/PCA ...).

Identity (DESIGN.md §3): item ``<activated item id>-<product slug>`` in collection
``hsi-<product slug>``; the slug is the product name lower-cased with every character outside
``[a-z0-9_-]`` (e.g. the ``:`` of ``index:NDVI``) replaced by ``-``.

A product item takes geometry, bbox, datetime, instruments and scene identity from its activated
input item; its ``data`` asset is the product COG with one STAC 1.1 ``bands`` entry per output
band (name, description, data type, nodata, statistics), its ``thumbnail`` the PNG preview with
colour map and legend. Product identity, parameters, the bands actually read and class fractions
come from :meth:`hsi.products.ProductResult.stac_properties`. Provenance is added afterwards with
:func:`hsi.stac.provenance.apply_provenance`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pystac

from hsi.products.results import ProductResult
from hsi.stac.items import COG_MEDIA_TYPE, FILE, PROJ, RASTER, AssetRef
from hsi.stac.validation import HSI_EXTENSION

__all__ = [
    "PRODUCT_COLLECTION_PREFIX",
    "data_asset_ref",
    "output_bands_field",
    "product_collection",
    "product_item",
    "product_item_id",
    "product_slug",
]

PRODUCT_COLLECTION_PREFIX = "hsi-"
_SLUG = re.compile(r"[^a-z0-9_-]+")


def product_slug(product: str) -> str:
    """``index:NDVI`` -> ``index-ndvi``, ``oil-spill`` -> ``oil-spill``."""
    slug = _SLUG.sub("-", product.lower()).strip("-")
    if not slug:
        raise ValueError(f"product name {product!r} has no usable characters for an id")
    return slug


def product_collection(product: str) -> str:
    """Collection of a product's items: ``hsi-<slug>``."""
    return PRODUCT_COLLECTION_PREFIX + product_slug(product)


def product_item_id(activated_item_id: str, product: str) -> str:
    """Item id of ``product`` computed on an activated scene: ``<scene item id>-<slug>``."""
    return f"{activated_item_id}-{product_slug(product)}"


def _statistics(st: Mapping[str, Any]) -> dict[str, float]:
    total = (st.get("valid") or 0) + (st.get("nodata") or 0)
    out = {
        k: float(st[s])
        for k, s in (("minimum", "min"), ("maximum", "max"), ("mean", "mean"), ("stddev", "std"))
        if st.get(s) is not None
    }
    if total:
        out["valid_percent"] = round(100.0 * (st.get("valid") or 0) / total, 4)
    return out


def output_bands_field(result: ProductResult) -> list[dict[str, Any]]:
    """STAC 1.1 ``bands`` of the product COG: name, description, data type, nodata, statistics."""
    bands = []
    for b, st in zip(result.output_bands, result.stats, strict=True):
        d: dict[str, Any] = {
            "name": b["name"],
            "description": b["description"],
            "data_type": np.dtype(result.dtype).name,
        }
        if result.nodata is not None and np.isfinite(result.nodata):
            d["nodata"] = result.nodata
        stats = _statistics(st)
        if stats:
            d["statistics"] = stats
        bands.append(d)
    return bands


def product_item(
    *,
    activated: pystac.Item,
    product: str,
    result: ProductResult,
    data: AssetRef,
    thumbnail: AssetRef | None,
    proj: Mapping[str, Any],
    classes: Mapping[int, str] | None = None,
    title: str | None = None,
) -> pystac.Item:
    """The product item (without provenance: apply :func:`~hsi.stac.provenance.apply_provenance`).

    ``proj`` holds the projection fields of the written COG (``proj:code`` or ``proj:wkt2``,
    ``proj:shape``, ``proj:transform``); ``classes`` the class table of classifier outputs.
    """
    ap = activated.properties
    # the scene's identity and time: its span, and what its datetime is when not the acquisition's
    carried = (
        "instruments",
        "hsi:source",
        "hsi:scene_id",
        "start_datetime",
        "end_datetime",
        "hsi:datetime_source",
    )
    props: dict[str, Any] = {k: ap[k] for k in carried if k in ap}
    if title:
        props["title"] = title
    props.update(result.stac_properties())
    used = [b["wavelength_nm"] for b in props.get("hsi:bands_used", []) if b.get("wavelength_nm") is not None]
    if used:  # the spectral range the product was computed from
        props["hsi:wavelength_min"], props["hsi:wavelength_max"] = min(used), max(used)
    props.update({k: v for k, v in proj.items() if v is not None})
    if classes:
        props["hsi:classes"] = [{"value": int(k), "name": v} for k, v in sorted(classes.items())]
    item = pystac.Item(
        id=product_item_id(activated.id, product),
        geometry=activated.geometry,
        bbox=list(activated.bbox) if activated.bbox else None,
        datetime=activated.datetime,
        properties=props,
        collection=product_collection(product),
        stac_extensions=[RASTER, PROJ, FILE, HSI_EXTENSION],
    )
    if activated.datetime is None:  # a range-only input item
        item.common_metadata.start_datetime = activated.common_metadata.start_datetime
        item.common_metadata.end_datetime = activated.common_metadata.end_datetime
    asset = data.to_asset()
    asset.extra_fields["bands"] = output_bands_field(result)
    transform: Sequence[float] | None = proj.get("proj:transform")
    if transform:
        asset.extra_fields["raster:spatial_resolution"] = abs(float(transform[0]))
    item.add_asset("data", asset)
    if thumbnail is not None:
        item.add_asset("thumbnail", thumbnail.to_asset())
    return item


def data_asset_ref(href: str, size: int | None, checksum: str | None, title: str) -> AssetRef:
    """The ``data`` asset reference of a product COG."""
    return AssetRef(href, COG_MEDIA_TYPE, ("data",), title, size, checksum)
