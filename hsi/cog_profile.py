"""The creation profile of the analysis-ready cube, apart from the writer.

Deciding whether an activation is up to date needs the profile (it is part of the activation key)
but not the writer: this module imports neither rasterio nor rio-cogeo, so `hsi activate` of an
up-to-date item answers from the catalog quickly. :mod:`hsi.cog` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CogProfile"]


@dataclass(frozen=True)
class CogProfile:
    """Creation profile of the analysis-ready cube."""

    blocksize: int = 256
    compress: str = "ZSTD"
    level: int | None = 9  # ZSTD level; 9 is a good speed/size trade-off for spectra
    predictor: int | None = None  # None = 2 for integers, 3 for floats
    overview_level: int = 0  # cube overviews (0 = none; the quicklook carries the pyramid)
    num_threads: int | str = "ALL_CPUS"

    def creation_options(self, dtype: str) -> dict[str, Any]:
        pred = self.predictor
        if pred is None:
            import numpy as np

            pred = 3 if np.dtype(dtype).kind == "f" else 2
        opts: dict[str, Any] = {
            "driver": "GTiff",
            "interleave": "band",
            "tiled": True,
            "blockxsize": self.blocksize,
            "blockysize": self.blocksize,
            "compress": self.compress,
            "predictor": pred,
            "num_threads": self.num_threads,
            "bigtiff": "IF_SAFER",
        }
        if self.level is not None and self.compress.upper() == "ZSTD":
            opts["zstd_level"] = self.level
        return opts
