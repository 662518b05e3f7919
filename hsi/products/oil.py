"""Oil-spill product: Hydrocarbon Index, continuum-removed band depths and an oil mask.

References
----------
* Kühn, F., Oppermann, K., Hörig, B. (2004) "Hydrocarbon Index – an algorithm for hyperspectral
  detection of hydrocarbons", Int. J. Remote Sens. 25(12): 2467–2473:
  ``HI = (λB − λA)·(RC − RA)/(λC − λA) + RA − RB`` with λA 1705, λB 1729, λC 1741 nm. The formula
  is evaluated with the *actual* centres of the selected bands (not the nominal ones).
* Clark, R.N. et al. (2010) "A method for quantitative mapping of thick oil spills using imaging
  spectroscopy", USGS Open-File Report 2010-1167: continuum-removed C–H absorptions near 1.73 and
  2.3 µm.

Band depths (linear continuum between two shoulder bands, evaluated at the actual centres):

* 1.73 µm: shoulders nearest 1660 and 1780 nm (± 15 nm), depth = max over good bands in
  1700–1760 nm of ``1 − R/Rc``;
* 2.3 µm: shoulders nearest 2230 and 2400 nm (± 15 nm), depth = max over good bands in
  2270–2370 nm of ``1 − R/Rc``.

Oil mask (band 4, 1 = oil, 0 = not oil): ``HI > hi_threshold`` and ``depth_1730 >=
depth_1730_threshold`` and the 1.73 µm continuum (mean of its two shoulders) ``>= min_continuum``
(dark water has no SWIR signal: its depths are noise), and ``depth_2300 >= depth_2300_threshold``
when that threshold is set. Version 1.1.0 raised the default depth threshold from 0.01 to 0.1
(lignin/cellulose of dry vegetation absorbs near 1.73 µm too, at depths below 0.1) and added
``min_continuum``.

Published band depths (version 1.2.0): a depth is only physical where its continuum carries signal
and the reflectance lies between 0 and the continuum, so each depth band is **nodata** where the
mean of its two shoulders is below ``min_continuum`` (dark water: the denominator is noise near
zero; values up to ~15 000 were published before) or where the depth lies outside [0, 1]
(< 0: no absorption, reflectance above its continuum; > 1: negative reflectance). The oil mask is
unchanged by this rule (such pixels are "no oil") and the HI (no denominator) is always published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from hsi.errors import BandSelectionError
from hsi.products.base import (
    BandRange,
    BandRequest,
    ComputeContext,
    OutputBand,
    OutputSpec,
    Params,
    Product,
    SelectedBand,
)

__all__ = ["OilSpillParams", "hydrocarbon_index", "linear_continuum_depth", "oil_spill_product"]

HI_WAVELENGTHS = (1705.0, 1729.0, 1741.0)
HI_TOLERANCE_NM = 10.0
SHOULDER_TOLERANCE_NM = 15.0
FEATURES = {  # name: (left shoulder, right shoulder, feature window lo, hi)
    "1730": (1660.0, 1780.0, 1700.0, 1760.0),
    "2300": (2230.0, 2400.0, 2270.0, 2370.0),
}


class OilSpillParams(Params):
    hi_threshold: float = Field(0.0, description="oil where HI > this (reflectance units)")
    depth_1730_threshold: float = Field(
        0.1, ge=0.0, description="and 1.73 µm band depth >= this (thick oil 0.1-0.5; lignin/cellulose < 0.1)"
    )
    min_continuum: float = Field(
        0.02,
        ge=0.0,
        description="and the 1.73 µm continuum (mean of its shoulders) >= this reflectance: "
        "dark open water has no usable SWIR signal, its band depths are noise",
    )
    depth_2300_threshold: float | None = Field(
        None, ge=0.0, description="and 2.3 µm band depth >= this (unused when null)"
    )


def hydrocarbon_index(
    ra: np.ndarray, rb: np.ndarray, rc: np.ndarray, la: float, lb: float, lc: float
) -> np.ndarray:
    """Kühn et al. (2004) HI with the given band centres (nm)."""
    return (lb - la) * (rc - ra) / (lc - la) + ra - rb


def linear_continuum_depth(
    left: np.ndarray,
    right: np.ndarray,
    feature: np.ndarray,
    l_left: float,
    l_right: float,
    l_feature: np.ndarray,
) -> np.ndarray:
    """max_i (1 − R_i / Rc_i), Rc linear between the shoulders; ``feature`` is (n, h, w)."""
    t = ((np.asarray(l_feature, dtype=np.float64) - l_left) / (l_right - l_left)).astype(np.float32)
    t = t.reshape((-1,) + (1,) * (feature.ndim - 1))
    cont = left[None] + (right - left)[None] * t
    return np.max(1.0 - feature / cont, axis=0)


def _compute(b: Mapping[str, np.ndarray], p: OilSpillParams, ctx: ComputeContext) -> np.ndarray:
    w = ctx.wavelengths
    with np.errstate(all="ignore"):
        hi = hydrocarbon_index(b["A"], b["B"], b["C"], float(w["A"]), float(w["B"]), float(w["C"]))
        depths = {}
        for f in FEATURES:
            depths[f] = linear_continuum_depth(
                b[f"L{f}"], b[f"R{f}"], b[f"F{f}"], float(w[f"L{f}"]), float(w[f"R{f}"]), w[f"F{f}"]
            )
        continuum = 0.5 * (b["L1730"] + b["R1730"])
        mask = (
            (hi > p.hi_threshold)
            & (depths["1730"] >= p.depth_1730_threshold)
            & (continuum >= p.min_continuum)
        )
        if p.depth_2300_threshold is not None:
            mask &= depths["2300"] >= p.depth_2300_threshold
        published = {}
        for f, d in depths.items():
            cont = 0.5 * (b[f"L{f}"] + b[f"R{f}"])
            ok = (cont >= p.min_continuum) & (d >= 0.0) & (d <= 1.0)
            published[f] = np.where(ok, d, np.nan)
    valid = np.isfinite(hi)
    mask_out = np.where(valid, mask.astype(np.float32), np.nan)
    out = np.stack([hi, published["1730"], published["2300"], mask_out]).astype(np.float32)
    return out


def _check(selected: Sequence[SelectedBand], scene_id: str) -> None:
    by = {s.input: s.wavelength for s in selected}
    if not by["A"] < by["B"] < by["C"]:
        raise BandSelectionError(
            f"product 'oil-spill' needs three distinct bands near 1705/1729/1741 nm for the "
            f"Hydrocarbon Index, but scene '{scene_id}' resolves them to "
            f"{by['A']:.1f}/{by['B']:.1f}/{by['C']:.1f} nm (spectral sampling too coarse)"
        )


def oil_spill_product() -> Product:
    inputs: list[Any] = [
        BandRequest(n, wl, HI_TOLERANCE_NM) for n, wl in zip("ABC", HI_WAVELENGTHS, strict=True)
    ]
    for f, (ls, rs, lo, hi) in FEATURES.items():
        inputs += [
            BandRequest(f"L{f}", ls, SHOULDER_TOLERANCE_NM),
            BandRequest(f"R{f}", rs, SHOULDER_TOLERANCE_NM),
            BandRange(f"F{f}", lo, hi),
        ]
    return Product(
        name="oil-spill",
        version="1.2.0",
        title="Oil spill: Hydrocarbon Index, C-H band depths, mask",
        inputs=tuple(inputs),
        output=OutputSpec(
            bands=(
                OutputBand("HI", "Hydrocarbon Index (Kühn et al. 2004), 1705/1729/1741 nm"),
                OutputBand("depth_1730", "continuum-removed band depth 1.73 µm (1660-1780 nm continuum)"),
                OutputBand("depth_2300", "continuum-removed band depth 2.3 µm (2230-2400 nm continuum)"),
                OutputBand("oil_mask", "1 = oil (HI and depth thresholds), 0 = no oil"),
            ),
            classes={0: "no oil", 1: "oil"},
            class_band=3,
            colormap="inferno",
            class_colors={0: (30, 60, 120), 1: (250, 80, 20)},
        ),
        compute=_compute,
        params_model=OilSpillParams,
        check_selection=_check,
        reference="Kühn, Oppermann & Hörig 2004, IJRS 25(12); Clark et al. 2010, USGS OFR 2010-1167",
        kind="classifier",
        notes=(
            "Depth bands are nodata where the continuum (mean of the two shoulders) < min_continuum "
            "(denominator near zero, e.g. dark water) or the depth lies outside [0, 1] (< 0: no "
            "absorption; > 1: negative reflectance), so their statistics describe real absorptions. "
            "The oil mask is 0 at such pixels; HI is always published."
        ),
    )
