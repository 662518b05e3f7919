"""Encoding one TIFF tile as libtiff does: the predictor, then the codec (:func:`encode_tile`).

Encoding follows the TIFF 6.0 specification and libtiff, so GDAL (and any TIFF reader) decodes
the tiles to the same pixels GDAL writes (``tests/unit/test_cog_tiles.py`` compares the outputs of
:mod:`hsi.tiles` and of GDAL pixel for pixel, band metadata and all):

* predictor 2 (horizontal differencing): per tile row, each sample minus its left neighbour,
  wrapping in the sample's integer type;
* predictor 3 (floating point, Adobe TIFF Technical Note 3 / libtiff ``fpDiff``): per tile row,
  the sample bytes are split into planes, most significant byte first, then differenced byte by
  byte over the row;
* ZSTD (TIFF compression 50000, one zstd frame per tile, GDAL's ``ZSTD_LEVEL`` with the parameters
  libtiff gets from zstd: see :func:`zstd_compressor`) or DEFLATE
  (compression 8, a zlib stream per tile) or none.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["COMPRESSION_CODES", "compressor", "encode_tile", "predict", "supported", "zstd_compressor"]

#: TIFF Compression tag values of the codecs this module encodes
COMPRESSION_CODES = {"NONE": 1, "DEFLATE": 8, "ZSTD": 50000}


def supported(compress: str) -> bool:
    """Whether tiles of this compression are encoded here (else GDAL writes them)."""
    name = compress.upper()
    if name == "ZSTD":
        try:
            import zstandard  # noqa: F401
        except ImportError:  # pragma: no cover - a declared dependency
            return False
    return name in COMPRESSION_CODES


_local = threading.local()


def compressor(compress: str, level: int | None) -> Callable[[bytes | memoryview], bytes]:
    """The codec's compress function for whole tiles (this thread's own zstd context)."""
    name = compress.upper()
    if name == "NONE":
        return bytes
    if name == "DEFLATE":
        lvl = 6 if level is None else level
        return lambda b: zlib.compress(b, lvl)
    key = ("zstd", level)
    c = getattr(_local, "zstd", None)
    if c is None or c[0] != key:
        c = (key, zstd_compressor(9 if level is None else level))
        _local.zstd = c
    comp = c[1]
    return comp.compress


def zstd_compressor(level: int) -> Any:
    """A ``zstandard.ZstdCompressor`` for one TIFF tile at ``level``, with libtiff's parameters.

    libtiff (GDAL's ZSTD codec) streams every tile into zstd without announcing its size, so zstd
    compresses it with the level's parameters for inputs of unknown (large) size, the same ones the
    ``zstd`` command uses on a file. A one-shot ``compress(tile)`` would announce 256 KiB and pick
    zstd's small-input table instead: at level 9 a deeper search (``searchLog`` 5 against 4, min
    match 4 against 5) that spends ~20% more CPU per predictor-3 tile for ~0.3% fewer bytes, and
    a size 0.15-1.1% away from GDAL's. With the level's own parameters a tile is GDAL's size to
    0.1% (``tests/unit/test_cog_tiles.py``). The blocks are not byte for byte GDAL's: zstd still
    sizes its hash tables to the tile, which a stream of unknown size cannot (libtiff's tables are
    a 4 MiB window's for every tile).
    """
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(level, source_size=0)
    return zstandard.ZstdCompressor(compression_params=params)


def predict(tile: np.ndarray, predictor: int) -> np.ndarray:
    """The tile's bytes after the TIFF predictor (tile: 2-D, one band)."""
    if predictor == 1:
        return np.ascontiguousarray(tile)
    if predictor == 2:
        a = np.ascontiguousarray(tile)
        out = np.empty_like(a)
        out[:, 0] = a[:, 0]
        np.subtract(a[:, 1:], a[:, :-1], out=out[:, 1:])  # wraps in the integer type, as libtiff
        return out
    if predictor == 3:
        h, w = tile.shape
        size = tile.dtype.itemsize
        # byte planes, most significant first (the sample bytes are little-endian in memory)
        planes = np.ascontiguousarray(tile).view(np.uint8).reshape(h, w, size)[:, :, ::-1]
        b = np.ascontiguousarray(planes.transpose(0, 2, 1)).reshape(h, w * size)
        out8 = np.empty_like(b)
        out8[:, 0] = b[:, 0]
        np.subtract(b[:, 1:], b[:, :-1], out=out8[:, 1:])
        return out8
    raise ValueError(f"TIFF predictor {predictor} is not supported")


def encode_tile(tile: np.ndarray, predictor: int, compress: str, level: int | None) -> bytes:
    """One band's full-size tile as stored in the TIFF (predictor, then compression)."""
    if tile.dtype.byteorder == ">":
        tile = tile.astype(tile.dtype.newbyteorder("<"))
    data = predict(tile, predictor)
    return compressor(compress, level)(data.tobytes() if not data.flags.c_contiguous else data.data.cast("B"))
