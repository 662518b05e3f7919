"""Plausible surface reflectance spectra (endmembers) and a smooth at-sensor illumination model.

Analytic, smooth models (Gaussian absorptions on sigmoid/linear continua) evaluated at any band
centres, so the same endmembers serve AVIRIS-NG (5 nm) and AVIRIS-Classic (10 nm, non-monotonic).
They carry the features products look for:

* healthy vegetation: chlorophyll absorption ~670 nm, red edge ~700-750 nm, NIR plateau ~0.5,
  liquid water absorptions at 970, 1200, 1450 and 1940 nm (NDVI ~0.9);
* stressed vegetation: less chlorophyll (higher red), blue-shifted red edge, lower NIR, less water;
* dead vegetation: no red edge, brown visible slope, little water, cellulose/lignin feature ~2100 nm;
* soil: monotonic brightening continuum with a clay/OH feature at ~2200 nm;
* water: dark, decreasing towards the NIR, ~0 in the SWIR;
* oil on water: low, flat VNIR; SWIR continuum with hydrocarbon absorptions at ~1730 and
  ~2310 nm (C-H overtones/combinations) and a weak one at ~1200 nm (Clark et al. 2010).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ENDMEMBERS",
    "at_sensor_radiance_factor",
    "dead_vegetation",
    "endmember_matrix",
    "healthy_vegetation",
    "oil_on_water",
    "soil",
    "stressed_vegetation",
    "water",
]

F = NDArray[np.float64]


def _g(wl: F, centre: float, width: float) -> F:
    return np.exp(-0.5 * ((wl - centre) / width) ** 2)


def _s(wl: F, centre: float, width: float) -> F:
    return 1.0 / (1.0 + np.exp(-(wl - centre) / width))


def _liquid_water(wl: F) -> F:
    """Relative liquid-water absorption (optical depth shape)."""
    return (
        0.10 * _g(wl, 970, 30)
        + 0.25 * _g(wl, 1200, 45)
        + 1.4 * _g(wl, 1450, 75)
        + 2.2 * _g(wl, 1940, 95)
        + 0.5 * _s(wl, 2450, 60)
    )


def _leaf(
    wl: F,
    *,
    green: float,
    red_floor: float,
    chl_depth: float,
    edge: float,
    nir: float,
    water: float,
    dry: float,
) -> F:
    vis = red_floor + green * _g(wl, 550, 35) - chl_depth * _g(wl, 675, 22)
    plateau = nir * _s(wl, edge, 12)
    swir = (1 - 0.35 * _s(wl, 1300, 80)) * (1 - 0.30 * _s(wl, 2000, 60))
    r = (vis + plateau) * swir * np.exp(-water * _liquid_water(wl))
    r *= 1 - dry * (0.6 * _g(wl, 2100, 45) + 0.25 * _g(wl, 2300, 35) + 0.2 * _g(wl, 1730, 25))
    return r


def healthy_vegetation(wl: ArrayLike) -> F:
    w = np.asarray(wl, dtype=np.float64)
    return _leaf(w, green=0.05, red_floor=0.035, chl_depth=0.012, edge=715, nir=0.47, water=1.0, dry=0.0)


def stressed_vegetation(wl: ArrayLike) -> F:
    w = np.asarray(wl, dtype=np.float64)
    return _leaf(w, green=0.05, red_floor=0.065, chl_depth=0.008, edge=705, nir=0.33, water=0.55, dry=0.15)


def dead_vegetation(wl: ArrayLike) -> F:
    w = np.asarray(wl, dtype=np.float64)
    vis = 0.05 + 0.20 * _s(w, 620, 70)  # brown slope, no chlorophyll well
    cont = vis + 0.10 * _s(w, 740, 40) + 0.08 * _s(w, 1200, 200)
    cont *= 1 - 0.12 * _s(w, 2250, 80)
    r = cont * np.exp(-0.15 * _liquid_water(w))
    r *= 1 - 0.30 * _g(w, 2100, 45) - 0.08 * _g(w, 1730, 25) - 0.10 * _g(w, 2300, 35)  # cellulose/lignin
    return r


def soil(wl: ArrayLike) -> F:
    w = np.asarray(wl, dtype=np.float64)
    cont = 0.08 + 0.24 * _s(w, 750, 220) + 0.06 * _s(w, 1500, 300) - 0.05 * _s(w, 2200, 120)
    r = cont * np.exp(-0.08 * _liquid_water(w))
    r *= 1 - 0.12 * _g(w, 2205, 25) - 0.04 * _g(w, 1415, 20)  # clay Al-OH, hydroxyl
    return r


def water(wl: ArrayLike) -> F:
    w = np.asarray(wl, dtype=np.float64)
    return 0.004 + 0.05 * (1 - _s(w, 600, 45)) + 0.012 * _g(w, 560, 40) + 0.004 * (1 - _s(w, 900, 40))


def oil_on_water(wl: ArrayLike) -> F:
    w = np.asarray(wl, dtype=np.float64)
    cont = 0.030 + 0.010 * (1 - _s(w, 600, 60)) + 0.045 * _s(w, 1000, 150) - 0.012 * _s(w, 2200, 100)
    r = cont * np.exp(-0.12 * _liquid_water(w))
    r *= 1 - 0.10 * _g(w, 1200, 18)  # weak C-H second overtone
    r *= 1 - 0.45 * _g(w, 1730, 14) - 0.15 * _g(w, 1762, 10)  # C-H first overtone
    r *= 1 - 0.45 * _g(w, 2310, 18) - 0.25 * _g(w, 2350, 15)  # C-H combination bands
    return r


#: Endmember name -> spectrum function, in the class order used by the synthetic generator.
ENDMEMBERS: dict[str, Callable[[ArrayLike], F]] = {
    "healthy_vegetation": healthy_vegetation,
    "stressed_vegetation": stressed_vegetation,
    "dead_vegetation": dead_vegetation,
    "soil": soil,
    "water": water,
    "oil_on_water": oil_on_water,
}


def endmember_matrix(wavelengths_nm: ArrayLike, names: Sequence[str] | None = None) -> NDArray[np.float32]:
    """``(n_endmembers, n_bands)`` reflectance matrix at the given centres (sensor order kept)."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    names = list(names or ENDMEMBERS)
    return np.stack([np.clip(ENDMEMBERS[n](wl), 0.0005, 1.0) for n in names]).astype(np.float32)


