"""Helpers to build small *activated-like* COGs (tests, benchmarks, notebooks).

Not the activation writer (that is :mod:`hsi.cog`): this writes the same band contract
(band-interleaved tiled COG, nodata, per-band scale/offset, WAVELENGTH_NM / FWHM_NM / GOOD_BAND
tags) from an array or a window callback, in bounded memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsi.scene import TAG_FWHM, TAG_GOOD, TAG_WAVELENGTH, BandInfo

__all__ = ["MethaneScene", "band_table", "write_activated_cog"]


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
    tags: Mapping[str, str] | None = None,
) -> Path:
    """Write a band-interleaved COG; pixels from ``data`` (N, h, w) or ``fill(window) -> (N, h, w)``."""

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
            if tags:
                ds.update_tags(**dict(tags))
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
            if overviews:  # internal overviews; a test cube need not have the COG byte layout
                factors = [f for f in (2, 4, 8) if min(width, height) // f >= block]
                if factors:
                    ds.build_overviews(factors, Resampling.nearest)
        # No rio_cogeo here: it reads through a WarpedVRT, which took minutes per call in a long test
        # process once other tests had run (seconds alone); a plain rename keeps the file.
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


class MethaneScene:
    """A synthetic at-sensor radiance scene with a known CH4 plume (tests and benchmarks).

    ``L = L0 * g_col * a * (1 + s) * exp(-k * c) + noise`` per band, with ``L0`` the mag1c table's
    background radiance (0 ppm·m) and ``k`` its unit absorption, both convolved to the bands (the
    same Beer-Lambert absorption the filter assumes); ``g_col`` a per-detector-column gain
    (±``column_gain``), ``a`` a smooth brightness field (±``brightness``), ``s`` smooth spectral
    variability (a few low-order shapes), Gaussian noise of SNR ``snr``. The plume is a Gaussian
    blob of ``peak_ppm_m`` (sigma ``plume_sigma_px``) centred at ``plume_center`` (row, col). Every
    row's random draws depend only on (seed, row), so any window is generated on its own, equal to
    the same part of the whole cube (``window(...)``), in memory proportional to the window.
    """

    def __init__(
        self,
        height: int,
        width: int,
        wavelengths: Sequence[float],
        fwhm: Sequence[float],
        *,
        peak_ppm_m: float = 1500.0,
        plume_center: tuple[float, float] | None = None,
        plume_sigma_px: float = 4.0,
        snr: float = 400.0,
        column_gain: float = 0.02,
        brightness: float = 0.03,
        seed: int = 0,
    ) -> None:
        from hsi.products.methane import ch4_lut, ch4_unit_absorption

        self.height, self.width = height, width
        self.wavelengths = np.asarray(wavelengths, dtype=np.float64)
        self.fwhm = np.asarray(fwhm, dtype=np.float64)
        self.k = ch4_unit_absorption(self.wavelengths, self.fwhm)
        wave, rads, _ = ch4_lut()
        sigma = self.fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        resp = np.exp(-((wave[:, None] - self.wavelengths[None, :]) ** 2) / (2 * sigma**2))
        self.l0 = rads[0] @ (resp / resp.sum(axis=0))
        rng = np.random.default_rng(seed)
        self.gain = 1.0 + column_gain * rng.standard_normal((width, self.wavelengths.size))
        t = (self.wavelengths - self.wavelengths.mean()) / max(np.ptp(self.wavelengths), 1e-9)
        self.shapes = np.stack([t, t**2 - t.var(), np.sin(6.0 * t)])  # (3, n) smooth variability
        self.peak = peak_ppm_m
        self.center = plume_center if plume_center is not None else (height / 2.0, width / 2.0)
        self.plume_sigma = plume_sigma_px
        self.snr = snr
        self.brightness_amp = brightness
        self.seed = seed
        self.phase = rng.uniform(0, 2 * np.pi, 4)

    def enhancement(self, rows: slice, cols: slice) -> np.ndarray:
        """The true CH4 enhancement (ppm·m) of a window, (h, w) float64."""
        r = np.arange(rows.start, rows.stop)[:, None]
        c = np.arange(cols.start, cols.stop)[None, :]
        d2 = (r - self.center[0]) ** 2 + (c - self.center[1]) ** 2
        return self.peak * np.exp(-d2 / (2.0 * self.plume_sigma**2))

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """Radiance (n_bands, h, w) float32 of rows x cols."""
        n = self.wavelengths.size
        w_all = self.width
        out = np.empty((n, rows.stop - rows.start, cols.stop - cols.start), dtype=np.float32)
        cc = np.arange(w_all)
        conc = self.enhancement(rows, cols)
        for i, r in enumerate(range(rows.start, rows.stop)):
            rng = np.random.default_rng((self.seed, r))
            bright = 1.0 + self.brightness_amp * np.sin(0.11 * r + self.phase[0]) * np.cos(
                0.07 * cc + self.phase[1]
            )
            mix = 0.05 * rng.standard_normal((w_all, self.shapes.shape[0]))
            noise = rng.standard_normal((w_all, n))
            clean = self.l0[None, :] * self.gain * bright[:, None] * (1.0 + mix @ self.shapes)
            sig = clean[cols] * np.exp(-self.k[None, :] * conc[i][:, None])
            out[:, i, :] = (sig + clean[cols] / self.snr * noise[cols]).T
        return out
