"""What a product's input windows go through before ``compute``: TOA reflectance and quality masks.

The engine reads the selected bands as physical values; each *adjustment* then changes the window
in place (``adjust(arr, band_indexes, window)``):

* :class:`ToaReflectance` turns radiance into TOA reflectance (:mod:`hsi.toa`): per band
  ``pi d^2 u / E_sun``, divided per pixel by ``cos(theta_s)`` read from an observation-geometry COG
  (same grid as the cube) or by the scene's ``cos(theta_s)``;
* :class:`MaskFlags` sets NaN (nodata) where any chosen flag band of a mask COG is 1 (EMIT L2A
  MASK: cloud, cirrus, water, dilated cloud).

Both read their side COG window by window (bounded memory) and are recorded by the caller in the
product's provenance and key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import rasterio
from rasterio.windows import Window

from hsi.errors import ProductError

__all__ = ["MaskFlags", "SideRaster", "ToaReflectance", "WindowAdjust", "side_cog"]


class WindowAdjust(Protocol):
    def __call__(self, arr: np.ndarray, bands: Sequence[int], window: Window) -> None: ...


class SideRaster(Protocol):
    """A raster on the cube's grid read window by window (a side COG, or a sensor-geometry companion:
    :class:`hsi.products.sensor.CubeSide`)."""

    path: str

    def read(self, indexes: list[int], window: Window) -> np.ndarray: ...

    def close(self) -> None: ...


class _Side:
    """A COG read window by window under its own ``rasterio.Env`` (credentials for S3)."""

    def __init__(self, path: str, env: Any = None) -> None:
        self.path = path
        self.env = env if env is not None else rasterio.Env()
        self._ds: Any = None

    def read(self, indexes: list[int], window: Window) -> np.ndarray:
        with self.env:
            if self._ds is None:
                self._ds = rasterio.open(self.path)
            return np.asarray(self._ds.read(indexes, window=window))

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


def side_cog(path: str, env: Any = None) -> SideRaster:
    """A side COG (local path or ``/vsis3/...`` under ``env``) read window by window."""
    return _Side(path, env)


class ToaReflectance:
    """rho = L * factor_band / cos(theta_s); factor_band = pi d^2 u / E_sun,band."""

    def __init__(
        self,
        factor: Mapping[int, float],
        *,
        zenith_deg: float | None = None,
        zenith: tuple[SideRaster, int] | None = None,  # (observation geometry raster, 1-based band)
    ) -> None:
        if (zenith_deg is None) == (zenith is None):
            raise ValueError("give exactly one of zenith_deg and zenith")
        self.factor = dict(factor)
        self.zenith_deg = zenith_deg
        self._side = zenith[0] if zenith else None
        self._band = zenith[1] if zenith else 0

    def __call__(self, arr: np.ndarray, bands: Sequence[int], window: Window) -> None:
        f = np.array([self.factor[b] for b in bands], dtype=np.float64)[:, None, None]
        if self._side is None:
            mu: Any = np.cos(np.radians(float(self.zenith_deg or 0.0)))
        else:
            z = self._side.read([self._band], window)[0].astype(np.float64)
            if z.shape != arr.shape[1:]:
                raise ProductError(f"solar zenith raster {self._side.path} is not on the cube's grid")
            z[(z < 0) | (z >= 90)] = np.nan  # fill (-9999) and night
            mu = np.cos(np.radians(z))[None]
        arr[...] = (arr * f / mu).astype(arr.dtype)

    def close(self) -> None:
        if self._side is not None:
            self._side.close()


class MaskFlags:
    """NaN where any of ``flag_bands`` (1-based) of the mask raster is 1."""

    def __init__(self, side: SideRaster, flag_bands: Sequence[int]) -> None:
        self._side = side
        self.flag_bands = list(flag_bands)

    def __call__(self, arr: np.ndarray, bands: Sequence[int], window: Window) -> None:
        m = self._side.read(self.flag_bands, window)
        if m.shape[1:] != arr.shape[1:]:
            raise ProductError(f"mask raster {self._side.path} is not on the cube's grid")
        arr[:, (m == 1).any(axis=0)] = np.nan

    def close(self) -> None:
        self._side.close()
