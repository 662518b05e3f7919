"""A markdown card describing an activated or product item (the Prefect UI shows it as an artifact).

Pure functions over the item document: title and link, the preview image, the band table summary
(count, spectral range, bad bands, data type, nodata, scale) and key statistics (per output band,
class fractions). The caller supplies the image reference (a public URL or a ``data:`` URI).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

__all__ = ["data_uri", "item_card", "preview_asset"]

MAX_INLINE_IMAGE = 400_000  # bytes: larger previews are linked, not embedded


def preview_asset(item: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(key, asset) of the item's PNG preview (``thumbnail`` role), if any."""
    for key, a in (item.get("assets") or {}).items():
        if "thumbnail" in (a.get("roles") or []) and str(a.get("type", "")).startswith("image/png"):
            return key, a
    return None


def data_uri(png: bytes) -> str | None:
    """A ``data:image/png;base64,...`` URI, or None when the image is too large to embed."""
    if len(png) > MAX_INLINE_IMAGE:
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _band_summary(bands: list[Mapping[str, Any]]) -> list[str]:
    wl = [b["eo:center_wavelength"] * 1000.0 for b in bands if b.get("eo:center_wavelength") is not None]
    bad = [i + 1 for i, b in enumerate(bands) if b.get("hsi:good_band") is False]
    first = bands[0]
    rows = [
        "| bands | spectral range (nm) | bad bands | data type | nodata | scale / offset |",
        "|---|---|---|---|---|---|",
        f"| {len(bands)} | {f'{min(wl):.1f} - {max(wl):.1f}' if wl else '-'} | {len(bad)} | "
        f"{first.get('data_type', '?')} | {first.get('nodata', '-')} | "
        f"{first.get('raster:scale', 1)} / {first.get('raster:offset', 0)} |",
    ]
    return rows


def _stats(bands: list[Mapping[str, Any]]) -> list[str]:
    withstats = [b for b in bands if b.get("statistics")]
    if not withstats:
        return []
    out = ["| band | min | max | mean | std | valid % |", "|---|---|---|---|---|---|"]
    for b in withstats[:20]:
        s = b["statistics"]

        def f(k: str, s: Mapping[str, Any] = s) -> str:
            return f"{s[k]:.4g}" if s.get(k) is not None else "-"

        out.append(
            f"| {b.get('name', '')} | {f('minimum')} | {f('maximum')} | {f('mean')} | {f('stddev')} | "
            f"{f('valid_percent')} |"
        )
    return out


def item_card(item: Mapping[str, Any], *, item_link: str, image: str | None) -> str:
    """Markdown: heading, link to the item, preview image, band table summary, key statistics."""
    props = item.get("properties") or {}
    cid, iid = item.get("collection", ""), item.get("id", "")
    lines = [f"# {props.get('title') or f'{cid}/{iid}'}", ""]
    link = f"[{iid}]({item_link})" if "://" in item_link else f"`{item_link}`"
    lines += [f"**STAC item**: {link} (collection `{cid}`)", ""]
    for k, label in (
        ("hsi:scene_id", "scene"),
        ("hsi:source", "source"),
        ("hsi:product", "product"),
        ("processing:level", "level"),
        ("hsi:product_key", "product key"),
    ):
        if props.get(k):
            lines.append(f"- **{label}**: `{props[k]}`")
    if props.get("proj:shape"):
        h, w = props["proj:shape"]
        lines.append(f"- **size**: {w} x {h} px, {props.get('proj:code') or 'custom CRS'}")
    lines.append("")
    pa = preview_asset(item)
    if image and pa:
        lines += [f"![{pa[1].get('title') or 'preview'}]({image})", ""]
    elif pa:
        lines += [f"Preview: `{pa[1].get('href')}`", ""]
    data = next((a for k, a in (item.get("assets") or {}).items() if k in ("cube", "data")), None)
    bands = list((data or {}).get("bands") or [])
    if bands:
        lines += ["## Bands", "", *_band_summary(bands), ""]
        st = _stats(bands)
        if st:
            lines += ["## Statistics", "", *st, ""]
    fr = props.get("hsi:class_fractions")
    if fr:
        lines += ["## Classes (fraction of valid pixels)", "", "| class | fraction |", "|---|---|"]
        lines += [f"| {k} | {float(v):.4f} |" for k, v in fr.items()]
        lines.append("")
    return "\n".join(lines)
