"""Band selection: map a product's spectral inputs onto a scene's band table.

Rules (sensor-agnostic, robust to non-monotonic wavelength lists such as AVIRIS-Classic's
overlapping spectrometers):

* :class:`~hsi.products.base.BandRequest`: the GOOD band with ``argmin |λ_band − λ_req|``
  (ties -> lower band index). Accepted when ``|Δλ| <= tolerance``; never ``searchsorted``.
* :class:`~hsi.products.base.BandRange`: every GOOD band with centre in ``[lo, hi]``, sorted by
  wavelength (then index), at least ``min_bands``.
* :class:`~hsi.products.base.AllGoodBands`: every GOOD band with a wavelength, sorted likewise.

Bad bands (``GOOD_BAND=0``) and bands without a wavelength are never selected. Failures raise
:class:`~hsi.errors.BandSelectionError` naming product, wavelength(s) and scene.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from hsi.errors import BandSelectionError
from hsi.products.base import AllGoodBands, BandRange, BandRequest, Product, SelectedBand
from hsi.scene import BandInfo, nearest_good_band

__all__ = ["select_bands", "nearest_good_band", "wavelength_map"]

log = logging.getLogger(__name__)


def _arrays(bands: Sequence[BandInfo]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = np.array([b.index for b in bands], dtype=np.int64)
    wl = np.array(
        [np.nan if b.center_wavelength is None else b.center_wavelength for b in bands], dtype=np.float64
    )
    good = np.array([b.good for b in bands], dtype=bool) & np.isfinite(wl)
    return idx, wl, good


def _request(product: Product, req: BandRequest, bands: Sequence[BandInfo], scene_id: str) -> SelectedBand:
    found = nearest_good_band(bands, req.wavelength)
    if found is not None and found[1] <= req.tolerance:
        b = found[0]
        return SelectedBand(req.name, b.index, float(b.center_wavelength or 0.0), req.wavelength, b.fwhm)
    _, wl, good = _arrays(bands)
    bad_near = (
        np.isfinite(wl) & ~good & (np.abs(np.nan_to_num(wl, nan=1e12) - req.wavelength) <= req.tolerance)
    )
    if bad_near.any():
        why = "only bad bands (GOOD_BAND=0) lie within the tolerance"
    elif found is None:
        why = "the scene has no good band with a wavelength"
    else:
        why = (
            f"nearest good band is b{found[0].index:03d} at {found[0].center_wavelength:.1f} nm "
            f"({found[1]:.1f} nm away)"
        )
    wl_ok = wl[good]
    cover = f"{wl_ok.min():.0f}-{wl_ok.max():.0f} nm" if wl_ok.size else "none"
    raise BandSelectionError(
        f"product '{product.name}' needs input '{req.name}' at {req.wavelength:g} nm "
        f"(± {req.tolerance:g} nm) but scene '{scene_id}' cannot supply it: {why}; "
        f"good-band coverage {cover}"
    )


def _many(
    product: Product, spec: BandRange | AllGoodBands, bands: Sequence[BandInfo], scene_id: str
) -> list[SelectedBand]:
    idx, wl, good = _arrays(bands)
    fw = {b.index: b.fwhm for b in bands}
    sel = good.copy()
    if isinstance(spec, BandRange):
        sel &= (wl >= spec.lo) & (wl <= spec.hi)
    order = np.lexsort((idx[sel], wl[sel]))
    chosen = [
        SelectedBand(spec.name, int(i), float(w), fwhm=fw[int(i)])
        for i, w in zip(idx[sel][order], wl[sel][order], strict=True)
    ]
    if len(chosen) < spec.min_bands:
        what = (
            f"at least {spec.min_bands} good band(s) in {spec.lo:g}-{spec.hi:g} nm"
            if isinstance(spec, BandRange)
            else f"at least {spec.min_bands} good bands"
        )
        raise BandSelectionError(
            f"product '{product.name}' needs input '{spec.name}': {what}, but scene '{scene_id}' "
            f"has {len(chosen)}"
        )
    return chosen


def select_bands(
    product: Product, bands: Sequence[BandInfo], scene_id: str, params: object = None
) -> list[SelectedBand]:
    """Select the scene bands for every input of ``product`` (in input order).

    ``params`` (validated) matters only for products whose inputs depend on parameters.
    """
    out: list[SelectedBand] = []
    for spec in product.input_specs(params):
        if isinstance(spec, BandRequest):
            out.append(_request(product, spec, bands, scene_id))
        else:
            out.extend(_many(product, spec, bands, scene_id))
    if product.check_selection is not None:
        product.check_selection(out, scene_id)
    log.debug(
        "product %s on %s: selected %s",
        product.name,
        scene_id,
        [(s.input, s.index, s.wavelength) for s in out],
    )
    return out


def wavelength_map(
    product: Product, selected: Sequence[SelectedBand], params: object = None
) -> dict[str, object]:
    """Input name -> actual centre (float) for single bands, or ndarray of centres for stacks."""
    out: dict[str, object] = {}
    for spec in product.input_specs(params):
        ws = [s.wavelength for s in selected if s.input == spec.name]
        out[spec.name] = ws[0] if isinstance(spec, BandRequest) else np.asarray(ws, dtype=np.float64)
    return out
