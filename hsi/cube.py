"""Lazy access to a scene's binary cube: a numpy memory map in (band, line, sample) order.

Nothing is read until a window is sliced, and slicing reads only the pages it touches, so a
window of a cube larger than RAM costs the window, not the cube. Works for every ENVI
interleave (BSQ/BIL/BIP) and byte order; :func:`read_window` returns native-endian arrays.
"""

from __future__ import annotations

import numpy as np
from rasterio.transform import Affine

from hsi.scene import SceneMetadata

__all__ = ["open_cube", "read_window", "read_rotated_window"]


def open_cube(meta: SceneMetadata) -> np.ndarray:
    """A read-only (bands, lines, samples) view of the cube on disk (no data is loaded)."""
    from hsi.sources.envi import check_data_file

    lay = meta.layout
    check_data_file(lay)
    dt = np.dtype(lay.dtype).newbyteorder(">" if lay.byte_order == "big" else "<")
    w, h, n = lay.width, lay.height, lay.count
    shape = {"bsq": (n, h, w), "bil": (h, n, w), "bip": (h, w, n)}[lay.interleave]
    mm = np.memmap(lay.data_path, dtype=dt, mode="r", offset=lay.header_offset, shape=shape)
    if lay.interleave == "bsq":
        return mm
    if lay.interleave == "bil":
        return mm.transpose(1, 0, 2)
    return mm.transpose(2, 0, 1)


def read_window(cube: np.ndarray, rows: slice, cols: slice, bands: slice | list[int] | None = None) -> np.ndarray:
    """Window of the cube as a native-endian, C-contiguous array (bands, h, w)."""
    block = cube[:, rows, cols] if bands is None else cube[bands, rows, cols]
    return np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("="))


def read_rotated_window(
    cube: np.ndarray,
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
    native = cube.dtype.newbyteorder("=")
    out = np.full((n, r1 - r0, c1 - c0), fill, dtype=native)
    if not valid.any():
        return out
    rmin, rmax = int(sr[valid].min()), int(sr[valid].max())
    cmin, cmax = int(sc[valid].min()), int(sc[valid].max())
    src = read_window(cube, slice(rmin, rmax + 1), slice(cmin, cmax + 1))
    out[:, valid] = src[:, sr[valid] - rmin, sc[valid] - cmin]
    return out
