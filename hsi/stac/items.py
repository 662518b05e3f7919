"""STAC builders: raw and activated scene items and their collections.

Built from the frozen :class:`~hsi.scene.SceneMetadata` and the :class:`~hsi.cog.CogInfo` of what
was written, never from paths. Ids are deterministic (DESIGN.md §3): the raw and the activated
item share the native scene id, in collections ``<source>-raw`` and ``<source>-<level>``.
Band metadata follows STAC 1.1 ``bands`` with eo v2 / raster v2 fields; bad bands carry
``hsi:good_band: false`` and are listed in ``hsi:bad_bands``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pystac
from pystac.utils import datetime_to_str

from hsi.scene import BandInfo, SceneMetadata
from hsi.stac.validation import HSI_EXTENSION

__all__ = [
    "COG_MEDIA_TYPE",
    "DATETIME_SOURCE",
    "MTIME_NS",
    "AssetRef",
    "activated_item",
    "bands_field",
    "collection_for",
    "raw_item",
    "wavelength_range",
]

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
EO = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v2.0.0/schema.json"
PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"

_SENSORS = {
    "aviris-ng": ("AVIRIS-NG", "Airborne Visible/Infrared Imaging Spectrometer - Next Generation"),
    "aviris-classic": ("AVIRIS-Classic", "Airborne Visible/Infrared Imaging Spectrometer"),
    "emit": ("EMIT", "Earth Surface Mineral Dust Source Investigation (ISS)"),
}


@dataclass(frozen=True)
class AssetRef:
    """A stored object to describe as an asset."""

    href: str
    media_type: str
    roles: tuple[str, ...]
    title: str | None = None
    size: int | None = None
    checksum: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_asset(self) -> pystac.Asset:
        extra = dict(self.extra)
        if self.size is not None:
            extra["file:size"] = self.size
        if self.checksum is not None:
            extra["file:checksum"] = self.checksum
        return pystac.Asset(
            self.href,
            title=self.title,
            media_type=self.media_type,
            roles=list(self.roles),
            extra_fields=extra,
        )


def _iso(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def bands_field(
    bands: Sequence[BandInfo], dtype: str, nodata: float | None, unit: str | None = None
) -> list[dict[str, Any]]:
    """STAC 1.1 ``bands`` entries (eo/raster v2 field names; wavelengths in micrometres)."""
    import numpy as np  # on use: reading items (CLI checks) does not need it

    out = []
    dt = np.dtype(dtype).name
    for b in bands:
        d: dict[str, Any] = {"name": b.name, "description": b.description(), "data_type": dt}
        if b.center_wavelength is not None:
            d["eo:center_wavelength"] = round(b.center_wavelength / 1000.0, 7)
        if b.fwhm is not None:
            d["eo:full_width_half_max"] = round(b.fwhm / 1000.0, 7)
        if nodata is not None and np.isfinite(nodata):
            d["nodata"] = nodata
        if b.scale != 1.0:
            d["raster:scale"] = b.scale
        if b.offset != 0.0:
            d["raster:offset"] = b.offset
        if unit:
            d["unit"] = unit
        d["hsi:good_band"] = b.good
        out.append(d)
    return out


def _common_properties(meta: SceneMetadata) -> dict[str, Any]:
    short, _ = _SENSORS.get(meta.source, (meta.sensor or meta.source, None))
    return {
        "instruments": [short.lower()],
        "hsi:source": meta.source,
        "hsi:scene_id": meta.scene_id,
        "hsi:quantity": meta.quantity,
        "hsi:bad_bands": [b.index for b in meta.bands if not b.good],
        **wavelength_range(meta.bands),
        **_span(meta),
    }


def _span(meta: SceneMetadata) -> dict[str, str]:
    """STAC ``start_datetime``/``end_datetime`` when the source knows the acquisition's span (EMIT's
    ``time_coverage_start``/``_end``); the item's ``datetime`` stays the start."""
    end = meta.extra.get("end_datetime")
    if not end or meta.datetime is None:
        return {}
    return {
        "start_datetime": datetime_to_str(_iso(meta.datetime)),
        "end_datetime": datetime_to_str(_iso(datetime.fromisoformat(str(end)))),
    }


def wavelength_range(bands: Sequence[BandInfo]) -> dict[str, float]:
    """``hsi:wavelength_min``/``max`` (nm, band centres) for spectral-range search; {} without wavelengths."""
    wl = [b.center_wavelength for b in bands if b.center_wavelength is not None]
    if not wl:
        return {}
    return {"hsi:wavelength_min": round(min(wl), 3), "hsi:wavelength_max": round(max(wl), 3)}


MTIME_NS = "hsi:mtime_ns"  # a local raw file's modification time when indexed
DATETIME_SOURCE = "hsi:datetime_source"  # set when the item's datetime is not the acquisition time


