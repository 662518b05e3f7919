"""Tree-mortality classes from NDVI, Gao's NDWI and the Cellulose Absorption Index.

References
----------
* Rouse, J.W. et al. (1974) NDVI = (R800 − R670)/(R800 + R670) (narrow-band form).
* Gao, B.-C. (1996) NDWI = (R860 − R1240)/(R860 + R1240): canopy liquid water.
* Nagler, P.L. et al. (2000) CAI = 0.5(R2000 + R2200) − R2100: dry plant matter (cellulose/lignin).
* Asner, G.P. et al. (2016) "Progressive forest canopy water loss during the 2012–2015 California
  drought", PNAS 113(2): E249–E255 -- canopy water loss as a precursor of tree mortality.

Decision rules, applied in this order (thresholds are parameters):

1. ``CAI >= cai_dead`` and ``NDVI < ndvi_healthy``                        -> 3 dead (dry matter)
2. ``NDVI < ndvi_vegetation``                                              -> 0 non-vegetation
3. ``NDVI >= ndvi_healthy`` and ``NDWI >= ndwi_healthy``                   -> 1 healthy
4. otherwise (green but water-stressed or sparse)                          -> 2 stressed

Output: one uint8 band, nodata 255. Class counts/fractions come back in
:class:`~hsi.products.engine.ProductResult` (``class_counts``/``class_fractions``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field, model_validator

from hsi.products.base import BandRequest, ComputeContext, OutputBand, OutputSpec, Params, Product

__all__ = ["MORTALITY_CLASSES", "TreeMortalityParams", "classify_mortality", "tree_mortality_product"]

TOLERANCE_NM = 10.0
MORTALITY_CLASSES = {0: "non-vegetation", 1: "healthy", 2: "stressed", 3: "dead"}
CLASS_COLORS = {0: (150, 150, 150), 1: (26, 150, 65), 2: (253, 174, 97), 3: (180, 30, 30)}


class TreeMortalityParams(Params):
    ndvi_vegetation: float = Field(0.3, description="NDVI below this is non-vegetation")
    ndvi_healthy: float = Field(0.7, description="NDVI at/above this can be healthy (dense green canopy)")
    ndwi_healthy: float = Field(0.02, description="Gao NDWI at/above this (with NDVI) is healthy")
    cai_dead: float = Field(0.02, description="CAI at/above this (with NDVI < ndvi_healthy) is dead")

    @model_validator(mode="after")
    def _order(self) -> TreeMortalityParams:
        if self.ndvi_vegetation > self.ndvi_healthy:
            raise ValueError("ndvi_vegetation must be <= ndvi_healthy")
        return self


def classify_mortality(
    ndvi: np.ndarray, ndwi: np.ndarray, cai: np.ndarray, p: TreeMortalityParams
) -> np.ndarray:
    """Class per pixel (float32, NaN where any index is not finite)."""
    out = np.full(ndvi.shape, 2.0, dtype=np.float32)
    healthy = (ndvi >= p.ndvi_healthy) & (ndwi >= p.ndwi_healthy)
    out[healthy] = 1
    out[ndvi < p.ndvi_vegetation] = 0
    out[(cai >= p.cai_dead) & (ndvi < p.ndvi_healthy)] = 3
    out[~(np.isfinite(ndvi) & np.isfinite(ndwi) & np.isfinite(cai))] = np.nan
    return out


def _compute(b: Mapping[str, np.ndarray], p: TreeMortalityParams, ctx: ComputeContext) -> np.ndarray:
    with np.errstate(all="ignore"):
        ndvi = (b["R800"] - b["R670"]) / (b["R800"] + b["R670"])
        ndwi = (b["R860"] - b["R1240"]) / (b["R860"] + b["R1240"])
        cai = 0.5 * (b["R2000"] + b["R2200"]) - b["R2100"]
    return classify_mortality(ndvi, ndwi, cai, p)[None]


def tree_mortality_product() -> Product:
    wls = (670, 800, 860, 1240, 2000, 2100, 2200)
    return Product(
        name="tree-mortality",
        version="1.1.0",
        title="Tree mortality classes (NDVI, NDWI Gao, CAI)",
        inputs=tuple(BandRequest(f"R{w}", float(w), TOLERANCE_NM) for w in wls),
        output=OutputSpec(
            bands=(OutputBand("class", "0 non-vegetation, 1 healthy, 2 stressed, 3 dead"),),
            dtype="uint8",
            nodata=255,
            classes=MORTALITY_CLASSES,
            class_band=0,
            class_colors=CLASS_COLORS,
        ),
        compute=_compute,
        params_model=TreeMortalityParams,
        reference="Gao 1996; Nagler et al. 2000; Asner et al. 2016 PNAS 113(2)",
        kind="classifier",
    )
