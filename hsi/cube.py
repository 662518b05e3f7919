"""Windowed access to a scene's binary cube, in (band, line, sample) order, in bounded memory.

A window is read with positioned reads (``pread``) of just the bytes it needs, into a buffer the
size of the window: one read per line for BIL/BIP (a line holds every band) and one read per
band for BSQ. Nothing is memory-mapped, so the process's resident memory stays one window,
whatever the scene size. Works for every ENVI interleave and byte order; arrays come back
native-endian and C-contiguous.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Protocol

import numpy as np
from rasterio.transform import Affine

from hsi.errors import DataFileError
from hsi.scene import RasterLayout, SceneMetadata

__all__ = ["Cube", "CubeReader", "open_cube", "read_rotated_window"]


class CubeReader(Protocol):
    """What every windowed cube reader offers: (bands, lines, samples) shape and window reads."""

    shape: tuple[int, int, int]
    dtype: np.dtype[Any]

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, t: Any, e: Any, tb: Any) -> None: ...


class Cube:
    """An open cube file: ``read(rows, cols)`` returns a (bands, h, w) native-endian array."""

    def __init__(self, meta: SceneMetadata | RasterLayout) -> None:
        from hsi.sources.envi import check_data_file

        lay = meta.layout if isinstance(meta, SceneMetadata) else meta
        check_data_file(lay)
        self.path = lay.data_path
        self.interleave = lay.interleave
        self.offset = lay.header_offset
        self.file_dtype = np.dtype(lay.dtype).newbyteorder(">" if lay.byte_order == "big" else "<")
        self.dtype = self.file_dtype.newbyteorder("=")
        self.shape = (lay.count, lay.height, lay.width)
        self._fd = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Cube:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _pread(self, count: int, offset: int) -> np.ndarray:
        buf = np.empty(count, dtype=self.file_dtype)
        view = memoryview(buf).cast("B")  # type: ignore[arg-type]
        got = 0
        while got < view.nbytes:
            n = os.preadv(self._fd, [view[got:]], offset + got)
            if n == 0:
                raise DataFileError(self.path, f"unexpected end of file at byte {offset + got}")
            got += n
        return buf

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        n, h, w = self.shape
        (r0, r1), (c0, c1) = rows, cols
        if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
            raise ValueError(f"window rows {rows} cols {cols} outside the cube {h}x{w}")
        size = self.file_dtype.itemsize
        out = np.empty((n, r1 - r0, c1 - c0), dtype=self.dtype)
        if self.interleave == "bsq":
            for b in range(n):
                start = self.offset + ((b * h + r0) * w) * size
                block = self._pread((r1 - r0) * w, start).reshape(r1 - r0, w)
                out[b] = block[:, c0:c1]
        elif self.interleave == "bil":  # line: band, sample
            for k, r in enumerate(range(r0, r1)):
                line = self._pread(n * w, self.offset + r * n * w * size).reshape(n, w)
                out[:, k, :] = line[:, c0:c1]
        else:  # bip  line: sample, band
            for k, r in enumerate(range(r0, r1)):
                line = self._pread((c1 - c0) * n, self.offset + (r * w + c0) * n * size).reshape(c1 - c0, n)
                out[:, k, :] = line.T
        return out


def open_cube(meta: SceneMetadata) -> CubeReader:
    """Open the scene's cube for windowed reads (use as a context manager). A cube stored as a
    netCDF4 variable (``layout.variable``) is read through :class:`hsi.netcdf.NetcdfCube`."""
    if meta.layout.variable is not None:
        from hsi.netcdf import NetcdfCube

        return NetcdfCube(meta.layout)
    return Cube(meta)


def read_rotated_window(
    cube: CubeReader,
    src_transform: Affine,
    dst_transform: Affine,
    rows: tuple[int, int],
    cols: tuple[int, int],
    fill: float,
) -> np.ndarray:
    """A north-up output window resampled (nearest neighbour) from a rotated source grid.

    Every output pixel centre is mapped through ``~src_transform``; pixels falling outside the
    source grid get ``fill``. Only the source block covering the window is read.
    """
    n, h, w = cube.shape
    r0, r1 = rows
    c0, c1 = cols
    cc, rr = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    x = dst_transform.a * cc + dst_transform.b * rr + dst_transform.c
    y = dst_transform.d * cc + dst_transform.e * rr + dst_transform.f
    inv = ~src_transform
    sc = np.floor(inv.a * x + inv.b * y + inv.c).astype(np.int64)
    sr = np.floor(inv.d * x + inv.e * y + inv.f).astype(np.int64)
    valid = (sc >= 0) & (sc < w) & (sr >= 0) & (sr < h)
    out = np.full((n, r1 - r0, c1 - c0), fill, dtype=cube.dtype)
    if not valid.any():
        return out
    rmin, rmax = int(sr[valid].min()), int(sr[valid].max())
    cmin, cmax = int(sc[valid].min()), int(sc[valid].max())
    src = cube.read((rmin, rmax + 1), (cmin, cmax + 1))
    out[:, valid] = src[:, sr[valid] - rmin, sc[valid] - cmin]
    return out
