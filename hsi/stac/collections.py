"""Collection metadata kept current as items arrive: extent, summaries, item_assets.

:func:`merge_item` folds one item into its collection document (a pure function on dicts, used by
both catalog backends): the spatial extent grows to cover the item's bbox, the temporal extent to
cover its datetime (or range), ``summaries`` gain its instruments, gsd, spectral range
(``hsi:wavelength_min``/``max``, nm) and product classes, and ``item_assets`` describes each of
its asset keys (media type, roles, title). Nothing is ever removed: extents are envelopes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["PLACEHOLDER_BBOX", "merge_item"]

PLACEHOLDER_BBOX = [-180.0, -90.0, 180.0, 90.0]


def _dt(s: Any) -> datetime | None:
    if not s:
        return None
    d = datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _range(summaries: dict[str, Any], key: str, lo: float, hi: float) -> None:
    cur = summaries.get(key)
    if isinstance(cur, dict) and "minimum" in cur and "maximum" in cur:
        lo, hi = min(lo, float(cur["minimum"])), max(hi, float(cur["maximum"]))
    summaries[key] = {"minimum": lo, "maximum": hi}


def _union(summaries: dict[str, Any], key: str, values: list[Any]) -> None:
    cur = summaries.get(key)
    out = list(cur) if isinstance(cur, list) else []
    for v in values:
        if v not in out:
            out.append(v)
    summaries[key] = out


def merge_item(collection: Mapping[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
    """``collection`` with ``item`` folded into its extent, summaries and item_assets (a new dict)."""
    col = copy.deepcopy(dict(collection))
    props = item.get("properties") or {}
    extent = col.setdefault("extent", {})
    spatial = extent.setdefault("spatial", {}).setdefault("bbox", [list(PLACEHOLDER_BBOX)])
    bbox = item.get("bbox")
    if bbox:
        b = [float(v) for v in (bbox[:2] + bbox[-2:] if len(bbox) == 6 else bbox)]
        cur = spatial[0] if spatial and spatial[0] != PLACEHOLDER_BBOX else None
        spatial[0] = (
            b if cur is None else [min(cur[0], b[0]), min(cur[1], b[1]), max(cur[2], b[2]), max(cur[3], b[3])]
        )
    start = _dt(props.get("start_datetime")) or _dt(props.get("datetime"))
    end = _dt(props.get("end_datetime")) or _dt(props.get("datetime"))
    if start and end:
        interval = extent.setdefault("temporal", {}).setdefault("interval", [[None, None]])
        lo, hi = _dt(interval[0][0]), _dt(interval[0][1])
        interval[0] = [_iso(min(start, lo) if lo else start), _iso(max(end, hi) if hi else end)]

    s = col.setdefault("summaries", {})
    if props.get("instruments"):
        _union(s, "instruments", list(props["instruments"]))
    gsd = props.get("gsd")
    if gsd is None:
        res = [a.get("raster:spatial_resolution") for a in (item.get("assets") or {}).values()]
        gsd = next((r for r in res if r is not None), None)
    if gsd is not None:
        _range(s, "gsd", float(gsd), float(gsd))
    if props.get("hsi:wavelength_min") is not None:
        _range(
            s, "hsi:wavelength_min", float(props["hsi:wavelength_min"]), float(props["hsi:wavelength_min"])
        )
    if props.get("hsi:wavelength_max") is not None:
        _range(
            s, "hsi:wavelength_max", float(props["hsi:wavelength_max"]), float(props["hsi:wavelength_max"])
        )
    if props.get("hsi:classes"):
        _union(s, "hsi:classes", list(props["hsi:classes"]))
    if props.get("hsi:product"):
        _union(s, "hsi:product", [props["hsi:product"]])

    ia = col.setdefault("item_assets", {})
    for key, a in (item.get("assets") or {}).items():
        if key not in ia:
            ia[key] = {k: a[k] for k in ("type", "roles", "title") if a.get(k) is not None}
    return col
