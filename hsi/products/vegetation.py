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
:class:`~hsi.products.results.ProductResult` (``class_counts``/``class_fractions``).

Limits (see :data:`LIMITS`, printed by ``hsi products show tree-mortality``): an *uncalibrated
heuristic*. The thresholds are not fitted to field data; "dead" means "dry plant matter" (CAI), which
is equally true of straw, dry grass, litter and bare fields; "stressed" mixes water stress and sparse
canopy. Scope it with ``forest_mask``: a raster on the scene's grid (same size and transform) whose
non-zero pixels are forest; every other pixel is nodata, so class fractions describe the forest only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from hsi.errors import ProductError
from hsi.products.base import (
    BandRequest,
    ChunkReader,
    ComputeContext,
    OutputBand,
    OutputSpec,
    Params,
    Product,
)

__all__ = [
    "LIMITS",
    "MORTALITY_CLASSES",
    "TreeMortalityParams",
    "classify_mortality",
    "tree_mortality_product",
]

TOLERANCE_NM = 10.0
MORTALITY_CLASSES = {0: "non-vegetation", 1: "healthy", 2: "stressed", 3: "dead"}
CLASS_COLORS = {0: (150, 150, 150), 1: (26, 150, 65), 2: (253, 174, 97), 3: (180, 30, 30)}


class TreeMortalityParams(Params):
    ndvi_vegetation: float = Field(0.3, description="NDVI below this is non-vegetation")
    ndvi_healthy: float = Field(0.7, description="NDVI at/above this can be healthy (dense green canopy)")
    ndwi_healthy: float = Field(0.02, description="Gao NDWI at/above this (with NDVI) is healthy")
    cai_dead: float = Field(0.02, description="CAI at/above this (with NDVI < ndvi_healthy) is dead")
    forest_mask: str | None = Field(
        None,
        description="raster on the scene's grid (same size and transform): non-zero = forest; other "
        "pixels become nodata (its content checksum enters the product key)",
        json_schema_extra={"input_file": True},
    )

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


LIMITS = (
    "Uncalibrated heuristic: thresholds are literature-guided defaults, not fitted to field data. "
    "'dead' = dry plant matter (CAI >= cai_dead): straw, dry grass, litter and harvested fields look "
    "the same; 'stressed' mixes water stress and sparse canopy; no species, shadow or slope handling. "
    "Scope it with forest_mask (raster on the scene grid, non-zero = forest; elsewhere nodata), "
    "e.g. a pre-event forest map: an NDVI threshold cannot scope it (dead trees have low NDVI)."
)


@dataclass(frozen=True)
class _MaskState:
    path: str | None


def _fit(reader: ChunkReader, p: TreeMortalityParams, ctx: ComputeContext) -> _MaskState:
    if p.forest_mask is None:
        return _MaskState(None)
    import rasterio

    try:
        with rasterio.open(p.forest_mask) as m:
            shape, transform = (m.height, m.width), m.transform
    except rasterio.errors.RasterioIOError as exc:
        raise ProductError(f"product 'tree-mortality': forest_mask {p.forest_mask}: {exc}") from exc
    grid = ctx.grid or {}
    if grid.get("height") is not None and shape != (grid["height"], grid["width"]):
        raise ProductError(
            f"product 'tree-mortality': forest_mask {p.forest_mask} is {shape[0]} x {shape[1]} pixels, "
            f"scene '{ctx.scene_id}' is {grid['height']} x {grid['width']}: resample the mask onto the scene grid"
        )
    if grid.get("transform") is not None and not transform.almost_equals(grid["transform"]):
        raise ProductError(
            f"product 'tree-mortality': forest_mask {p.forest_mask} is not on the grid of scene "
            f"'{ctx.scene_id}' (transform {tuple(transform)[:6]} != {tuple(grid['transform'])[:6]})"
        )
    return _MaskState(p.forest_mask)


def _read_mask(path: str, ctx: ComputeContext) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as m:
        arr = m.read(1, window=ctx.window, masked=True)
    return np.asarray(arr.filled(0)) != 0


def _compute(b: Mapping[str, np.ndarray], p: TreeMortalityParams, ctx: ComputeContext) -> np.ndarray:
    with np.errstate(all="ignore"):
        ndvi = (b["R800"] - b["R670"]) / (b["R800"] + b["R670"])
        ndwi = (b["R860"] - b["R1240"]) / (b["R860"] + b["R1240"])
        cai = 0.5 * (b["R2000"] + b["R2200"]) - b["R2100"]
    out = classify_mortality(ndvi, ndwi, cai, p)
    state = ctx.state
    if state is not None and state.path is not None:
        out[~_read_mask(state.path, ctx)] = np.nan
    return out[None]


def tree_mortality_product() -> Product:
    wls = (670, 800, 860, 1240, 2000, 2100, 2200)
    return Product(
        name="tree-mortality",
        version="1.2.0",
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
        fit=_fit,
        params_model=TreeMortalityParams,
        reference="Gao 1996; Nagler et al. 2000; Asner et al. 2016 PNAS 113(2)",
        kind="classifier",
        notes=LIMITS,
    )
