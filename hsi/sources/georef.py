"""ENVI ``map info`` -> affine transform and CRS, exactly as GDAL's ENVI driver reads them.

See :mod:`hsi.sources.envi` for the rules (reference pixel, ``rotation=``, hemisphere, datum).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from hsi.errors import HeaderError

__all__ = ["MapInfo", "map_info_crs_wkt", "map_info_transform"]

log = logging.getLogger(__name__)


def _list_items(value: str) -> list[str]:
    inner = value.strip()
    if inner.startswith("{"):
        inner = inner[1 : inner.rfind("}")]
    return [p.strip() for p in inner.replace("\n", " ").split(",") if p.strip() != ""]


@dataclass(frozen=True)
class MapInfo:
    """The ENVI ``map info`` list, typed (projection name, tie point, pixel size, extras)."""

    projection: str
    ref_x: float  # 1-based reference pixel
    ref_y: float
    easting: float
    northing: float
    pixel_x: float
    pixel_y: float
    zone: int | None = None  # UTM only
    north: bool = True  # UTM only: False only when the field says 'South'
    datum: str | None = None
    units: str | None = None  # from a 'units=' token
    rotation_deg: float = 0.0  # from a 'rotation=' token (counter-clockwise, degrees)
    fields: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str, path: object = "<header>") -> MapInfo:
        items = _list_items(value)
        if len(items) < 7:
            raise HeaderError(path, f"needs at least 7 items, found {len(items)}", field="map info")
        try:
            nums = [float(x) for x in items[1:7]]
        except ValueError as exc:
            raise HeaderError(path, f"tie point / pixel size not numeric ({exc})", field="map info") from None
        units = None
        rotation = 0.0
        for item in items:  # GDAL matches these tokens exactly ('rotation=', 'units=')
            if item.startswith("units="):
                units = item[len("units=") :].strip()
            elif item.startswith("rotation="):
                try:
                    rotation = float(item[len("rotation=") :])
                except ValueError:
                    raise HeaderError(path, f"bad rotation {item!r}", field="map info") from None
            elif item.lower().startswith("rotation"):
                log.warning("%s: map info item %r ignored (GDAL only reads 'rotation=')", path, item)
        proj = items[0]
        zone = None
        north = True
        datum = None
        if proj.upper().startswith("UTM") and len(items) >= 9:
            try:
                zone = int(float(items[7]))
            except ValueError:
                raise HeaderError(path, f"bad UTM zone {items[7]!r}", field="map info") from None
            north = items[8].strip().lower() != "south"
            if len(items) >= 10 and "=" not in items[9]:
                datum = items[9]
        elif proj.lower().startswith("geographic lat") and len(items) > 7 and "=" not in items[7]:
            datum = items[7]
        return cls(
            proj,
            nums[0],
            nums[1],
            nums[2],
            nums[3],
            nums[4],
            nums[5],
            zone=zone,
            north=north,
            datum=datum,
            units=units,
            rotation_deg=rotation,
            fields=tuple(items),
        )


# ----------------------------------------------------------------------------------------------
# Georeferencing (GDAL-exact)
# ----------------------------------------------------------------------------------------------


def map_info_transform(mi: MapInfo) -> tuple[float, float, float, float, float, float]:
    """Affine (a, b, c, d, e, f) of a ``map info``, as GDAL's ENVI driver computes it."""
    r = -math.radians(mi.rotation_deg)
    px, py = mi.pixel_x, mi.pixel_y
    c = mi.easting - (mi.ref_x - 1.0) * px
    f = mi.northing + (mi.ref_y - 1.0) * py
    if abs(mi.rotation_deg) == 180.0:
        a, b, d, e = px, 0.0, 0.0, py
    else:
        a, b = math.cos(r) * px, -math.sin(r) * px
        d, e = -math.sin(r) * py, -math.cos(r) * py
    if mi.projection.lower().startswith("geographic") and mi.units:
        k = {"minutes": 60.0, "seconds": 3600.0}.get(mi.units.lower(), 1.0)
        a, b, c, d, e, f = (v / k for v in (a, b, c, d, e, f))
    return (a, b, c, d, e, f)


# ENVI datum name -> EPSG geographic CRS (GDAL's SetENVIDatum table).
_DATUM_EPSG = {
    "wgs-84": 4326,
    "wgs-72": 4322,
    "north america 1983": 4269,
    "north america 1927": 4267,
    "ordnance survey of great britain '36": 4277,
    "sad-69/brazil": 4291,
    "geocentric datum of australia 1994": 4283,
    "australian geodetic 1984": 4203,
    "nouvelle triangulation francaise ign": 4275,
    "grs 80": 4269,
    "airy": 4001,
    "australian national": 4003,
    "bessel 1841": 4004,
    "clark 1866": 4008,
}


def _datum_epsg(name: str | None, default: int, path: object) -> int:
    if name is None:
        return default
    key = name.strip().lower()
    if key in _DATUM_EPSG:
        return _DATUM_EPSG[key]
    if "nad27" in key or "nad-27" in key:
        return 4267
    if key.startswith("european 1950"):
        return 4230
    log.warning("%s: unrecognised datum %r in map info, using WGS-84 (as GDAL does)", path, name)
    return 4326


def map_info_crs_wkt(mi: MapInfo | None, css: str | None = None, path: object = "<header>") -> str | None:
    """CRS WKT of a header: ``coordinate system string`` first, then UTM / Geographic ``map info``."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if css:
        try:
            return str(CRS.from_wkt(css).to_wkt())
        except CRSError as exc:
            log.warning("%s: coordinate system string not understood (%s); using map info", path, exc)
    if mi is None:
        return None
    name = mi.projection.lower()
    if name.startswith("utm") and mi.zone is not None:
        geog = _datum_epsg(mi.datum, 4267, path)  # GDAL: no datum item -> NAD27
        epsg = {4326: 32600, 4322: 32200, 4269: 26900, 4267: 26700}.get(geog)
        if epsg is not None and (mi.north or geog in (4326, 4322)) and 1 <= mi.zone <= 60:
            code = epsg + mi.zone + (0 if mi.north else 100)
            if geog in (4269, 4267) and mi.zone > 23:
                code = 0
            if code:
                return str(CRS.from_epsg(code).to_wkt())
        from pyproj.crs import CRS as PCRS
        from pyproj.crs import ProjectedCRS
        from pyproj.crs.coordinate_operation import UTMConversion

        utm = ProjectedCRS(
            UTMConversion(str(mi.zone), "north" if mi.north else "south"), geodetic_crs=PCRS.from_epsg(geog)
        )
        return str(CRS.from_wkt(utm.to_wkt("WKT1_GDAL")).to_wkt())
    if name.startswith("geographic lat"):
        return str(CRS.from_epsg(_datum_epsg(mi.datum, 4326, path)).to_wkt())
    log.warning(
        "%s: map info projection %r not supported without a coordinate system string; no CRS",
        path,
        mi.projection,
    )
    return None
