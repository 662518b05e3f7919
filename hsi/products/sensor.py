"""Products computed in sensor geometry, orthorectified after (EMIT's own practice).

A scene delivered in sensor (instrument) geometry with a GLT (EMIT, AVIRIS-NG/-Classic L1B, any
ENVI cube with a GLT: :class:`hsi.scene.SceneMetadata` with ``glt``) can have its products computed
on the raw lines and samples, before orthorectification, then orthorectified through the GLT
(:func:`hsi.glt.orthorectify_raster`). For a per-pixel product (a spectral index, a classifier
without spatial context) the result equals the product of the orthorectified cube pixel for pixel:
the GLT is an exact lookup. Products with spatial or per-column context (a matched filter whose
statistics follow the detector's columns, connected plume components) see the instrument's own
neighbourhoods, which is why EMIT computes them this way.

Memory: the sensor cube is read in strips of whole lines (every band of a line sits together in
EMIT's netCDF and in BIL cubes) of at most ``budget_bytes``; the sensor-geometry product is a
scratch COG; the orthorectification streams output blocks (:mod:`hsi.glt`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.windows import Window

from hsi.cube import CubeReader, open_cube
from hsi.errors import ProductError
from hsi.products.base import Params, Product
from hsi.products.engine import (
    QUANTITY_TAG,
    overview_resampling,
    product_profile,
    run_on_dataset,
)
from hsi.products.results import ProductResult
from hsi.scene import SceneMetadata

__all__ = ["SENSOR_GEOMETRY_TAG", "CubeSide", "SensorDataset", "run_product_sensor"]

log = logging.getLogger(__name__)

SENSOR_GEOMETRY_TAG = "HSI_GEOMETRY"
DEFAULT_STRIP_BYTES = 64 << 20


def _read(cube: CubeReader, indexes: list[int], window: Window) -> np.ndarray:
    """Bands ``indexes`` (1-based) of a window; only those bands where the reader can select them."""
    rows = (int(window.row_off), int(window.row_off) + int(window.height))
    cols = (int(window.col_off), int(window.col_off) + int(window.width))
    zero = [i - 1 for i in indexes]
    pick = getattr(cube, "read_bands", None)
    if pick is not None and zero == sorted(set(zero)):
        return np.asarray(pick(rows, cols, zero))
    return np.asarray(cube.read(rows, cols)[zero])


class SensorDataset:
    """A sensor-geometry cube seen through the few rasterio-dataset members the engine uses
    (no CRS: pixel = (sample, line))."""

    def __init__(self, meta: SceneMetadata, cube: CubeReader) -> None:
        self.meta = meta
        self.cube = cube
        self.count, self.height, self.width = cube.shape
        self.crs = None
        self.transform = Affine.identity()
        self.nodata = meta.nodata
        self.block_shapes = [(1, self.width)]

    def tags(self) -> dict[str, str]:
        return {
            QUANTITY_TAG: self.meta.quantity,
            **({"HSI_UNITS": self.meta.units} if self.meta.units else {}),
        }

    def read(self, indexes: list[int], window: Window) -> np.ndarray:
        return _read(self.cube, indexes, window)

    def strips(self, budget_bytes: int = DEFAULT_STRIP_BYTES) -> list[Window]:
        """Whole-line windows of at most ``budget_bytes`` of every band."""
        line = self.count * self.width * self.cube.dtype.itemsize
        step = max(1, budget_bytes // max(1, line))
        return [Window(0, r, self.width, min(step, self.height - r)) for r in range(0, self.height, step)]


class CubeSide:
    """A companion cube in the same sensor geometry (EMIT OBS / MASK granule, AVIRIS-NG ``_obs``) read
    window by window, as :mod:`hsi.products.inputs` reads a side COG."""

    def __init__(self, meta: SceneMetadata) -> None:
        self.path = str(meta.layout.data_path)
        self.shape = (meta.layout.height, meta.layout.width)
        self._cube = open_cube(meta)

    def read(self, indexes: list[int], window: Window) -> np.ndarray:
        return _read(self._cube, indexes, window)

    def close(self) -> None:
        self._cube.close()


def run_product_sensor(
    product: Product,
    meta: SceneMetadata,
    dst_path: str,
    params: Mapping[str, Any] | Params | None = None,
    *,
    scene_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    context: Mapping[str, Any] | None = None,
    adjust: Sequence[Any] = (),
    budget_bytes: int = DEFAULT_STRIP_BYTES,
) -> ProductResult:
    """Compute ``product`` on the sensor-geometry cube of ``meta``, then orthorectify it through
    ``meta.glt`` into the COG ``dst_path``. ``adjust``: window adjustments in sensor geometry
    (their side rasters must be sensor-geometry companions, e.g. :class:`CubeSide`).

    The result's statistics are over sensor pixels (each observed once, whatever the GLT's infill);
    its width/height are the orthorectified COG's."""
    from hsi.glt import glt_output_grid, orthorectify_raster

    if meta.glt is None:
        raise ProductError(
            f"{meta.scene_id} is map-projected (no GLT): geometry=sensor needs a scene delivered in sensor "
            "geometry with a GLT; run with geometry=ortho"
        )
    sid = scene_id or meta.item_id
    product.check_quantity(meta.quantity, f"sensor cube {meta.layout.data_path}")
    dst = Path(dst_path)
    sensor_cog = dst.with_name(f"{dst.stem}_sensor.tif")
    with open_cube(meta) as cube, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the sensor grid has no map transform
        ds = SensorDataset(meta, cube)
        windows = ds.strips(budget_bytes)
        log.info(
            "%s on %s in sensor geometry: %d lines x %d samples in %d strips, then the GLT",
            product.name,
            sid,
            ds.height,
            ds.width,
            len(windows),
        )
        result = run_on_dataset(
            product,
            ds,
            meta.bands,
            str(meta.layout.data_path),
            str(sensor_cog),
            params,
            scene_id=sid,
            windows=windows,
            progress=progress,
            context=context,
            adjust=adjust,
        )
    try:
        spec = product.output_spec(product.parse_params(result.params))
        _, w, h = glt_output_grid(meta.glt)
        width, height = orthorectify_raster(
            sensor_cog,
            meta.glt,
            dst,
            product_profile(w, h, spec.dtype),
            overview_resampling=overview_resampling(spec),
            extra_tags={SENSOR_GEOMETRY_TAG: "computed in sensor geometry, orthorectified through the GLT"},
        )
    finally:
        sensor_cog.unlink(missing_ok=True)
    result.output_path = str(dst)
    result.width, result.height = width, height
    return result
