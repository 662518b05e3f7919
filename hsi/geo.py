"""Small geometry helpers: scene footprints and bounding boxes in WGS84 (EPSG:4326)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hsi.scene import SceneMetadata

if TYPE_CHECKING:  # rasterio loads on first use: indexing checks in the CLI stay fast
    from rasterio.crs import CRS
    from rasterio.transform import Affine

__all__ = ["bbox_of", "footprint", "scene_footprint"]


def footprint(
    transform: Affine, width: int, height: int, crs: CRS | None, densify: int = 8
) -> dict[str, Any]:
    """The true outline of a (possibly rotated) pixel grid as a GeoJSON polygon in EPSG:4326.

    Edges are densified so the polygon stays accurate after reprojection. Without a CRS the
    polygon is in pixel coordinates (and not meaningful on a map).
    """
    from rasterio.warp import transform_geom

    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    ring: list[tuple[float, float]] = []
    for (c0, r0), (c1, r1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for k in range(densify):
            f = k / densify
            ring.append(transform @ (c0 + (c1 - c0) * f, r0 + (r1 - r0) * f))
    ring.append(ring[0])
    geom: dict[str, Any] = {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
    if crs is not None and not crs.is_geographic:
        geom = transform_geom(crs, "EPSG:4326", geom)
    # make sure the ring is closed and counter-clockwise (GeoJSON right-hand rule)
    pts = [tuple(p) for p in geom["coordinates"][0]]
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False))
    if area < 0:
        pts = pts[::-1]
    return {"type": "Polygon", "coordinates": [[list(p) for p in pts]]}


def bbox_of(geom: dict[str, Any]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in geom["coordinates"][0]]
    ys = [p[1] for p in geom["coordinates"][0]]
    return min(xs), min(ys), max(xs), max(ys)


def scene_footprint(meta: SceneMetadata) -> dict[str, Any] | None:
    """Footprint of a scene from its header georeferencing (None when it has none)."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    if meta.glt is not None:  # sensor geometry: the footprint is the GLT grid's
        g = meta.glt
        return footprint(
            Affine(*g.transform), g.width, g.height, CRS.from_wkt(g.crs_wkt) if g.crs_wkt else None
        )
    if meta.transform is None or meta.crs_wkt is None:
        return None
    return footprint(
        Affine(*meta.transform), meta.layout.width, meta.layout.height, CRS.from_wkt(meta.crs_wkt)
    )
