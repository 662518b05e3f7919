"""On-demand planning: which raw scenes a request touches, which are activated, what must run.

A request is an area of interest (bbox or GeoJSON geometry, EPSG:4326), a time range, products
(with parameters) and optionally a source filter. :func:`plan_request` turns it into one
:class:`ScenePlan` per intersecting raw scene; the on-demand flow executes the plan and reports one
:class:`Outcome` per (scene, product). Pure: no Prefect; usable from a notebook::

    from hsi.services import Services
    from hsi.planning import aoi_from, plan_request, time_range
    svc = Services.from_config("hsi.yaml")
    plan = plan_request(svc, aoi=aoi_from(bbox=[-122.6, 37.0, -122.0, 37.5]),
                        time_range=time_range("2024-01-01", "2024-12-31"), products=["index:NDVI"])
    plan.table()

Geometry: candidate scenes come from the catalog's bbox search; the AOI is then tested against
each item's true footprint (shapely when installed, else an exact polygon test in pure Python).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal

import pystac

from hsi import activation as act
from hsi.catalog.base import BBox, Catalog, DatetimeRange
from hsi.cog_profile import CogProfile
from hsi.errors import InvalidInputError
from hsi.quantities import parse_request_params
from hsi.services import Services
from hsi.sources import list_sources

__all__ = [
    "Aoi",
    "Outcome",
    "Plan",
    "ProductRequest",
    "ScenePlan",
    "aoi_from",
    "find_scenes",
    "geometries_intersect",
    "load_aoi",
    "overall_status",
    "plan_request",
    "product_requests",
    "raw_collections",
    "summarize",
    "time_range",
]

log = logging.getLogger(__name__)

ActivationState = Literal["up-to-date", "missing", "stale"]
Status = Literal["published", "skipped", "failed"]
Overall = Literal["ok", "partial", "failed"]


# ------------------------------------------------------------------------------------------ AOI
@dataclass(frozen=True)
class Aoi:
    """An area of interest in EPSG:4326: a Polygon or MultiPolygon and its bbox."""

    geometry: Mapping[str, Any]
    bbox: BBox

    @property
    def key(self) -> str:
        """sha256 of the canonical geometry (coordinates rounded to 1e-9 degrees)."""
        blob = json.dumps(_round(self.geometry), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def short(self) -> str:
        return self.key[:8]


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 9)
    if isinstance(obj, Mapping):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_round(v) for v in obj]
    return obj


def _polygons(geom: Mapping[str, Any]) -> list[list[list[list[float]]]]:
    """Polygons (list of rings) of a Polygon/MultiPolygon geometry."""
    t = geom.get("type")
    if t == "Polygon":
        return [geom["coordinates"]]
    if t == "MultiPolygon":
        return list(geom["coordinates"])
    raise InvalidInputError(f"AOI geometry must be a Polygon or MultiPolygon, got {t!r}")


def _geometry_of(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A Polygon/MultiPolygon from a geometry, Feature or FeatureCollection document."""
    t = doc.get("type")
    if t == "Feature":
        if not doc.get("geometry"):
            raise InvalidInputError(f"{where}: the Feature has no geometry")
        return _geometry_of(doc["geometry"], where)
    if t == "FeatureCollection":
        polys = [p for f in doc.get("features", []) for p in _polygons(_geometry_of(f, where))]
        if not polys:
            raise InvalidInputError(f"{where}: the FeatureCollection has no polygon features")
        return (
            {"type": "Polygon", "coordinates": polys[0]}
            if len(polys) == 1
            else {"type": "MultiPolygon", "coordinates": polys}
        )
    if t in ("Polygon", "MultiPolygon"):
        polys = _polygons(doc)
        if not polys or any(not rings or len(rings[0]) < 4 for rings in polys):
            raise InvalidInputError(f"{where}: polygon rings need at least 4 positions")
        return {"type": t, "coordinates": doc["coordinates"]}
    raise InvalidInputError(
        f"{where}: expected a GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection, got type {t!r}"
    )


def aoi_from(bbox: Sequence[float] | None = None, geometry: Mapping[str, Any] | None = None) -> Aoi:
    """An :class:`Aoi` from a bbox ``[W, S, E, N]`` or a GeoJSON geometry/Feature (EPSG:4326)."""
    if (bbox is None) == (geometry is None):
        raise InvalidInputError("give exactly one of bbox or aoi (a GeoJSON geometry)")
    if bbox is not None:
        if len(bbox) != 4:
            raise InvalidInputError(f"bbox must be [west, south, east, north], got {list(bbox)}")
        w, s, e, n = (float(v) for v in bbox)
        if not (w < e and s < n and w >= -180 and e <= 180 and s >= -90 and n <= 90):
            raise InvalidInputError(f"bbox {list(bbox)} is not a valid EPSG:4326 [west, south, east, north]")
        ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
        return Aoi({"type": "Polygon", "coordinates": [ring]}, (w, s, e, n))
    geom = _geometry_of(geometry or {}, "aoi")
    xs = [p[0] for poly in _polygons(geom) for p in poly[0]]
    ys = [p[1] for poly in _polygons(geom) for p in poly[0]]
    return Aoi(geom, (min(xs), min(ys), max(xs), max(ys)))


