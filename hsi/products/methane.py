"""Methane (CH4) enhancement by the classic matched filter, per cross-track column (``ch4-mf``).

Method
------
For each pixel spectrum ``x`` (radiance, bands of the 2100-2450 nm window) of detector column
``c`` with column mean ``mu_c`` and column covariance ``S_c``::

    alpha = (x - mu_c)^T C_c^-1 t_c / (t_c^T C_c^-1 t_c)        [ppm·m]
    t_c   = -mu_c * k                                            (target: Beer-Lambert, linearised)
    C_c   = (1 - shrinkage) S_c + shrinkage diag(S_c)             (shrinkage toward the diagonal)

``k`` is the CH4 *unit absorption spectrum* (per ppm·m) of the scene's bands: the MODTRAN radiance
table of mag1c (Foote et al. 2020, BSD-3, vendored as ``hsi/data/ch4_lut_mag1c.npz``, see
``hsi/data/README.md``) convolved with each band's Gaussian response (centre, FWHM), then ``-d ln L /
d c`` fitted by least squares over the table's seven concentrations (0-16 000 ppm·m) -- exactly
mag1c 1.2.0's ``generate_template_from_bands`` (whose template is ``-k * 1e5``). Column-wise
statistics follow AVIRIS-NG practice (Thompson et al. 2015, AMT 8:4383; Foote et al. 2020 IEEE TGRS
58:6480): each detector column has its own response, so its own mean and covariance. This is the
classic filter: no albedo correction, no sparsity, no non-negativity (alpha may be negative).

Streaming: pass 1 accumulates per-column count, sum and sum of outer products (float64) over
bounded windows; the filter of every column (``C_c^-1 t_c / (t_c^T C_c^-1 t_c)``) is then a
``(columns, bands)`` array. A plume inside the statistics suppresses itself (its signal enters the
mean and covariance: on a synthetic 400-row scene the peak came out 22 % low), so pass 2 (default,
``exclude_sigma``) accumulates the moments again without the pixels whose first-pass alpha is >=
``exclude_sigma`` x the column noise (a per-pixel rule, so the result does not depend on the
window size). Pass 3 applies the final filter window by window to label
plume candidates; the output pass applies it again and writes the COG (four reads of the window
bands in all; three with ``exclude_sigma: null``). Memory: ``columns x bands^2`` float64 (e.g. 648 x
70^2 x 8 B = 25 MB) plus one window -- flat in scene length.

Pixels used: every window band finite and > 0 (zero/negative radiance is fill or a dead pixel;
mag1c's ``--onlypositiveradiance``). Others are nodata and do not enter the statistics. A column
with fewer than ``bands + 2`` usable pixels uses the pooled statistics of all columns.

Plume mask (band 2)
-------------------
A pixel is a plume candidate when ``alpha >= threshold_ppm_m`` and ``alpha >= threshold_sigma x
sigma_c``, ``sigma_c = sqrt(f_c^T S_c f_c)`` being the filter's background noise in its column
(``f_c`` the column filter). Candidates are grouped into 8-connected components across the whole
scene (window labels joined by union-find along window borders); components of fewer than
``min_plume_pixels`` pixels are dropped. 1 = plume, 0 = no plume; nodata where alpha is nodata.

The input must be radiance (``hsi:quantity`` of the item / ``HSI_QUANTITY`` of the cube): the
product refuses reflectance. On an orthorectified grid the columns are grid columns, not detector
columns (set ``per_column: false`` to use scene-wide statistics there).
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from hsi.errors import ProductError
from hsi.products.base import (
    BandRange,
    ChunkReader,
    ComputeContext,
    OutputBand,
    OutputSpec,
    Params,
    Product,
)
from hsi.products.plumes import WindowedComponents

__all__ = [
    "MethaneParams",
    "MethaneState",
    "ch4_lut",
    "ch4_unit_absorption",
    "column_filters",
    "methane_product",
]

log = logging.getLogger(__name__)

PRODUCT_NAME = "ch4-mf"
WINDOW = "window"
LUT_FILE = "ch4_lut_mag1c.npz"
MAG1C_SCALING = 1e5  # mag1c's template and output scaling


# --------------------------------------------------------------------------- unit absorption
@functools.cache
def ch4_lut() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wavelengths nm (m,), radiance (7, m), concentrations ppm·m (7,)) of mag1c 1.2.0's ``ch4.lut``
    (wavelengths >= 1900 nm)."""
    raw = resources.files("hsi.data").joinpath(LUT_FILE).read_bytes()
    with np.load(io.BytesIO(raw)) as z:
        return z["wavelength_nm"], z["radiance"], z["concentration_ppm_m"]


