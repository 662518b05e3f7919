"""What a product run yields: :class:`ProductResult` and the streaming output statistics.

Each window's partial statistics (:func:`window_stats`) are taken where the window is computed (here
or on a Dask worker) and folded in window order (:class:`Stats`), so a run's statistics are the same
bit for bit however its windows were computed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hsi.products.base import OutputSpec

__all__ = ["ProductResult", "Stats", "WindowStats", "window_stats"]


@dataclass
class ProductResult:
    """What a product run produced (everything JSON-serialisable via :meth:`to_dict`)."""

    product: str
    version: str
    params: dict[str, Any]
    scene_id: str
    source: str
    output_path: str
    selected_bands: list[dict[str, Any]]
    output_bands: list[dict[str, str]]
    dtype: str
    nodata: float | None
    width: int
    height: int
    stats: list[dict[str, Any]]
    class_counts: dict[str, int] | None = None
    class_fractions: dict[str, float] | None = None
    fit_summary: dict[str, Any] | None = None
    bands_read: list[int] = field(default_factory=list)
    windows: int = 0
    sidecars: dict[str, str] = field(default_factory=dict)  # asset key -> local JSON file (fit details)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def stac_properties(self, prefix: str = "hsi") -> dict[str, Any]:
        """Flat properties for a STAC item: product, version, params, the bands used (input name,
        1-based index, actual and requested centre in nm), the fitted model's summary (``hsi:fit``)
        and, for classifiers, class counts and fractions (of valid pixels)."""
        props: dict[str, Any] = {
            f"{prefix}:product": self.product,
            f"{prefix}:product_version": self.version,
            f"{prefix}:parameters": self.params,
            f"{prefix}:bands_used": [
                {
                    "input": b["input"],
                    "index": b["index"],
                    "wavelength_nm": round(float(b["wavelength"]), 4),
                    "requested_nm": None if b.get("requested") is None else float(b["requested"]),
                }
                for b in self.selected_bands
            ],
        }
        if self.fit_summary and "processor" in self.fit_summary:  # an external tool's run record
            props[f"{prefix}:processor"] = self.fit_summary["processor"]
        elif self.fit_summary is not None:  # a fitted model's summary (PCA variance, ch4-mf plumes)
            props[f"{prefix}:fit"] = self.fit_summary
        if self.class_fractions is not None:
            props[f"{prefix}:class_counts"] = self.class_counts
            props[f"{prefix}:class_fractions"] = self.class_fractions
        return props


#: per output band: (nodata count, valid count, sum, sum of squares, min, max, class counts)
WindowStats = list[tuple[int, int, float, float, float, float, list[tuple[int, int]]]]


def window_stats(spec: OutputSpec, out: np.ndarray, invalid: np.ndarray) -> WindowStats:
    """One window's partial statistics (computed where the window is: a Dask worker or here)."""
    part: WindowStats = []
    for i in range(out.shape[0]):
        v = out[i][~invalid[i]].astype(np.float64)
        nodata = int(invalid[i].sum())
        if not v.size:
            part.append((nodata, 0, 0.0, 0.0, math.inf, -math.inf, []))
            continue
        classes: list[tuple[int, int]] = []
        if i == spec.class_band:
            vals, cnt = np.unique(v.astype(np.int64), return_counts=True)
            classes = list(zip(vals.tolist(), cnt.tolist(), strict=True))
        part.append((nodata, v.size, v.sum(), (v * v).sum(), v.min(), v.max(), classes))
    return part


class Stats:
    """Streaming per-band count/min/max/mean/std (float64) and class counts."""

    def __init__(self, spec: OutputSpec) -> None:
        n = spec.count
        self.spec = spec
        self.count = np.zeros(n, dtype=np.int64)
        self.nodata = np.zeros(n, dtype=np.int64)
        self.s1 = np.zeros(n)
        self.s2 = np.zeros(n)
        self.lo = np.full(n, np.inf)
        self.hi = np.full(n, -np.inf)
        self.classes: dict[int, int] = {}

    def update(self, out: np.ndarray, invalid: np.ndarray) -> None:
        self.add(window_stats(self.spec, out, invalid))

    def add(self, part: WindowStats) -> None:
        """Fold one window's partial statistics in (windows must be added in window order: the
        float sums then match a serial run bit for bit)."""
        for i, (nodata, size, s1, s2, lo, hi, classes) in enumerate(part):
            self.nodata[i] += nodata
            if size:
                self.count[i] += size
                self.s1[i] += s1
                self.s2[i] += s2
                self.lo[i] = min(self.lo[i], lo)
                self.hi[i] = max(self.hi[i], hi)
                for k, c in classes:
                    self.classes[k] = self.classes.get(k, 0) + c

    def result(self) -> tuple[list[dict[str, Any]], dict[str, int] | None, dict[str, float] | None]:
        stats = []
        for i, b in enumerate(self.spec.bands):
            c = int(self.count[i])
            mean = self.s1[i] / c if c else None
            var = max(self.s2[i] / c - mean * mean, 0.0) if c and mean is not None else None
            stats.append(
                {
                    "band": b.name,
                    "valid": c,
                    "nodata": int(self.nodata[i]),
                    "min": float(self.lo[i]) if c else None,
                    "max": float(self.hi[i]) if c else None,
                    "mean": float(mean) if mean is not None else None,
                    "std": float(math.sqrt(var)) if var is not None else None,
                }
            )
        if self.spec.classes is None:
            return stats, None, None
        names = dict(self.spec.classes)
        counts = {names.get(k, str(k)): self.classes.get(k, 0) for k in names}
        for k, c in self.classes.items():
            if k not in names:
                counts[str(k)] = c
        total = sum(counts.values())
        fr = {k: (v / total if total else 0.0) for k, v in counts.items()}
        return stats, counts, fr