def load_aoi(path: str | Path) -> Aoi:
    """An AOI from a GeoJSON file (geometry, Feature or FeatureCollection of polygons)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise InvalidInputError(f"{p}: cannot read the AOI file: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{p}: not valid GeoJSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{p}: GeoJSON must be an object")
    return aoi_from(geometry=_geometry_of(doc, str(p)))


# ------------------------------------------------------------------------------------ geometry
def geometries_intersect(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when two Polygon/MultiPolygon geometries share at least one point."""
    try:
        from shapely.geometry import shape
    except ImportError:
        return any(_poly_intersects(pa, pb) for pa in _polygons(a) for pb in _polygons(b))
    return bool(shape(a).intersects(shape(b)))


def _segments(ring: Sequence[Sequence[float]]) -> Iterable[tuple[Sequence[float], Sequence[float]]]:
    return zip(ring, list(ring[1:]) + [ring[0]], strict=True)


def _orient(p: Sequence[float], q: Sequence[float], r: Sequence[float]) -> float:
    return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])


def _on_segment(p: Sequence[float], q: Sequence[float], r: Sequence[float]) -> bool:
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def _seg_intersect(
    p1: Sequence[float], p2: Sequence[float], q1: Sequence[float], q2: Sequence[float]
) -> bool:
    d1, d2 = _orient(q1, q2, p1), _orient(q1, q2, p2)
    d3, d4 = _orient(p1, p2, q1), _orient(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def _in_ring(pt: Sequence[float], ring: Sequence[Sequence[float]]) -> bool:
    x, y = pt[0], pt[1]
    inside = False
    for a, b in _segments(ring):
        if (a[1] > y) != (b[1] > y) and x < a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]):
            inside = not inside
    return inside


def _in_polygon(pt: Sequence[float], rings: Sequence[Sequence[Sequence[float]]]) -> bool:
    return _in_ring(pt, rings[0]) and not any(_in_ring(pt, h) for h in rings[1:])


def _poly_intersects(a: Sequence[Sequence[Sequence[float]]], b: Sequence[Sequence[Sequence[float]]]) -> bool:
    for ra in a:
        for rb in b:
            if any(_seg_intersect(p1, p2, q1, q2) for p1, p2 in _segments(ra) for q1, q2 in _segments(rb)):
                return True
    return _in_polygon(a[0][0], b) or _in_polygon(b[0][0], a)


# ------------------------------------------------------------------------------- time, sources
def _parse_time(value: str | date | datetime | None, *, end: bool, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time.max if end else time.min, tzinfo=UTC)
    text = str(value).strip()
    try:
        if len(text) == 10:  # a date: the whole day (end is inclusive)
            return _parse_time(date.fromisoformat(text), end=end, name=name)
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidInputError(f"{name} {value!r} is not an ISO date or datetime (e.g. 2024-01-31)") from e
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def time_range(
    start: str | date | datetime | None = None, end: str | date | datetime | None = None
) -> DatetimeRange:
    """``(start, end)`` in UTC; a date-only ``end`` includes that whole day; either may be open."""
    lo, hi = _parse_time(start, end=False, name="start"), _parse_time(end, end=True, name="end")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInputError(f"start {start} is after end {end}")
    return lo, hi


def raw_collections(sources: Sequence[str] | None = None) -> list[str]:
    """``<source>-raw`` collections to search (all known sources when ``sources`` is empty)."""
    known = list_sources()
    bad = [s for s in sources or () if s not in known]
    if bad:
        raise InvalidInputError(f"unknown source(s) {', '.join(bad)}; known: {', '.join(known)}")
    return [f"{s}-raw" for s in (sources or known)]


# ------------------------------------------------------------------------------------ products
@dataclass(frozen=True)
class ProductRequest:
    product: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        if not self.params:
            return self.product
        return f"{self.product} {json.dumps(dict(self.params), sort_keys=True)}"


def product_requests(products: Sequence[str | Mapping[str, Any]]) -> list[ProductRequest]:
    """Validated requests from names (``"index:NDVI"``) or ``{"product": ..., "params": {...}}``.

    Unknown products and invalid parameters raise :class:`~hsi.errors.ProductError` before any work.
    """
    from hsi.products import get_product

    if not products:
        raise InvalidInputError("no products requested")
    out = []
    for p in products:
        if isinstance(p, str):
            req = ProductRequest(p)
        elif isinstance(p, Mapping) and isinstance(p.get("product"), str):
            extra = set(p) - {"product", "params"}
            if extra:
                raise InvalidInputError(
                    f"product request {dict(p)}: unknown key(s) {', '.join(sorted(extra))}"
                )
            req = ProductRequest(p["product"], dict(p.get("params") or {}))
        else:
            raise InvalidInputError(
                f"product request {p!r}: expected a name or {{'product': name, 'params': {{}}}}"
            )
        parse_request_params(get_product(req.product), req.params)
        out.append(req)
    return out


