"""Default bad-band windows (atmospheric water vapour, the instrument's usable range), applied when a
scene says nothing about band quality (an ENVI header without ``bbl``, EMIT without ``good_wavelengths``)."""

from __future__ import annotations

import math

__all__ = ["DEFAULT_BAD_WINDOWS_NM", "is_bad_default"]


def _load_bad_windows() -> tuple[tuple[float, float], ...]:
    import json
    from importlib import resources

    try:
        raw = json.loads(resources.files("hsi.data").joinpath("bad_band_windows.json").read_text())
        return tuple(
            (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))
            for lo, hi in raw["windows_nm"]
        )
    except (OSError, KeyError, ValueError, ModuleNotFoundError):  # pragma: no cover - packaging fallback
        return ((-math.inf, 400.0), (1340.0, 1445.0), (1790.0, 1955.0), (2450.0, math.inf))


#: Applied when a header has no ``bbl``: < 400, 1340-1445, 1790-1955, > 2450 nm (HSI-NOTES).
DEFAULT_BAD_WINDOWS_NM: tuple[tuple[float, float], ...] = _load_bad_windows()


def is_bad_default(wavelength_nm: float | None, fwhm_nm: float | None = None) -> bool:
    """True when a band falls in a default bad window.

    The closed (water-vapour) windows are tested against the band's *extent*, centre ± FWHM/2: a
    band whose response reaches into 1340-1445 or 1790-1955 nm is bad even when its centre lies just
    outside. The open ends (< 400, > 2450 nm: the instrument's usable range) test the centre only.
    Without a FWHM the extent is the centre.
    """
    if wavelength_nm is None:
        return False
    half = 0.5 * fwhm_nm if fwhm_nm is not None and math.isfinite(fwhm_nm) and fwhm_nm > 0 else 0.0
    for lo, hi in DEFAULT_BAD_WINDOWS_NM:
        if math.isinf(lo) and wavelength_nm < hi:
            return True
        if math.isinf(hi) and wavelength_nm > lo:
            return True
        if (
            not math.isinf(lo)
            and not math.isinf(hi)
            and wavelength_nm - half <= hi
            and wavelength_nm + half >= lo
        ):
            return True
    return False
