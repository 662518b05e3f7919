"""Full-spectrum methods: spectral angle mapper, out-of-core PCA, continuum removal.

References
----------
* Kruse, F.A. et al. (1993) "The spectral image processing system (SIPS) -- interactive
  visualization and analysis of imaging spectrometer data", Remote Sens. Environ. 44: 145–163
  (SAM: ``θ = arccos(x·r / (|x||r|))``).
* Jolliffe, I.T. (2002) Principal Component Analysis, 2nd ed. Covariance is the unbiased estimate
  (N − 1), accumulated in one streaming pass over windows (float64, shifted by the first chunk's
  mean for numerical stability); projection ``(x − mean)·V`` in a second pass.
* Clark, R.N., Roush, T.L. (1984) J. Geophys. Res. 89: 6329–6340 (continuum = upper convex hull
  of the spectrum; continuum removed = R / continuum).

All three operate on the good bands sorted by wavelength. They match Spectral Python
(``spectral.spectral_angles``, ``spectral.principal_components``,
``spectral.remove_continuum``), which the tests use as the independent reference.

SAM references come from a CSV file: first column ``wavelength_nm``, then one column per class
(class name in the header, empty cells allowed). Each scene band takes the *nearest* reference
sample of each class (no interpolation); a band whose nearest sample is farther than
``max_distance_nm`` for any class is left out of the angle (gaps are never bridged).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from hsi.errors import ProductError
from hsi.products.base import (
    ALL_GOOD_BANDS,
    BandRange,
    ChunkReader,
    ComputeContext,
    OutputBand,
    OutputSpec,
    Params,
    Product,
)

__all__ = [
    "PCAState",
    "continuum",
    "continuum_depth_product",
    "load_reference_csv",
    "pca_product",
    "remove_continuum",
    "resample_nearest",
    "sam_product",
    "spectral_angles",
]

log = logging.getLogger(__name__)


# --- continuum removal (vectorised upper convex hull, Andrew's monotone chain) ---------------
def continuum(spectra: np.ndarray, wavelengths: np.ndarray) -> np.ndarray:
    """Upper convex hull continuum of ``spectra`` (..., n) over increasing ``wavelengths`` (n,)."""
    x = np.asarray(wavelengths, dtype=np.float64)
    if np.any(np.diff(x) <= 0):
        raise ValueError("wavelengths must be strictly increasing (sort the bands first)")
    shape = spectra.shape
    y = np.asarray(spectra, dtype=np.float64).reshape(-1, shape[-1])
    p, n = y.shape
    rows = np.arange(p)
    stack = np.zeros((p, n), dtype=np.int64)
    sp = np.zeros(p, dtype=np.int64)
    for i in range(n):
        while True:
            r = rows[sp >= 2]
            if r.size == 0:
                break
            a, b = stack[r, sp[r] - 2], stack[r, sp[r] - 1]
            cross = (x[b] - x[a]) * (y[r, i] - y[r, a]) - (y[r, b] - y[r, a]) * (x[i] - x[a])
            pop = ~(cross < 0)  # b not strictly above the chord a->i (NaN pops too)
            if not pop.any():
                break
            sp[r[pop]] -= 1
        stack[rows, sp] = i
        sp += 1
    vertex = np.zeros((p, n), dtype=bool)
    pos = np.arange(n)
    vertex[np.repeat(rows, sp), stack[pos[None, :] < sp[:, None]]] = True
    left = np.maximum.accumulate(np.where(vertex, pos, -1), axis=1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(vertex, pos, n), axis=1), axis=1), axis=1)
    yl = np.take_along_axis(y, left, axis=1)
    yr = np.take_along_axis(y, right, axis=1)
    xl, xr = x[left], x[right]
    with np.errstate(all="ignore"):
        t = np.where(right > left, (x[None, :] - xl) / (xr - xl), 0.0)
    return (yl + (yr - yl) * t).reshape(shape)


def remove_continuum(spectra: np.ndarray, wavelengths: np.ndarray) -> np.ndarray:
    """``spectra / continuum(spectra)`` (absorptions become dips below 1)."""
    with np.errstate(all="ignore"):
        return np.asarray(spectra, dtype=np.float64) / continuum(spectra, wavelengths)


class ContinuumParams(Params):
    lo_nm: float = Field(2100.0, description="window start (nm)")
    hi_nm: float = Field(2400.0, description="window end (nm)")
    min_continuum: float = Field(
        0.01,
        ge=0.0,
        description="nodata where the continuum anywhere in the window is below this (reflectance): "
        "dark pixels whose ratio R/continuum is noise over a near-zero denominator",
    )

    @model_validator(mode="after")
    def _order(self) -> ContinuumParams:
        if self.hi_nm <= self.lo_nm:
            raise ValueError("hi_nm must be > lo_nm")
        return self


def _cr_compute(b: Mapping[str, np.ndarray], p: ContinuumParams, ctx: ComputeContext) -> np.ndarray:
    stack = b["window"]  # (n, h, w)
    wl = np.asarray(ctx.wavelengths["window"], dtype=np.float64)
    spectra = np.moveaxis(stack, 0, -1)  # (h, w, n)
    cont = continuum(spectra, wl)
    with np.errstate(all="ignore"):
        cr = np.asarray(spectra, dtype=np.float64) / cont
    finite = np.isfinite(cr).all(axis=-1)
    cr_safe = np.where(np.isfinite(cr), cr, np.inf)
    imin = np.argmin(cr_safe, axis=-1)
    depth = 1.0 - np.take_along_axis(cr_safe, imin[..., None], axis=-1)[..., 0]
    pos = wl[imin]
    step = np.gradient(wl) if wl.size > 1 else np.ones(1)
    area = np.sum((1.0 - cr_safe) * step, axis=-1)
    out = np.stack([depth, pos, area]).astype(np.float32)
    # Physical only where the continuum carries signal and 0 <= R <= continuum (depth in [0, 1]).
    with np.errstate(invalid="ignore"):
        physical = (np.min(cont, axis=-1) >= p.min_continuum) & (depth >= 0.0) & (depth <= 1.0)
    out[:, ~(finite & physical)] = np.nan
    return out


def continuum_depth_product() -> Product:
    return Product(
        name="continuum-depth",
        version="1.1.0",
        title="Continuum-removed absorption feature in a window",
        inputs=(BandRange("window", 2100.0, 2400.0, min_bands=3),),
        inputs_for=lambda p: (BandRange("window", p.lo_nm, p.hi_nm, min_bands=3),),
        output=OutputSpec(
            bands=(
                OutputBand("depth", "1 - min(R/continuum) in the window (convex-hull continuum)"),
                OutputBand("position_nm", "wavelength of the continuum-removed minimum (nm)"),
                OutputBand("area_nm", "integrated 1 - R/continuum over the window (nm)"),
            )
        ),
        compute=_cr_compute,
        params_model=ContinuumParams,
        reference="Clark & Roush 1984, JGR 89:6329-6340",
        kind="spectral",
        notes=(
            "All three bands are nodata where the convex-hull continuum anywhere in the window is below "
            "min_continuum (near-zero denominator: dark water, shadow) or the depth lies outside [0, 1] "
            "(> 1 means negative reflectance); statistics then describe real spectra only."
        ),
    )


# --- SAM ---------------------------------------------------------------------------------------
def load_reference_csv(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(wavelengths (m,), class names, values (C, m)) from a reference CSV; empty cells -> NaN."""
    p = Path(path)
    try:
        with p.open(newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
    except OSError as exc:
        raise ProductError(f"SAM reference file {p}: {exc}") from exc
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ProductError(f"SAM reference file {p}: needs a header 'wavelength_nm,<class>...' and rows")
    names = [c.strip() for c in rows[0][1:]]
    try:
        data = np.array([[float(v) if v.strip() else np.nan for v in r] for r in rows[1:]], dtype=np.float64)
    except ValueError as exc:
        raise ProductError(f"SAM reference file {p}: {exc}") from exc
    if data.shape[1] != len(names) + 1:
        raise ProductError(f"SAM reference file {p}: rows do not match the header's {len(names) + 1} columns")
    order = np.argsort(data[:, 0], kind="stable")
    return data[order, 0], names, data[order, 1:].T


def resample_nearest(
    ref_wl: np.ndarray, ref_values: np.ndarray, target_wl: np.ndarray, max_distance_nm: float
) -> np.ndarray:
    """Nearest finite reference sample per target band (NaN when farther than ``max_distance_nm``)."""
    out = np.full((ref_values.shape[0], target_wl.size), np.nan)
    for c in range(ref_values.shape[0]):
        ok = np.isfinite(ref_values[c])
        if not ok.any():
            continue
        wl, v = ref_wl[ok], ref_values[c, ok]
        d = np.abs(target_wl[:, None] - wl[None, :])
        j = np.argmin(d, axis=1)
        hit = d[np.arange(target_wl.size), j] <= max_distance_nm
        out[c, hit] = v[j[hit]]
    return out


def spectral_angles(cube: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Angles (radians) between each spectrum of ``cube`` (k, h, w) and each ref (C, k) -> (C, h, w)."""
    x = cube.astype(np.float64, copy=False)
    dots = np.einsum("khw,ck->chw", x, refs)
    norms = np.sqrt(np.einsum("khw,khw->hw", x, x))[None] * np.linalg.norm(refs, axis=1)[:, None, None]
    with np.errstate(all="ignore"):
        return np.arccos(np.clip(dots / norms, -1.0, 1.0))


class SAMParams(Params):
    references: str = Field(
        ...,
        description="CSV: wavelength_nm + one column per class (its content checksum enters the product key)",
        json_schema_extra={"input_file": True},
    )
    max_distance_nm: float = Field(10.0, gt=0, description="nearest reference sample must lie within this")
    max_angle: float | None = Field(None, gt=0, description="radians; worse best matches -> class 0")


@dataclass(frozen=True)
class SAMState:
    names: tuple[str, ...]
    used: np.ndarray  # bool (k,) bands used in the angle
    refs: np.ndarray  # (C, k_used)


def _sam_output(p: SAMParams) -> OutputSpec:
    _, names, _ = load_reference_csv(p.references)
    bands = tuple(OutputBand(f"angle_{n}", f"spectral angle to '{n}' (radians)") for n in names)
    classes = {0: "unclassified", **{i + 1: n for i, n in enumerate(names)}}
    return OutputSpec(
        bands=bands + (OutputBand("class", "1-based class of the smallest angle"),),
        classes=classes,
        class_band=len(names),
        colormap="magma",
    )


def _sam_fit(reader: ChunkReader, p: SAMParams, ctx: ComputeContext) -> SAMState:
    wl, names, values = load_reference_csv(p.references)
    target = np.asarray(ctx.wavelengths["spectrum"], dtype=np.float64)
    res = resample_nearest(wl, values, target, p.max_distance_nm)
    used = np.isfinite(res).all(axis=0)
    if used.sum() < 3:
        raise ProductError(
            f"product 'sam' on scene '{ctx.scene_id}': reference file {p.references} "
            f"covers only {int(used.sum())} scene bands within {p.max_distance_nm} nm"
        )
    log.info("SAM: %d classes over %d of %d bands", len(names), int(used.sum()), target.size)
    return SAMState(tuple(names), used, res[:, used])


def _sam_compute(b: Mapping[str, np.ndarray], p: SAMParams, ctx: ComputeContext) -> np.ndarray:
    st: SAMState = ctx.state
    ang = spectral_angles(b["spectrum"][st.used], st.refs)
    cls = (np.argmin(np.where(np.isfinite(ang), ang, np.inf), axis=0) + 1).astype(np.float64)
    if p.max_angle is not None:
        cls[np.min(ang, axis=0) > p.max_angle] = 0
    cls[~np.isfinite(ang).all(axis=0)] = np.nan
    return np.concatenate([ang, cls[None]]).astype(np.float32)


def sam_product() -> Product:
    return Product(
        name="sam",
        version="1.0.0",
        title="Spectral Angle Mapper against reference spectra",
        inputs=(ALL_GOOD_BANDS,),
        output=OutputSpec(
            bands=(
                OutputBand("angle_<class>", "one band per reference class (radians)"),
                OutputBand("class", "1-based class of the smallest angle (0 = none)"),
            )
        ),
        output_for=_sam_output,
        compute=_sam_compute,
        fit=_sam_fit,
        params_model=SAMParams,
        reference="Kruse et al. 1993, Remote Sens. Environ. 44:145-163",
        kind="classifier",
    )


# --- PCA ---------------------------------------------------------------------------------------
class PCAParams(Params):
    n_components: int = Field(3, ge=1, le=64, description="number of components written")


@dataclass(frozen=True)
class PCAState:
    mean: np.ndarray  # (k,)
    cov: np.ndarray  # (k, k)
    eigenvalues: np.ndarray  # (k,) descending
    eigenvectors: np.ndarray  # (k, k) columns
    nsamples: int

    def _ratio(self) -> np.ndarray:
        total = float(self.eigenvalues.sum())
        return self.eigenvalues / total if total else np.zeros_like(self.eigenvalues)

    def summary(self, n: int) -> dict[str, Any]:
        """Small enough for the item (``hsi:fit``): the written components' variance."""
        ratio = self._ratio()
        return {
            "method": "pca",
            "nsamples": self.nsamples,
            "n_bands": int(self.mean.size),
            "total_variance": float(self.eigenvalues.sum()),
            "eigenvalues": [float(v) for v in self.eigenvalues[:n]],
            "explained_variance_ratio": [float(v) for v in ratio[:n]],
            "cumulative_explained_variance": float(ratio[:n].sum()),
        }

    def details(self, n: int, ctx: ComputeContext) -> dict[str, Any]:
        """Everything needed to interpret and reproduce the components (the ``fit`` JSON asset):
        ``PC_j = sum_i (x_i - mean_i) * loadings[i][j]`` over the listed bands (physical values)."""
        sel = [s for s in ctx.selected if s.input == "spectrum"]
        return {
            **self.summary(n),
            "formula": "PC_j = sum_i (x_i - mean_i) * loadings[i][j]; covariance unbiased (N-1)",
            "bands": [{"index": s.index, "wavelength_nm": s.wavelength} for s in sel],
            "mean": [float(v) for v in self.mean],
            "eigenvalues_all": [float(v) for v in self.eigenvalues],
            "explained_variance_ratio_all": [float(v) for v in self._ratio()],
            "loadings": [[float(v) for v in row] for row in self.eigenvectors[:, :n]],
        }


def pca_fit_stream(chunks: Any, key: str = "spectrum") -> PCAState:
    """Streaming mean/covariance over chunks ``{key: (k, h, w)}`` (pixels with any NaN skipped)."""
    shift: np.ndarray | None = None
    s1: np.ndarray | None = None
    s2: np.ndarray | None = None
    n = 0
    for chunk in chunks:
        arr = chunk[key]
        x = arr.reshape(arr.shape[0], -1).T.astype(np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        if x.shape[0] == 0:
            continue
        if shift is None:
            shift = x.mean(axis=0)
            s1 = np.zeros_like(shift)
            s2 = np.zeros((shift.size, shift.size))
        xs = x - shift
        s1 += xs.sum(axis=0)
        s2 += xs.T @ xs
        n += x.shape[0]
    if shift is None or s1 is None or s2 is None or n < 2:
        raise ProductError("PCA needs at least two valid pixels")
    m = s1 / n
    cov = (s2 - n * np.outer(m, m)) / (n - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    return PCAState(m + shift, cov, evals[order], evecs[:, order], n)


def _pca_fit(reader: ChunkReader, p: PCAParams, ctx: ComputeContext) -> PCAState:
    k = len(ctx.wavelengths["spectrum"])
    if p.n_components > k:
        raise ProductError(
            f"product 'pca': n_components={p.n_components} > {k} good bands in scene '{ctx.scene_id}'"
        )
    return pca_fit_stream(reader)


def _pca_compute(b: Mapping[str, np.ndarray], p: PCAParams, ctx: ComputeContext) -> np.ndarray:
    st: PCAState = ctx.state
    arr = b["spectrum"]
    k, h, w = arr.shape
    x = arr.reshape(k, -1).T.astype(np.float64) - st.mean
    return (x @ st.eigenvectors[:, : p.n_components]).T.reshape(p.n_components, h, w).astype(np.float32)


def _pca_output(p: PCAParams) -> OutputSpec:
    return OutputSpec(
        bands=tuple(OutputBand(f"PC{i + 1}", f"principal component {i + 1}") for i in range(p.n_components)),
        colormap="gray",
    )


def pca_product() -> Product:
    return Product(
        name="pca",
        version="1.0.0",
        title="Principal components (two-pass, out of core)",
        inputs=(ALL_GOOD_BANDS,),
        output=_pca_output(PCAParams.model_validate({})),
        output_for=_pca_output,
        compute=_pca_compute,
        fit=_pca_fit,
        params_model=PCAParams,
        reference="Jolliffe 2002, Principal Component Analysis",
        kind="spectral",
        needs="any",  # a decorrelation of whatever the cube holds
    )