def _datetime(
    meta: SceneMetadata, fallback: datetime | None, source: str | None, props: dict[str, Any]
) -> datetime:
    """The acquisition time, else ``fallback`` recorded in ``props`` as :data:`DATETIME_SOURCE`
    (STAC needs a datetime; a product that needs the real date refuses such an item)."""
    if meta.datetime is not None:
        return _iso(meta.datetime)
    if fallback is not None:
        props[DATETIME_SOURCE] = source or "assumed"
        return _iso(fallback)
    raise ValueError(f"scene {meta.scene_id}: no acquisition datetime in the header or file name")


def raw_item(
    meta: SceneMetadata,
    assets: Mapping[str, AssetRef],
    *,
    geometry: dict[str, Any] | None,
    bbox: Sequence[float] | None,
    fallback_datetime: datetime | None = None,
    fallback_source: str | None = None,
) -> pystac.Item:
    """The raw scene as delivered (ENVI header + binary, or an archive), before activation.
    ``fallback_datetime``: the item's datetime when the scene has no acquisition time, recorded
    as what ``fallback_source`` says it is."""
    props = _common_properties(meta)
    props["hsi:level"] = meta.level
    if meta.crs_wkt:
        from rasterio.crs import CRS

        epsg = CRS.from_wkt(meta.crs_wkt).to_epsg()
        props["proj:code"] = f"EPSG:{epsg}" if epsg else None
        if not epsg:
            props["proj:wkt2"] = meta.crs_wkt
        props["proj:shape"] = [meta.layout.height, meta.layout.width]
        if meta.transform:
            props["proj:transform"] = list(meta.transform)
    item = pystac.Item(
        id=meta.item_id,
        geometry=geometry,
        bbox=list(bbox) if bbox else None,
        datetime=_datetime(meta, fallback_datetime, fallback_source, props),
        properties=props,
        collection=meta.raw_collection,
        stac_extensions=[PROJ, FILE, HSI_EXTENSION],
    )
    for key, ref in assets.items():
        asset = ref.to_asset()
        if "data" in ref.roles and key == "data":
            asset.extra_fields["bands"] = bands_field(meta.bands, meta.layout.dtype, meta.nodata, meta.units)
        item.add_asset(key, asset)
    # eo only when an eo:* field is present (an archive-only raw item has no band table to describe)
    if any(
        k.startswith("eo:") for a in item.assets.values() for b in a.extra_fields.get("bands", []) for k in b
    ):
        item.stac_extensions.insert(2, EO)
    return item


def activated_item(
    meta: SceneMetadata,
    *,
    cube: AssetRef,
    cog: Any,  # hsi.cog.CogInfo
    extra_assets: Mapping[str, AssetRef] | None = None,
    fallback_datetime: datetime | None = None,
    fallback_source: str | None = None,
) -> pystac.Item:
    """The analysis-ready cube: one band-interleaved COG + quicklooks. Add provenance afterwards."""
    props = _common_properties(meta)
    props["proj:code"] = f"EPSG:{cog.epsg}" if cog.epsg else None
    if not cog.epsg and cog.crs_wkt:
        props["proj:wkt2"] = cog.crs_wkt
    props["proj:shape"] = [cog.height, cog.width]
    if cog.footprint is not None:  # without georeferencing the grid is pixels: no transform, no geometry
        props["proj:transform"] = list(cog.transform)
    item = pystac.Item(
        id=meta.item_id,
        geometry=cog.footprint,
        bbox=list(cog.bbox) if cog.bbox else None,
        datetime=_datetime(meta, fallback_datetime, fallback_source, props),
        properties=props,
        collection=meta.activated_collection,
        stac_extensions=[EO, RASTER, PROJ, FILE, HSI_EXTENSION],
    )
    asset = cube.to_asset()
    asset.extra_fields["bands"] = bands_field(meta.bands, cog.dtype, cog.nodata, meta.units)
    res = abs(cog.transform[0])
    asset.extra_fields["raster:spatial_resolution"] = res
    item.add_asset("cube", asset)
    for key, ref in (extra_assets or {}).items():
        item.add_asset(key, ref.to_asset())
    return item


def collection_for(collection_id: str, description: str | None = None) -> pystac.Collection:
    """A collection with an open extent; catalogs create it on first use."""
    source = collection_id.rsplit("-", 1)[0]
    short, long_name = _SENSORS.get(source, (source, None))
    desc = description or (
        f"{long_name or short} scenes, {collection_id.rsplit('-', 1)[-1]} (hsi-pipeline)"
        if not collection_id.startswith("hsi-")
        else f"hsi-pipeline product '{collection_id[4:]}'"
    )
    return pystac.Collection(
        id=collection_id,
        description=desc,
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent([[None, None]]),  # type: ignore[arg-type]
        ),
        license="other",
        title=collection_id,
    )