def at_sensor_radiance_factor(wavelengths_nm: ArrayLike, solar_zenith_deg: float = 35.0) -> tuple[F, F]:
    """``(gain, path)`` so that radiance = reflectance * gain + path, in uW nm-1 cm-2 sr-1.

    Smooth model: a 5778 K solar spectrum scaled to ~200 uW cm-2 nm-1 at 480 nm, two-way
    transmittance with Rayleigh scattering and the O2 (760 nm), H2O (940, 1140, 1380, 1870 nm)
    and CO2 (2010/2060 nm) absorptions, plus a small blue path radiance.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    um = wl / 1000.0
    h, c, k = 6.626e-34, 2.998e8, 1.381e-23
    planck = 1.0 / (um**5 * (np.exp(h * c / (um * 1e-6 * k * 5778.0)) - 1.0))
    ref = 1.0 / (0.48**5 * (np.exp(h * c / (0.48e-6 * k * 5778.0)) - 1.0))
    e_sun = 200.0 * planck / ref
    tau_r = 0.008569 * um**-4 * (1 + 0.0113 * um**-2)
    absorb = (
        0.5 * _g(wl, 760, 4)
        + 0.5 * _g(wl, 940, 25)
        + 0.45 * _g(wl, 1140, 30)
        + 0.97 * _g(wl, 1380, 45)
        + 0.97 * _g(wl, 1870, 60)
        + 0.3 * _g(wl, 2010, 12)
        + 0.3 * _g(wl, 2060, 12)
        + 0.6 * _s(wl, 2480, 20)
    )
    t = np.exp(-tau_r) * (1 - np.clip(absorb, 0, 0.995))
    mu = np.cos(np.radians(solar_zenith_deg))
    gain = e_sun * mu * t * t / np.pi
    path = e_sun * mu * (1 - np.exp(-tau_r)) * 0.08 / np.pi
    return gain, path
