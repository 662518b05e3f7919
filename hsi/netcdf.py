"""Windowed reads of cubes and layers stored in netCDF4 (HDF5) files, through h5netcdf.

EMIT granules keep the cube as one variable with dims (downtrack, crosstrack, bands) and the GLT
as two integer variables of the ``location`` group. A window read slices only the requested lines
and samples (HDF5 hyperslab), so memory is one window whatever the granule size. Values come back
raw (no CF masking or scaling): fill stays the file's ``_FillValue``.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import h5netcdf
import numpy as np

from hsi.errors import DataFileError
from hsi.scene import RasterLayout

__all__ = ["NetcdfCube", "open_variable"]


def open_variable(f: h5netcdf.File, path: Path, name: str) -> Any:
    """The variable ``name`` (``group/var`` paths allowed) of an open file; DataFileError if absent."""
    node: Any = f
    parts = name.strip("/").split("/")
    for g in parts[:-1]:
        if g not in node.groups:
            raise DataFileError(path, f"netCDF group {g!r} not found (looking for {name!r})")
        node = node.groups[g]
    if parts[-1] not in node.variables:
        raise DataFileError(path, f"netCDF variable {name!r} not found")
    return node.variables[parts[-1]]


class NetcdfCube:
    """A (line, sample, band) netCDF variable read as (band, line, sample) windows."""

    def __init__(self, layout: RasterLayout) -> None:
        if layout.variable is None:
            raise ValueError("NetcdfCube needs layout.variable")
        self.path = layout.data_path
        self._f: Any = None
        try:
            self._f = h5netcdf.File(self.path, "r")
        except OSError as exc:
            raise DataFileError(self.path, f"cannot open as netCDF4/HDF5: {exc}") from exc
        self._var = open_variable(self._f, self.path, layout.variable)
        if self._var.ndim == 2:
            lines, samples = self._var.shape
            bands = 1
        elif self._var.ndim == 3:
            lines, samples, bands = self._var.shape
        else:
            raise DataFileError(
                self.path, f"variable {layout.variable!r} has {self._var.ndim} dims, not 2 or 3"
            )
        if (lines, samples, bands) != (layout.height, layout.width, layout.count):
            raise DataFileError(
                self.path,
                f"variable {layout.variable!r} is {lines}x{samples}x{bands}, the metadata says "
                f"{layout.height}x{layout.width}x{layout.count}",
            )
        self.shape = (bands, lines, samples)
        self.dtype: np.dtype[Any] = np.dtype(self._var.dtype).newbyteorder("=")

    def read_pixels(
        self, rows: tuple[int, int], cols: tuple[int, int], bands: list[int] | None = None
    ) -> np.ndarray:
        """A window in the variable's own (line, sample, band) order, only ``bands`` (0-based,
        increasing) when given: HDF5 copies out just those, and nothing transposes the slab (a GLT
        lookup gathers a few pixels of it, :func:`hsi.glt.orthorectify_window`)."""
        n, h, w = self.shape
        (r0, r1), (c0, c1) = rows, cols
        if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
            raise ValueError(f"window rows {rows} cols {cols} outside the cube {h}x{w}")
        if self._var.ndim == 2:
            block = np.asarray(self._var[r0:r1, c0:c1])[:, :, None]
            return block if bands is None else block[:, :, bands]
        return np.asarray(self._var[r0:r1, c0:c1] if bands is None else self._var[r0:r1, c0:c1, bands])

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        return np.ascontiguousarray(self.read_pixels(rows, cols).transpose(2, 0, 1), dtype=self.dtype)

    def read_bands(self, rows: tuple[int, int], cols: tuple[int, int], bands: list[int]) -> np.ndarray:
        """Only ``bands`` (0-based, increasing) of a window, as (band, line, sample)."""
        return np.ascontiguousarray(self.read_pixels(rows, cols, bands).transpose(2, 0, 1), dtype=self.dtype)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> NetcdfCube:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