def ch4_unit_absorption(
    centers: Sequence[float] | np.ndarray, fwhm: Sequence[float] | np.ndarray
) -> np.ndarray:
    """CH4 unit absorption ``k`` (per ppm·m, positive = absorbs) of bands with Gaussian responses.

    Same arithmetic as mag1c 1.2.0 ``generate_template_from_bands`` (which returns ``-k * 1e5``):
    each band's Gaussian response is normalised to sum 1 over the table's samples, the table radiance
    is resampled, and ``ln L`` is fitted linearly against concentration.
    """
    c = np.asarray(centers, dtype=np.float64)
    f = np.asarray(fwhm, dtype=np.float64)
    if c.shape != f.shape or c.ndim != 1:
        raise ValueError("centers and fwhm must be 1-D arrays of equal length")
    if not (np.isfinite(c).all() and np.isfinite(f).all() and (f > 0).all()):
        raise ValueError("band centres and FWHM must be finite and FWHM > 0")
    wave, rads, conc = ch4_lut()
    if c.min() - 2 * f.max() < wave[0] or c.max() + 2 * f.max() > wave[-1]:
        raise ValueError(
            f"bands {c.min():.1f}-{c.max():.1f} nm reach outside the CH4 table ({wave[0]:.0f}-{wave[-1]:.0f} nm)"
        )
    sigma = f / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    resampled = np.empty((rads.shape[0], c.size))
    for i in range(c.size):
        # samples within 11 sigma (the Gaussian beyond is < 1e-26 of its peak: counted as 0)
        lo, hi = np.searchsorted(wave, [c[i] - 11.0 * sigma[i], c[i] + 11.0 * sigma[i]])
        var = sigma[i] ** 2
        resp = np.exp(-((wave[lo:hi] - c[i]) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)
        resampled[:, i] = rads[:, lo:hi] @ (resp / resp.sum())
    lograd = np.log(resampled)
    design = np.stack((np.ones_like(conc), conc)).T
    slope = np.linalg.lstsq(design, lograd, rcond=None)[0][1]
    return np.asarray(-slope)


# ------------------------------------------------------------------------------------ params
class MethaneParams(Params):
    lo_nm: float = Field(2100.0, description="window start (nm): bands used by the filter")
    hi_nm: float = Field(2450.0, description="window end (nm)")
    shrinkage: float = Field(
        0.001, ge=0.0, le=1.0, description="covariance shrinkage toward its diagonal: C = (1-s) S + s diag(S)"
    )
    per_column: bool = Field(
        True, description="statistics per cross-track column (sensor geometry); false = one for the scene"
    )
    threshold_ppm_m: float = Field(500.0, ge=0.0, description="plume candidate: alpha >= this (ppm·m)")
    threshold_sigma: float = Field(
        3.0, ge=0.0, description="and alpha >= this x the filter's background noise of the pixel's column"
    )
    min_plume_pixels: int = Field(
        20, ge=1, description="8-connected candidate groups smaller than this are not plumes"
    )
    exclude_sigma: float | None = Field(
        3.0,
        gt=0.0,
        description="estimate mean/covariance again without pixels whose first-pass alpha >= this x "
        "the column noise (a plume inside the statistics suppresses itself; costs one more read of the "
        "window bands); null = single pass",
    )

    @model_validator(mode="after")
    def _order(self) -> MethaneParams:
        if self.hi_nm <= self.lo_nm:
            raise ValueError("hi_nm must be > lo_nm")
        return self


# ------------------------------------------------------------------------- column statistics
def _usable(x: np.ndarray) -> np.ndarray:
    """(h, w) True where every band is finite and > 0; ``x`` is (k, h, w)."""
    with np.errstate(invalid="ignore"):
        return np.all(np.isfinite(x) & (x > 0), axis=0)


class _ColumnMoments:
    """Per-column n, sum x, sum x x^T (float64), accumulated over windows."""

    def __init__(self, width: int, k: int) -> None:
        self.n = np.zeros(width, dtype=np.int64)
        self.s1 = np.zeros((width, k))
        self.s2 = np.zeros((width, k, k))

    def add(self, x: np.ndarray, col_off: int, exclude: np.ndarray | None = None) -> None:
        ok = _usable(x)
        if exclude is not None:
            ok &= ~exclude
        xs = np.where(ok[None], x, 0.0).astype(np.float64)  # (k, h, w)
        w = x.shape[2]
        sl = slice(col_off, col_off + w)
        self.n[sl] += ok.sum(axis=0)
        self.s1[sl] += xs.sum(axis=1).T
        xw = np.ascontiguousarray(xs.transpose(2, 1, 0))  # (w, h, k)
        self.s2[sl] += np.matmul(xw.transpose(0, 2, 1), xw)


def column_filters(
    n: np.ndarray, s1: np.ndarray, s2: np.ndarray, k_abs: np.ndarray, shrinkage: float, per_column: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Filters from column moments: ``(f (w, k), mu (w, k), sigma (w,), pooled (w,) bool)``.

    ``alpha = (x - mu_c) . f_c``; ``sigma_c = sqrt(f_c^T S_c f_c)`` is the background noise of alpha.
    Columns with fewer than ``k + 2`` usable pixels (or all, when ``per_column`` is false) use the
    pooled statistics. Covariance is the maximum-likelihood estimate (divide by n), as mag1c.
    """
    width, k = s1.shape
    ntot = int(n.sum())
    if ntot < k + 2:
        raise ProductError(
            f"product '{PRODUCT_NAME}' needs at least {k + 2} usable pixels (all {k} window bands finite "
            f"and > 0), the scene has {ntot}"
        )
    pooled = np.ones(width, dtype=bool) if not per_column else n < k + 2
    mu_all = s1.sum(axis=0) / ntot
    cov_all = s2.sum(axis=0) / ntot - np.outer(mu_all, mu_all)
    nn = np.maximum(n, 1).astype(np.float64)
    mu = s1 / nn[:, None]
    cov = s2 / nn[:, None, None] - np.einsum("wk,wl->wkl", mu, mu)
    mu[pooled] = mu_all
    cov[pooled] = cov_all
    diag = np.einsum("wkk->wk", cov)
    c_shr = (1.0 - shrinkage) * cov
    idx = np.arange(k)
    c_shr[:, idx, idx] += shrinkage * diag
    target = -mu * k_abs[None, :]  # (w, k)
    try:
        cit = np.linalg.solve(c_shr, target[..., None])[..., 0]  # C^-1 t
    except np.linalg.LinAlgError as exc:
        raise ProductError(
            f"product '{PRODUCT_NAME}': a column covariance is singular (constant or duplicated bands?); "
            f"raise 'shrinkage' (now {shrinkage})"
        ) from exc
    norm = np.einsum("wk,wk->w", target, cit)
    f = cit / norm[:, None]
    sigma = np.sqrt(np.maximum(np.einsum("wk,wkl,wl->w", f, cov, f), 0.0))
    return f, mu, sigma, pooled


# ------------------------------------------------------------------------------------- state
@dataclass
class MethaneState:
    k_abs: np.ndarray  # (k,) unit absorption per ppm·m
    f: np.ndarray  # (w, k) column filters
    mu: np.ndarray  # (w, k)
    sigma: np.ndarray  # (w,)
    pooled: np.ndarray  # (w,) bool
    n: np.ndarray  # (w,) usable pixels per column
    threshold: np.ndarray  # (w,) plume threshold per column (ppm·m)
    keep: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=bool))
    offsets: dict[tuple[int, int], int] = field(default_factory=dict)
    plumes: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    excluded: int = 0  # pixels left out of the background statistics (first-pass alpha >= exclude_sigma)

    def alpha(self, x: np.ndarray, col_off: int) -> np.ndarray:
        """(h, w) enhancement (ppm·m) of a window (k, h, w) starting at column ``col_off``."""
        w = x.shape[2]
        f = self.f[col_off : col_off + w]
        b = np.einsum("wk,wk->w", f, self.mu[col_off : col_off + w])
        a = np.einsum("khw,wk->hw", x.astype(np.float64), f, optimize=True) - b[None, :]
        a[~_usable(x)] = np.nan
        return a

    def summary(self, n: int) -> dict[str, Any]:
        used = self.n > 0
        return {
            "method": "classic matched filter per cross-track column",
            "units": "ppm m",
            "n_bands": int(self.k_abs.size),
            "columns": int(self.n.size),
            "columns_pooled": int(self.pooled[used].sum()),
            "background_pixels": int(self.n.sum()),
            "excluded_pixels": self.excluded,
            "noise_ppm_m_median": float(np.median(self.sigma[used])) if used.any() else None,
            "threshold_ppm_m_median": float(np.median(self.threshold[used])) if used.any() else None,
            "plumes": len(self.plumes),
            "plume_pixels": int(sum(p["pixels"] for p in self.plumes)),
            "largest_plumes": self.plumes[:5],
        }

    def details(self, n: int, ctx: ComputeContext) -> dict[str, Any]:
        sel = [s for s in ctx.selected if s.input == WINDOW]
        return {
            **self.summary(n),
            "parameters": self.params,
            "formula": "alpha = (x - mu_c) . C_c^-1 t_c / (t_c . C_c^-1 t_c), t_c = -mu_c * k, "
            "C_c = (1-s) S_c + s diag(S_c)",
            "absorption": "mag1c 1.2.0 ch4.lut (Foote et al. 2020, BSD-3), Gaussian band responses",
            "bands": [
                {"index": s.index, "wavelength_nm": s.wavelength, "fwhm_nm": s.fwhm, "k_per_ppm_m": float(k)}
                for s, k in zip(sel, self.k_abs, strict=True)
            ],
            "column_pixels": [int(v) for v in self.n],
            "column_noise_ppm_m": [float(v) for v in self.sigma],
            "column_pooled": [bool(v) for v in self.pooled],
            "plumes_all": self.plumes,
        }


def _col_off(window: Any) -> tuple[int, int]:
    return (0, 0) if window is None else (int(window.row_off), int(window.col_off))


def _fit(reader: ChunkReader, p: MethaneParams, ctx: ComputeContext) -> MethaneState:
    sel = [s for s in ctx.selected if s.input == WINDOW]
    missing = [s.index for s in sel if s.fwhm is None]
    if missing:
        raise ProductError(
            f"product '{PRODUCT_NAME}' needs each band's FWHM to convolve the CH4 absorption, but scene "
            f"'{ctx.scene_id}' has none for band(s) {missing[:8]}"
        )
    try:
        k_abs = ch4_unit_absorption([s.wavelength for s in sel], [float(s.fwhm or 0.0) for s in sel])
    except ValueError as exc:
        raise ProductError(f"product '{PRODUCT_NAME}' on scene '{ctx.scene_id}': {exc}") from exc
    grid = ctx.grid or {}
    width = int(grid.get("width") or max(int(w.col_off + w.width) for w in reader.windows))
    windows = reader.windows
    moments = _ColumnMoments(width, len(sel))
    for w, chunk in zip(windows, reader, strict=True):
        moments.add(chunk[WINDOW], int(w.col_off))
    f, mu, sigma, pooled = column_filters(moments.n, moments.s1, moments.s2, k_abs, p.shrinkage, p.per_column)
    thr = np.maximum(p.threshold_ppm_m, p.threshold_sigma * sigma)
    state = MethaneState(k_abs, f, mu, sigma, pooled, moments.n, thr, params=p.model_dump(mode="json"))
    excluded = 0
    if p.exclude_sigma is not None:  # statistics again without the first pass's likely plume pixels
        clean = _ColumnMoments(width, len(sel))
        ex_thr = p.exclude_sigma * sigma
        for w, chunk in zip(windows, reader, strict=True):
            c0 = int(w.col_off)
            a = state.alpha(chunk[WINDOW], c0)
            cand = _candidates(a, ex_thr[c0 : c0 + a.shape[1]])
            excluded += int(cand.sum())
            clean.add(chunk[WINDOW], c0, exclude=cand)
        f, mu, sigma, pooled = column_filters(clean.n, clean.s1, clean.s2, k_abs, p.shrinkage, p.per_column)
        thr = np.maximum(p.threshold_ppm_m, p.threshold_sigma * sigma)
        state = MethaneState(k_abs, f, mu, sigma, pooled, clean.n, thr, params=state.params)
    state.excluded = excluded
    comps = WindowedComponents(width)
    for w, chunk in zip(windows, reader, strict=True):
        r0, c0 = int(w.row_off), int(w.col_off)
        a = state.alpha(chunk[WINDOW], c0)
        comps.add(_candidates(a, thr[c0 : c0 + a.shape[1]]), a, r0, c0)
    state.keep, state.plumes = comps.resolve(p.min_plume_pixels)
    state.offsets = comps.offsets
    log.info(
        "ch4-mf on %s: %d bands, median noise %.0f ppm m, %d plume(s)",
        ctx.scene_id,
        len(sel),
        float(np.median(sigma[moments.n > 0])) if (moments.n > 0).any() else float("nan"),
        len(state.plumes),
    )
    return state


def _candidates(alpha: np.ndarray, thr_cols: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(alpha) & (alpha >= thr_cols[None, :])


def _compute(b: Mapping[str, np.ndarray], p: MethaneParams, ctx: ComputeContext) -> np.ndarray:
    st: MethaneState = ctx.state
    r0, c0 = _col_off(ctx.window)
    a = st.alpha(b[WINDOW], c0)
    lab, _ = WindowedComponents.label(_candidates(a, st.threshold[c0 : c0 + a.shape[1]]))
    base = st.offsets[(r0, c0)]
    gid = np.where(lab > 0, lab + base, 0)
    plume = st.keep[gid].astype(np.float32)
    plume[~np.isfinite(a)] = np.nan
    return np.stack([a.astype(np.float32), plume])


NOTES = (
    "CH4 enhancement above the scene background in ppm·m from RADIANCE (refuses reflectance). Classic "
    "matched filter per cross-track column: alpha = (x-mu)^T C^-1 t / (t^T C^-1 t), t = -mu*k, "
    "C = (1-shrinkage) S + shrinkage diag(S), over the good bands in lo_nm-hi_nm; k = CH4 unit "
    "absorption of the scene's bands from mag1c 1.2.0's table (Foote et al. 2020, BSD-3). No albedo "
    "correction: dark/bright surfaces scale alpha. Background mean/covariance are estimated again "
    "without pixels whose first-pass alpha >= exclude_sigma x column noise. Pixels with a window band <= 0 or non-finite are "
    "nodata and excluded from the statistics; columns with fewer than bands+2 usable pixels use "
    "scene-wide statistics. Plume mask: alpha >= threshold_ppm_m and >= threshold_sigma x the column's "
    "background noise, 8-connected groups of >= min_plume_pixels pixels. On orthorectified grids the "
    "columns are not detector columns (consider per_column=false)."
)


def methane_product() -> Product:
    return Product(
        name=PRODUCT_NAME,
        version="1.0.0",
        title="Methane enhancement (matched filter, per column), ppm·m, and plume mask",
        inputs=(BandRange(WINDOW, 2100.0, 2450.0, min_bands=5),),
        inputs_for=lambda p: (BandRange(WINDOW, p.lo_nm, p.hi_nm, min_bands=5),),
        output=OutputSpec(
            bands=(
                OutputBand("ch4_ppm_m", "CH4 enhancement above background (ppm·m), classic matched filter"),
                OutputBand("plume_mask", "1 = plume (threshold + minimum connected area), 0 = no plume"),
            ),
            classes={0: "no plume", 1: "plume"},
            class_band=1,
            colormap="inferno",
            class_colors={0: (40, 40, 40), 1: (250, 200, 30)},
            preview_band=0,
        ),
        compute=_compute,
        fit=_fit,
        params_model=MethaneParams,
        reference=(
            "Thompson et al. 2015, AMT 8:4383-4397; Foote et al. 2020, IEEE TGRS 58(9):6480-6492 "
            "(mag1c absorption table, BSD-3)"
        ),
        kind="spectral",
        notes=NOTES,
        requires_quantity="radiance",
        needs="radiance",  # a radiance algorithm: never given TOA reflectance (hsi.quantities)
    )
