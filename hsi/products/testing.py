"""Helpers to build small *activated-like* COGs (tests, benchmarks, notebooks).

Not the activation writer (that is :mod:`hsi.cog`): this writes the same band contract
(band-interleaved tiled COG, nodata, per-band scale/offset, WAVELENGTH_NM / FWHM_NM / GOOD_BAND
tags) from an array or a window callback, in bounded memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsi.scene import TAG_FWHM, TAG_GOOD, TAG_WAVELENGTH, BandInfo

__all__ = ["band_table", "write_activated_cog"]


def band_table(
    wavelengths: Sequence[float],
    fwhm: Sequence[float] | float | None = None,
    good: Sequence[bool] | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[BandInfo]:
    """BandInfo list (1-based) from wavelengths (nm)."""
    n = len(wavelengths)
    fw = [fwhm] * n if fwhm is None or isinstance(fwhm, int | float) else list(fwhm)
    gd = [True] * n if good is None else list(good)
    return [
        BandInfo(i + 1, float(w), None if f is None else float(f), bool(g), scale, offset)
        for i, (w, f, g) in enumerate(zip(wavelengths, fw, gd, strict=True))
    ]


def write_activated_cog(
    path: str | Path,
    bands: Sequence[BandInfo],
    data: np.ndarray | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    fill: Callable[[Window], np.ndarray] | None = None,
    dtype: str = "float32",
    nodata: float | None = -9999.0,
    block: int = 256,
    overviews: bool = False,
    crs: str = "EPSG:32611",
    pixel: float = 5.0,
) -> Path:
    """Write a band-interleaved COG; pixels from ``data`` (N, h, w) or ``fill(window) -> (N, h, w)``."""
    from rio_cogeo.cogeo import cog_translate

    if data is not None:
        _, height, width = data.shape
    assert width is not None and height is not None
    path = Path(path)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(bands),
        "dtype": dtype,
        "nodata": nodata,
        "crs": crs,
        "transform": from_origin(500000.0, 4000000.0, pixel, pixel),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "interleave": "band",
        "compress": "ZSTD",
        "BIGTIFF": "IF_SAFER",
    }
    fd, tmp = tempfile.mkstemp(suffix=".tif", dir=path.parent)
    os.close(fd)
    try:
        with rasterio.open(tmp, "w", **profile) as ds:
            ds.scales = [b.scale for b in bands]
            ds.offsets = [b.offset for b in bands]
            for b in bands:
                ds.set_band_description(b.index, b.description())
                tags = {TAG_GOOD: "1" if b.good else "0"}
                if b.center_wavelength is not None:
                    tags[TAG_WAVELENGTH] = f"{b.center_wavelength:.4f}"
                if b.fwhm is not None:
                    tags[TAG_FWHM] = f"{b.fwhm:.4f}"
                ds.update_tags(b.index, **tags)
            for r in range(0, height, block):
                for c in range(0, width, block):
                    w = Window(c, r, min(block, width - c), min(block, height - r))
                    arr = data[:, r : r + w.height, c : c + w.width] if data is not None else fill(w)  # type: ignore[misc]
                    ds.write(arr.astype(dtype, copy=False), window=w)
        prof = {
            "driver": "GTiff",
            "interleave": "band",
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "compress": "ZSTD",
        }
        cog_translate(
            tmp,
            str(path),
            prof,
            nodata=nodata,
            in_memory=False,
            quiet=True,
            overview_level=None if overviews else 0,
            forward_band_tags=True,
        )
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
