"""Radiance -> top-of-atmosphere (TOA) reflectance.

    rho = pi * L * d^2 / (E_sun,band * cos(theta_s))

* ``L`` at-sensor radiance; AVIRIS and EMIT deliver uW cm-2 sr-1 nm-1, converted explicitly to
  W m-2 sr-1 nm-1 (x 0.01, :data:`UW_CM2_TO_W_M2`);
* ``E_sun,band`` (W m-2 nm-1): the ASTM G173-03 extraterrestrial spectrum shipped by pvlib
  (``pvlib.spectrum.get_reference_spectra``, 280-4000 nm) weighted by each band's Gaussian response
  (centre, FWHM) -- :func:`band_solar_irradiance`;
* ``d`` the Earth-Sun distance in AU for the acquisition date (pvlib, NREL SPA) --
  :func:`earth_sun_distance`;
* ``theta_s`` the solar zenith: per pixel from an observation-geometry file (EMIT OBS band 5,
  AVIRIS-NG ``_obs_ort`` band 5) where there is one, else the solar position at the scene time and
  centre (:func:`solar_zenith`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ESUN_SOURCE",
    "UW_CM2_TO_W_M2",
    "ToaConversion",
    "band_solar_irradiance",
    "earth_sun_distance",
    "radiance_units_factor",
    "solar_zenith",
    "toa_reflectance",
]

UW_CM2_TO_W_M2 = 0.01  # 1 uW cm-2 sr-1 nm-1 = 1e-6 W / 1e-4 m2 = 0.01 W m-2 sr-1 nm-1
ESUN_SOURCE = "ASTM G173-03 extraterrestrial spectrum (pvlib), Gaussian band response"
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

_UNITS = {
    "uw nm-1 cm-2 sr-1": UW_CM2_TO_W_M2,
    "uw cm-2 sr-1 nm-1": UW_CM2_TO_W_M2,
    "uw/cm^2/sr/nm": UW_CM2_TO_W_M2,
    "microwatts per square centimeter per steradian per nanometer": UW_CM2_TO_W_M2,
    "w m-2 sr-1 nm-1": 1.0,
    "w/m^2/sr/nm": 1.0,
}


def radiance_units_factor(units: str | None) -> float:
    """Factor to W m-2 sr-1 nm-1 for a radiance unit string; ValueError for unknown units."""
    if units is None:
        raise ValueError("radiance units unknown; TOA reflectance needs them (e.g. 'uW nm-1 cm-2 sr-1')")
    key = " ".join(units.strip().lower().replace("µ", "u").split())
    if key not in _UNITS:
        raise ValueError(f"radiance units {units!r} not understood; known: {', '.join(sorted(_UNITS))}")
    return _UNITS[key]


@lru_cache(maxsize=1)
def _astm_g173() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    from pvlib.spectrum import get_reference_spectra

    df = get_reference_spectra(standard="ASTM G173-03")
    return np.asarray(df.index, dtype=np.float64), np.asarray(df["extraterrestrial"], dtype=np.float64)


def band_solar_irradiance(
    wavelengths_nm: Sequence[float] | NDArray[Any], fwhm_nm: Sequence[float] | NDArray[Any]
) -> NDArray[np.float64]:
    """Band-averaged extraterrestrial irradiance (W m-2 nm-1) at 1 AU for Gaussian bands:
    int E(l) g(l) dl / int g(l) dl, trapezoid rule on the ASTM G173 grid within +-6 sigma."""
    lam, e = _astm_g173()
    out = np.empty(len(wavelengths_nm), dtype=np.float64)
    for i, (c, f) in enumerate(zip(wavelengths_nm, fwhm_nm, strict=True)):
        sigma = float(f) * _FWHM_TO_SIGMA
        sel = np.abs(lam - c) <= 6 * sigma
        if np.count_nonzero(sel) < 2:
            raise ValueError(f"band at {c} nm lies outside the ASTM G173 spectrum (280-4000 nm)")
        x = lam[sel]
        g = np.exp(-0.5 * ((x - c) / sigma) ** 2)
        out[i] = float(np.trapezoid(e[sel] * g, x) / np.trapezoid(g, x))
    return out


def earth_sun_distance(when: datetime) -> float:
    """Earth-Sun distance (AU) at ``when`` (NREL SPA through pvlib)."""
    import pandas as pd
    import pvlib

    return float(np.asarray(pvlib.solarposition.nrel_earthsun_distance(pd.DatetimeIndex([when])))[0])


def solar_zenith(when: datetime, lon: float, lat: float) -> float:
    """Solar zenith angle (degrees, no refraction) at ``when`` over (lon, lat) (pvlib SPA)."""
    import pandas as pd
    import pvlib

    pos = pvlib.solarposition.get_solarposition(pd.DatetimeIndex([when]), lat, lon)
    return float(pos["zenith"].iloc[0])


def toa_reflectance(
    radiance: NDArray[Any],
    esun: NDArray[Any],
    distance_au: float,
    zenith_deg: float | NDArray[Any],
    *,
    units_factor: float = UW_CM2_TO_W_M2,
) -> NDArray[np.float64]:
    """rho for radiance (bands, ...) with E_sun per band (W m-2 nm-1) and zenith scalar or (...)."""
    L = np.asarray(radiance, dtype=np.float64) * units_factor
    e = np.asarray(esun, dtype=np.float64).reshape((-1,) + (1,) * (L.ndim - 1))
    mu = np.cos(np.radians(np.asarray(zenith_deg, dtype=np.float64)))
    return math.pi * L * distance_au**2 / (e * mu)


@dataclass(frozen=True)
class ToaConversion:
    """A planned conversion, as recorded in provenance and the product key."""

    distance_au: float
    zenith: str  # "per-pixel: <asset> band <n>" or "scene: <deg> deg at <time>, (<lon>, <lat>)"
    zenith_deg: float | None  # scalar zenith when not per pixel
    units: str
    units_factor: float
    esun_source: str = ESUN_SOURCE

    def as_dict(self) -> dict[str, Any]:
        return {
            "quantity": "toa-reflectance",
            "formula": "pi * L * d^2 / (E_sun,band * cos(theta_s))",
            "esun": self.esun_source,
            "earth_sun_distance_au": round(self.distance_au, 8),
            "solar_zenith": self.zenith,
            "radiance_units": self.units,
            "units_to_W_m2_sr_nm": self.units_factor,
        }