# ---------------------------------------------------------------------------------------- plan
def find_scenes(
    catalog: Catalog, aoi: Aoi, trange: DatetimeRange | None = None, sources: Sequence[str] | None = None
) -> list[pystac.Item]:
    """Raw items intersecting the AOI (bbox search, then the true footprint) within the time range."""
    found = catalog.search(
        collections=raw_collections(sources),
        bbox=aoi.bbox,
        datetime_range=trange if trange and any(trange) else None,
    )
    out = []
    for item in found:
        geom = item.geometry
        if (
            geom
            and geom.get("type") in ("Polygon", "MultiPolygon")
            and not geometries_intersect(aoi.geometry, geom)
        ):
            log.debug("%s: bbox intersects the AOI but the footprint does not", item.id)
            continue
        out.append(item)
    return sorted(
        out, key=lambda i: (i.datetime or datetime.min.replace(tzinfo=UTC), i.collection_id or "", i.id)
    )


@dataclass(frozen=True)
class ScenePlan:
    """What the on-demand run does for one raw scene."""

    raw_collection: str
    item_id: str
    source: str
    datetime: str | None
    bbox: tuple[float, ...] | None
    activated_collection: str
    activation: ActivationState
    activation_reason: str
    activate: bool  # run activation (missing, stale or forced)
    products: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bbox"] = list(self.bbox) if self.bbox else None
        d["products"] = list(self.products)
        return d


@dataclass(frozen=True)
class Plan:
    aoi: Aoi
    time_range: DatetimeRange
    sources: tuple[str, ...]
    products: tuple[ProductRequest, ...]
    scenes: tuple[ScenePlan, ...]
    force: bool = False

    def table(self) -> list[dict[str, Any]]:
        """One row per scene: id, date, activation state, what runs."""
        return [
            {
                "scene": f"{s.raw_collection}/{s.item_id}",
                "datetime": s.datetime or "",
                "activated": s.activation,
                "activate": "yes" if s.activate else "no",
                "products": ", ".join(s.products),
            }
            for s in self.scenes
        ]


def activation_state(
    services: Services, raw: pystac.Item, profile: CogProfile | None = None
) -> tuple[ActivationState, str]:
    """Whether the scene's activated item is up to date, missing or stale, and why."""
    coll = act.activated_collection(raw)
    key, _ = act.activation_key(services, raw, profile or CogProfile())
    reason = act.check_done(services, coll, raw.id, key)
    if reason is not None:
        return "up-to-date", reason
    if services.catalog.get_item(coll, raw.id) is None:
        return "missing", f"{coll}/{raw.id} is not in the catalog"
    return "stale", f"{coll}/{raw.id} is out of date (key differs or assets incomplete)"


def plan_request(
    services: Services,
    *,
    aoi: Aoi,
    time_range: DatetimeRange | None = None,
    products: Sequence[str | Mapping[str, Any]],
    sources: Sequence[str] | None = None,
    force: bool = False,
    profile: CogProfile | None = None,
) -> Plan:
    """The plan of an on-demand request (validates products and sources first; reads only the catalog)."""
    reqs = product_requests(products)
    trange = time_range or (None, None)
    scenes = []
    for raw in find_scenes(services.catalog, aoi, trange, sources):
        state, why = activation_state(services, raw, profile)
        scenes.append(
            ScenePlan(
                raw_collection=raw.collection_id or "",
                item_id=raw.id,
                source=raw.properties.get("hsi:source", ""),
                datetime=raw.datetime.isoformat() if raw.datetime else None,
                bbox=tuple(raw.bbox) if raw.bbox else None,
                activated_collection=act.activated_collection(raw),
                activation=state,
                activation_reason=why,
                activate=force or state != "up-to-date",
                products=tuple(r.product for r in reqs),
            )
        )
    return Plan(
        aoi=aoi,
        time_range=trange,
        sources=tuple(sources or ()),
        products=tuple(reqs),
        scenes=tuple(scenes),
        force=force,
    )


# ------------------------------------------------------------------------------------- outcome
@dataclass(frozen=True)
class Outcome:
    """What happened to one (scene, product) pair."""

    scene: str  # raw item id
    product: str
    status: Status
    reason: str = ""
    activation: str = ""  # activated | skipped | failed
    collection: str = ""
    item_id: str = ""
    item_href: str = ""
    asset: str = ""
    thumbnail: str = ""
    clip_href: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Outcome:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def summarize(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """Counts per status (``published``, ``skipped``, ``failed``) plus ``total``."""
    counts = {"published": 0, "skipped": 0, "failed": 0}
    for o in outcomes:
        counts[o.status] += 1
    counts["total"] = sum(counts.values())
    return counts


def overall_status(outcomes: Iterable[Outcome]) -> Overall:
    """``ok`` when nothing failed (also when there was nothing to do), ``failed`` when everything
    failed, else ``partial``."""
    c = summarize(outcomes)
    if c["failed"] == 0:
        return "ok"
    return "failed" if c["failed"] == c["total"] else "partial"
