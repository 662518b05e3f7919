"""Small PNG previews of product COGs with a colour map and a legend (numpy + Pillow).

The preview reads one band decimated (``out_shape``: GDAL serves it from the overviews) so it
never reads the full-resolution raster. Classified bands (``HSI_CLASSES`` tag written by the
engine) get a categorical palette and a swatch legend; continuous bands get a perceptual ramp
stretched to the 2–98 % percentiles and a colour-bar legend with the stretch limits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

__all__ = ["CATEGORICAL", "colormap_lut", "write_preview"]

log = logging.getLogger(__name__)

# Anchor colours of common ramps (sampled from the matplotlib definitions); interpolated to 256.
_RAMPS: dict[str, list[tuple[int, int, int]]] = {
    "viridis": [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
    "inferno": [(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)],
    "magma": [(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}
CATEGORICAL = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
NODATA_RGB = (0, 0, 0)


def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a named ramp (unknown names fall back to viridis)."""
    anchors = np.array(_RAMPS.get(name, _RAMPS["viridis"]), dtype=np.float64)
    x = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # older Pillow
        return ImageFont.load_default()


def write_preview(
    product_cog: str | Path,
    png_path: str | Path,
    *,
    band: int | None = None,
    max_size: int = 512,
    colormap: str | None = None,
) -> Path:
    """Write a PNG (map + legend below, <= ``max_size`` px on the long side) of one band."""
    from PIL import Image, ImageDraw

    with rasterio.open(product_cog) as ds:
        tags = ds.tags()
        classes = (
            {int(k): v for k, v in json.loads(tags["HSI_CLASSES"]).items()} if "HSI_CLASSES" in tags else None
        )
        class_band = int(tags.get("HSI_CLASS_BAND", "1"))
        default = int(tags["HSI_PREVIEW_BAND"]) if "HSI_PREVIEW_BAND" in tags else None
        bidx = band or default or (class_band if classes else 1)
        is_class = classes is not None and bidx == class_band
        cols = 2 if min(max(ds.width, 300), max_size) < 450 else 3
        n_leg = ((len(classes) + cols - 1) // cols) if classes and bidx == class_band else 1
        legend_h = 22 * n_leg + 20
        scale = min(1.0, max_size / ds.width, max(16, max_size - legend_h) / ds.height)
        h, w = max(1, round(ds.height * scale)), max(1, round(ds.width * scale))
        arr = ds.read(bidx, out_shape=(h, w), resampling=Resampling.nearest, masked=True)
        title = f"{tags.get('HSI_PRODUCT', Path(product_cog).name)} - {ds.descriptions[bidx - 1] or f'band {bidx}'}"
    valid = ~np.ma.getmaskarray(arr) & np.isfinite(np.ma.getdata(arr))
    data = np.ma.getdata(arr).astype(np.float64)
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[:] = NODATA_RGB
    font = _font()
    lw = max(w, min(300, max_size))
    canvas = Image.new("RGB", (lw, h + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if is_class and classes:
        colors = {}
        if "HSI_CLASS_COLORS" in tags:
            colors = {int(k): tuple(v) for k, v in json.loads(tags["HSI_CLASS_COLORS"]).items()}
        for i, k in enumerate(sorted(classes)):
            colors.setdefault(k, CATEGORICAL[i % len(CATEGORICAL)])
            rgb[valid & (data == k)] = colors[k]
        canvas.paste(Image.fromarray(rgb), (0, 0))
        for i, k in enumerate(sorted(classes)):
            x, y = 6 + (i % cols) * (lw // cols), h + 6 + (i // cols) * 22
            draw.rectangle([x, y, x + 14, y + 14], fill=colors[k], outline=(0, 0, 0))
            draw.text((x + 20, y), f"{k}: {classes[k]}", fill=(0, 0, 0), font=font)
    else:
        lut = colormap_lut(colormap or tags.get("HSI_COLORMAP", "viridis"))
        if valid.any():
            lo, hi = np.percentile(data[valid], [2, 98])
        else:
            lo, hi = 0.0, 1.0
        hi = hi if hi > lo else lo + 1e-12
        idx = np.clip((data - lo) / (hi - lo) * 255, 0, 255)
        rgb[valid] = lut[idx[valid].astype(np.uint8)]
        canvas.paste(Image.fromarray(rgb), (0, 0))
        bar = np.repeat(lut[None, :, :], 12, axis=0)
        bar_img = Image.fromarray(bar).resize((lw - 120, 12))
        canvas.paste(bar_img, (60, h + 8))
        draw.text((4, h + 6), f"{lo:.3g}", fill=(0, 0, 0), font=font)
        draw.text((lw - 56, h + 6), f"{hi:.3g}", fill=(0, 0, 0), font=font)
    draw.text((4, h + legend_h - 16), title[: max(10, lw // 6)], fill=(60, 60, 60), font=font)
    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(png, format="PNG")  # optimize=True: ~6x the time for the same size (measured)
    log.info("preview %s (%dx%d) of %s band %d", png, canvas.width, canvas.height, product_cog, bidx)
    return png
