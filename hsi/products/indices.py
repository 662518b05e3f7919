"""Spectral indices: every usable Awesome Spectral Indices formula, plus narrow-band indices.

References
----------
* Montero, D. et al. (2023) "A standardized catalogue of spectral indices to advance the use of
  remote sensing in Earth system research", Scientific Data 10, 197 -- the Awesome Spectral
  Indices list, from ``spyndex``'s catalogue: each formula is evaluated on the window's bands the way
  ``spyndex.computeIndex`` evaluates it (``eval`` of the catalogue's formula over the band and
  constant values), compiled once per product; the tests check every index against
  ``spyndex.computeIndex`` itself.
* Gao, B.-C. (1996) NDWI, Remote Sens. Environ. 58: ``(R860 − R1240)/(R860 + R1240)``.
* Gamon, J.A., Peñuelas, J., Field, C.B. (1992) PRI: ``(R531 − R570)/(R531 + R570)``: the sign
  convention of Gamon et al. (1992) (xanthophyll de-epoxidation under excess light lowers R531, so
  PRI *decreases* with stress); some later papers use ``(R570 − R531)/(R570 + R531)``, the negative.
* Guyot, G., Baret, F. (1988) REIP, linear four-point interpolation:
  ``REIP = λ700 + (λ740 − λ700)·((R670 + R780)/2 − R700)/(R740 − R700)`` (actual band centres).
  Published only inside the red-edge window 680–750 nm (:data:`REIP_WINDOW_NM`); outside it (dark
  water, bare soil, noise over a near-zero ``R740 − R700``) the pixel is nodata.
* Nagler, P.L. et al. (2000) Cellulose Absorption Index: ``CAI = 0.5(R2000 + R2200) − R2100``.
* Peñuelas, J. et al. (1997) Water Band Index: ``WBI = R900/R970``.
* Merzlyak, M.N. et al. (1999) PSRI, narrow-band: ``PSRI_NB = (R680 − R500)/R750``.
* Gamon, J.A., Surfus, J.S. (1999) red/green ratio, narrow-band:
  ``RGRI_NB = mean(R over good bands in 600–699 nm) / mean(R over good bands in 500–599 nm)``.

Band mapping for spyndex indices (``index:<NAME>``): each spyndex band symbol has a
``[min_wavelength, max_wavelength]`` window; it maps to the good scene band nearest the window
centre, accepted within half the window width (so the chosen band lies inside the window).
Thermal bands (T, T1, T2), radar, kernel (``k*``) indices and indices needing a constant without a
default (``PAR``) are not exposed. Constants with spyndex defaults become parameters (e.g. ``L`` of
SAVI), with the project's overrides of spyndex's shared defaults in :data:`CONSTANT_OVERRIDES`
(SAVI's ``L`` = 0.5, Huete 1988, instead of spyndex's 1.0, which is EVI's ``L``); wavelength constants ``lambdaX`` are set to the actual centre of the band selected for
``X`` (or to the spyndex window centre when ``X`` itself is not an input of the index).
``PSRI`` and ``RGRI`` of spyndex are the broadband forms; the narrow-band forms are
``index:PSRI_NB`` / ``index:RGRI_NB``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from pydantic import Field, create_model

from hsi.errors import ProductError
from hsi.products.base import (
    BandRange,
    BandRequest,
    ComputeContext,
    NoParams,
    OutputBand,
    OutputSpec,
    Params,
    Product,
)

__all__ = ["NARROW_BAND_TOLERANCE_NM", "narrow_band_products", "spyndex_index_names", "spyndex_product"]

log = logging.getLogger(__name__)

NARROW_BAND_TOLERANCE_NM = 10.0
MAX_OPTICAL_NM = 2600.0
INDEX_VERSION = "1.0.0"
REIP_WINDOW_NM = (680.0, 750.0)
#: (index, constant) -> (default, why): where the project departs from spyndex's shared defaults.
CONSTANT_OVERRIDES: dict[tuple[str, str], tuple[float, str]] = {
    ("SAVI", "L"): (
        0.5,
        "Huete (1988) recommends 0.5 for intermediate vegetation densities; spyndex's shared default "
        "1.0 is EVI's canopy background term",
    ),
}


@functools.cache
def _catalogue() -> SimpleNamespace:
    """spyndex's own index, band and constant tables, read from its data files without importing it.

    Importing spyndex costs about 0.25 s (requests, python-box); listing products, suggesting
    names and building a product's metadata need only these tables, and a product evaluates the
    catalogue's formula itself (compiled once), so a run pays neither the import nor spyndex's
    per-call parameter checks.
    ``tests/unit/test_indices.py`` checks the tables against ``spyndex.indices/bands/constants``.
    """
    spec = importlib.util.find_spec("spyndex")
    if spec is None or not spec.submodule_search_locations:
        raise ProductError("spyndex is not installed; reinstall hsi-pipeline")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"

    def table(name: str) -> dict[str, SimpleNamespace]:
        return {k: SimpleNamespace(**v) for k, v in json.loads((data / name).read_text()).items()}

    indices = json.loads((data / "spectral-indices-dict.json").read_text())["SpectralIndices"]
    return SimpleNamespace(
        # spyndex.axioms.SpectralIndex drops the formula's spaces; keep the same text
        indices={
            k: SimpleNamespace(**{**v, "formula": v["formula"].replace(" ", "")}) for k, v in indices.items()
        },
        bands=table("bands.json"),
        constants=table("constants.json"),
        version=importlib.metadata.version("spyndex"),
    )


def _band_window(symbol: str) -> tuple[float, float] | None:
    sx = _catalogue()
    b = sx.bands.get(symbol) if symbol in sx.bands else None
    if b is None or b.max_wavelength > MAX_OPTICAL_NM:
        return None
    return float(b.min_wavelength), float(b.max_wavelength)


def _usable(name: str) -> bool:
    sx = _catalogue()
    idx = sx.indices[name]
    if idx.application_domain in ("radar", "kernel"):
        return False
    for sym in idx.bands:
        if sym in sx.bands:
            if _band_window(sym) is None:
                return False
        elif sym.startswith("lambda"):
            if _band_window(sym[len("lambda") :]) is None:
                return False
        elif sym in sx.constants:
            if sx.constants[sym].default is None:
                return False
        else:  # radar polarisations, kernel terms ...
            return False
    return True


@functools.cache
def spyndex_index_names() -> tuple[str, ...]:
    """spyndex indices a VNIR–SWIR imaging spectrometer can supply."""
    return tuple(sorted(n for n in _catalogue().indices if _usable(n)))


def _resolve_name(name: str) -> str | None:
    names = spyndex_index_names()
    if name in names:
        return name
    lower = {n.lower(): n for n in names}
    return lower.get(name.lower())


def spyndex_product(name: str) -> Product | None:
    """The product ``index:<name>`` for a spyndex index, or None if not exposed."""
    real = _resolve_name(name)
    if real is None:
        return None
    return _build_spyndex_product(real)


@functools.cache
def _build_spyndex_product(name: str) -> Product:
    sx = _catalogue()
    idx = sx.indices[name]
    inputs = []
    consts: dict[str, Any] = {}
    lambdas: list[str] = []
    notes: list[str] = []
    for sym in idx.bands:
        if sym in sx.bands:
            lo, hi = _band_window(sym)  # type: ignore[misc]
            inputs.append(BandRequest(sym, (lo + hi) / 2.0, (hi - lo) / 2.0))
        elif sym.startswith("lambda"):
            lambdas.append(sym)
        else:
            c = sx.constants[sym]
            default, why = CONSTANT_OVERRIDES.get((name, sym), (float(c.default), ""))
            desc = f"{c.description}" + (f" (default {default:g}: {why})" if why else "")
            consts[sym] = (float, Field(default=default, description=desc))
            if why:
                notes.append(f"{sym} = {default:g} by default: {why}.")
    model: type[Params] = NoParams
    if consts:
        model = create_model(f"{name}Params", __base__=Params, **consts)

    formula = compile(idx.formula, f"<spyndex {name}>", "eval")  # what spyndex.computeIndex evaluates

    def compute(bands: Mapping[str, np.ndarray], params: Any, ctx: ComputeContext) -> np.ndarray:
        values: dict[str, Any] = {k: bands[k] for k in bands}
        values.update(params.model_dump())
        for lam in lambdas:
            sym = lam[len("lambda") :]
            if sym in ctx.wavelengths:
                values[lam] = float(ctx.wavelengths[sym])
            else:
                lo, hi = _band_window(sym)  # type: ignore[misc]
                values[lam] = (lo + hi) / 2.0
        with np.errstate(all="ignore"):
            out = eval(formula, {"__builtins__": {}}, values)  # noqa: S307 - the catalogue's formula
        out = np.asarray(out, dtype=np.float32)
        if out.ndim == 0:  # formula without any band term is impossible, but be safe
            out = np.full(next(iter(bands.values())).shape, out, dtype=np.float32)
        return out[np.newaxis]

    return Product(
        name=f"index:{name}",
        version=f"{INDEX_VERSION}+spyndex.{sx.version}",
        title=idx.long_name,
        inputs=tuple(inputs),
        output=OutputSpec(bands=(OutputBand(name, f"{idx.long_name}: {idx.formula}"),)),
        compute=compute,
        params_model=model,
        reference=f"{idx.reference} (Awesome Spectral Indices via spyndex {sx.version})",
        kind="index",
        extra={"formula": idx.formula, "application_domain": idx.application_domain},
        notes=" ".join(notes),
    )


# --- narrow-band indices spyndex lacks ---------------------------------------------------------
def _req(name: str, wl: float) -> BandRequest:
    return BandRequest(name, wl, NARROW_BAND_TOLERANCE_NM)


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / (a + b)


def _ndwi_gao(b: Mapping[str, np.ndarray], p: Any, ctx: ComputeContext) -> np.ndarray:
    return _nd(b["R860"], b["R1240"])[None]


def _pri(b: Mapping[str, np.ndarray], p: Any, ctx: ComputeContext) -> np.ndarray:
    return _nd(b["R531"], b["R570"])[None]


def _reip(b: Mapping[str, np.ndarray], p: Any, ctx: ComputeContext) -> np.ndarray:
    l700, l740 = float(ctx.wavelengths["R700"]), float(ctx.wavelengths["R740"])
    r_edge = (b["R670"] + b["R780"]) / 2.0
    reip = l700 + (l740 - l700) * (r_edge - b["R700"]) / (b["R740"] - b["R700"])
    lo, hi = REIP_WINDOW_NM
    with np.errstate(invalid="ignore"):
        return np.where((reip >= lo) & (reip <= hi), reip, np.nan)[None]


def _cai(b: Mapping[str, np.ndarray], p: Any, ctx: ComputeContext) -> np.ndarray:
    return (0.5 * (b["R2000"] + b["R2200"]) - b["R2100"])[None]


def _wbi(b: Mapping[str, np.ndarray], p: Any, ctx: ComputeContext) -> np.ndarray:
    return (b["R900"] / b["R970"])[None]


def _psri(b: Mapping[str, np.ndarray], p: Any, ctx: ComputeContext) -> np.ndarray:
    return ((b["R680"] - b["R500"]) / b["R750"])[None]


def _rgri(b: Mapping[str, np.ndarray], p: Any, ctx: ComputeContext) -> np.ndarray:
    return (b["red"].mean(axis=0) / b["green"].mean(axis=0))[None]


def _nb(
    name: str,
    title: str,
    wls: tuple[float, ...],
    fn: Any,
    formula: str,
    ref: str,
    inputs: tuple[Any, ...] | None = None,
    *,
    version: str = "1.0.0",
    notes: str = "",
) -> Product:
    return Product(
        name=f"index:{name}",
        version=version,
        title=title,
        inputs=inputs if inputs is not None else tuple(_req(f"R{w:g}", w) for w in wls),
        output=OutputSpec(bands=(OutputBand(name, f"{title}: {formula}"),)),
        compute=fn,
        params_model=NoParams,
        reference=ref,
        kind="index",
        extra={"formula": formula},
        notes=notes,
    )


def narrow_band_products() -> list[Product]:
    """Narrow-band hyperspectral indices (see module docstring for formulas and references)."""
    return [
        _nb(
            "NDWI_GAO",
            "Normalized Difference Water Index (Gao 1996)",
            (860, 1240),
            _ndwi_gao,
            "(R860-R1240)/(R860+R1240)",
            "Gao 1996, Remote Sens. Environ. 58:257-266",
        ),
        _nb(
            "PRI",
            "Photochemical Reflectance Index",
            (531, 570),
            _pri,
            "(R531-R570)/(R531+R570)",
            "Gamon, Peñuelas & Field 1992, Remote Sens. Environ. 41:35-44",
            notes=(
                "Sign convention of Gamon, Peñuelas & Field (1992): PRI = (R531-R570)/(R531+R570), "
                "decreasing under light stress (xanthophyll de-epoxidation lowers R531). Some later "
                "papers use (R570-R531)/(R570+R531), the negative of this value."
            ),
        ),
        _nb(
            "REIP",
            "Red-Edge Inflection Point (linear 4-point), nm",
            (670, 700, 740, 780),
            _reip,
            "λ700+(λ740-λ700)*((R670+R780)/2-R700)/(R740-R700)",
            "Guyot & Baret 1988, Proc. 4th Int. Coll. Spectral Signatures, ESA SP-287",
            version="1.1.0",
            notes=(
                "Nodata outside the red-edge window 680-750 nm: there the linear interpolation has no "
                "red edge to find (water, soil, shade; R740-R700 near zero gave values from -45836 to "
                "15312 nm). Statistics describe vegetated pixels only."
            ),
        ),
        _nb(
            "CAI",
            "Cellulose Absorption Index",
            (2000, 2100, 2200),
            _cai,
            "0.5*(R2000+R2200)-R2100",
            "Nagler et al. 2000, Remote Sens. Environ. 71:207-215",
        ),
        _nb(
            "WBI",
            "Water Band Index",
            (900, 970),
            _wbi,
            "R900/R970",
            "Peñuelas et al. 1997, Int. J. Remote Sens. 18:2869-2875",
        ),
        _nb(
            "PSRI_NB",
            "Plant Senescence Reflectance Index (narrow-band)",
            (500, 680, 750),
            _psri,
            "(R680-R500)/R750",
            "Merzlyak et al. 1999, Physiol. Plant. 106:135-141",
        ),
        _nb(
            "RGRI_NB",
            "Red/Green Ratio Index (narrow-band window means)",
            (),
            _rgri,
            "mean(R600..699)/mean(R500..599)",
            "Gamon & Surfus 1999, New Phytol. 143:105-117",
            inputs=(BandRange("red", 600.0, 699.999), BandRange("green", 500.0, 599.999)),
        ),
    ]
