"""The COG writer's own tile path: TIFF tiles encoded on every core, assembled in the COG layout.

GDAL writes GeoTIFF tiles from one thread per dataset copy and recompresses every tile when it
copies a staging file into the COG layout (``COPY_SRC_OVERVIEWS``), even from an identically
compressed staging file. :class:`hsi.cog.CogSink` therefore encodes tiles itself, the way
libtiff does, on a thread pool while the caller reads the next window, and lets GDAL write only
what GDAL knows best: the header. The TIFF structure (IFDs, GeoTIFF keys, GDAL metadata, band
descriptions, scales, nodata, overview IFDs) comes from GDAL copying an *empty sparse* dataset of
the same shape into the COG layout (no tile is written, 0.1 s for a 2 GB cube); the tiles are then
appended after that header, smallest overview first, each level band by band in row-major order,
and the ``TileOffsets`` / ``TileByteCounts`` arrays are patched in place.

Encoding follows the TIFF 6.0 specification and libtiff, so GDAL (and any TIFF reader) decodes
the tiles to the same pixels the old GDAL path wrote (``tests/unit/test_cog_tiles.py`` compares
both writers' outputs pixel for pixel, band metadata and all):

* predictor 2 (horizontal differencing): per tile row, each sample minus its left neighbour,
  wrapping in the sample's integer type;
* predictor 3 (floating point, Adobe TIFF Technical Note 3 / libtiff ``fpDiff``): per tile row,
  the sample bytes are split into planes, most significant byte first, then differenced byte by
  byte over the row;
* ZSTD (TIFF compression 50000, one zstd frame per tile, GDAL's ``ZSTD_LEVEL``) or DEFLATE
  (compression 8, a zlib stream per tile) or none.

Edge tiles are stored full size, padded with the nodata value (or 0), as GDAL does.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "COMPRESSION_CODES",
    "IfdLayout",
    "TileStore",
    "encode_tile",
    "read_ifds",
    "supported",
]

#: TIFF Compression tag values of the codecs this module encodes
COMPRESSION_CODES = {"NONE": 1, "DEFLATE": 8, "ZSTD": 50000}

_TYPES: dict[int, np.dtype[Any]] = {3: np.dtype("<u2"), 4: np.dtype("<u4"), 16: np.dtype("<u8")}
_TAG_WIDTH, _TAG_LENGTH, _TAG_COMPRESSION = 256, 257, 259
_TAG_TILE_W, _TAG_TILE_H, _TAG_OFFSETS, _TAG_COUNTS = 322, 323, 324, 325
_TAG_PLANAR, _TAG_PREDICTOR = 284, 317


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


def _compressor(compress: str, level: int | None) -> Callable[[bytes | memoryview], bytes]:
    name = compress.upper()
    if name == "NONE":
        return bytes
    if name == "DEFLATE":
        lvl = 6 if level is None else level
        return lambda b: zlib.compress(b, lvl)
    key = ("zstd", level)
    c = getattr(_local, "zstd", None)
    if c is None or c[0] != key:
        import zstandard

        c = (key, zstandard.ZstdCompressor(level=9 if level is None else level))
        _local.zstd = c
    comp = c[1]
    return comp.compress


def _predict(tile: np.ndarray, predictor: int) -> np.ndarray:
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
    data = _predict(tile, predictor)
    return _compressor(compress, level)(
        data.tobytes() if not data.flags.c_contiguous else data.data.cast("B")
    )


@dataclass(frozen=True)
class IfdLayout:
    """Where one IFD of a template keeps its tile arrays, and the image it describes."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    planar: int
    compression: int
    predictor: int
    offsets_at: int  # byte position of the TileOffsets values
    offsets_type: np.dtype[Any]
    counts_at: int
    counts_type: np.dtype[Any]
    n_tiles: int

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        return -(-self.height // self.tile_height)


def read_ifds(header: bytes) -> list[IfdLayout]:
    """The IFD chain of a little-endian TIFF or BigTIFF held in ``header``, in file order."""
    if header[:2] != b"II":
        raise ValueError("not a little-endian TIFF")
    (magic,) = struct.unpack_from("<H", header, 2)
    big = magic == 43
    if not big and magic != 42:
        raise ValueError("not a TIFF")
    if big:
        (ifd,) = struct.unpack_from("<Q", header, 8)
        count_fmt, entry_fmt, entry_size, inline = "<Q", "<HHQ", 20, 8
    else:
        (ifd,) = struct.unpack_from("<I", header, 4)
        count_fmt, entry_fmt, entry_size, inline = "<H", "<HHI", 12, 4
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 16: 8}
    out = []
    while ifd:
        (n,) = struct.unpack_from(count_fmt, header, ifd)
        pos = ifd + struct.calcsize(count_fmt)
        tags: dict[int, tuple[int, int, int]] = {}  # tag -> (type, count, value position)
        for k in range(n):
            e = pos + k * entry_size
            tag, typ, cnt = struct.unpack_from(entry_fmt, header, e)
            vpos = e + struct.calcsize(entry_fmt)
            if cnt * sizes.get(typ, 8) > inline:
                (vpos,) = struct.unpack_from("<Q" if big else "<I", header, vpos)
            tags[tag] = (typ, cnt, vpos)
        (ifd,) = struct.unpack_from("<Q" if big else "<I", header, pos + n * entry_size)

        def scalar(tag: int, default: int | None = None, tags: dict[int, tuple[int, int, int]] = tags) -> int:
            if tag not in tags:
                if default is None:
                    raise ValueError(f"TIFF tag {tag} missing")
                return default
            typ, _, vpos = tags[tag]
            return int(np.frombuffer(header, _TYPES[typ], 1, vpos)[0])

        if _TAG_OFFSETS not in tags or _TAG_COUNTS not in tags:
            raise ValueError("not a tiled TIFF")
        otyp, ocnt, opos = tags[_TAG_OFFSETS]
        ctyp, ccnt, cpos = tags[_TAG_COUNTS]
        if ocnt != ccnt or otyp not in _TYPES or ctyp not in _TYPES:
            raise ValueError("unexpected tile arrays")
        out.append(
            IfdLayout(
                width=scalar(_TAG_WIDTH),
                height=scalar(_TAG_LENGTH),
                tile_width=scalar(_TAG_TILE_W),
                tile_height=scalar(_TAG_TILE_H),
                planar=scalar(_TAG_PLANAR, 1),
                compression=scalar(_TAG_COMPRESSION, 1),
                predictor=scalar(_TAG_PREDICTOR, 1),
                offsets_at=opos,
                offsets_type=_TYPES[otyp],
                counts_at=cpos,
                counts_type=_TYPES[ctyp],
                n_tiles=ocnt,
            )
        )
    return out


class TileStore:
    """Encoded tiles, kept in any order from any thread: in memory, or appended to a scratch file.

    ``add(level, index, data)`` stores one tile (``index`` = band * tiles_per_band + row-major
    tile number, the TIFF's own order for separate planes). :meth:`assemble` writes the final file:
    the template header, then every level's tiles (last IFD first), patching the tile arrays.
    With ``path=None`` the tiles stay in memory (small outputs: the result is written without
    reading anything back).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._fd = -1 if self.path is None else os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._end = 0
        self._lock = threading.Lock()
        self._mem: dict[tuple[int, int], bytes] = {}
        self.where: dict[tuple[int, int], tuple[int, int]] = {}  # (level, index) -> (offset, size)

    def add(self, level: int, index: int, data: bytes) -> None:
        with self._lock:
            at = self._end
            self._end += len(data)
            self.where[(level, index)] = (at, len(data))
            if self._fd < 0:
                self._mem[(level, index)] = data
                return
        os.pwrite(self._fd, data, at)

    @property
    def nbytes(self) -> int:
        return self._end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._mem.clear()

    def assemble(self, header: bytes, ifds: list[IfdLayout], dst: str | os.PathLike[str]) -> int:
        """Write ``dst``: ``header`` with its tile arrays patched, then the tiles. Returns its size."""
        buf = bytearray(header)
        pos = len(buf)
        total = pos + self._end
        out = os.open(os.fspath(dst), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            # the IFDs precede all tile data; the smallest level's data comes first (COG layout)
            for level in range(len(ifds) - 1, -1, -1):
                ifd = ifds[level]
                if ifd.offsets_type.itemsize == 4 and total >= 2**32:
                    raise ValueError("the COG exceeds 4 GiB in a classic TIFF: BigTIFF is needed")
                offsets = np.zeros(ifd.n_tiles, np.uint64)
                counts = np.zeros(ifd.n_tiles, np.uint64)
                batch: list[bytes] = []
                batch_at = pos
                for i in range(ifd.n_tiles):
                    at, size = self.where[(level, i)]
                    if self._fd < 0:
                        batch.append(self._mem[(level, i)])
                        if len(batch) >= 512:
                            _pwritev(out, batch, batch_at)
                            batch, batch_at = [], pos + size
                    else:
                        _copy(self._fd, at, out, pos, size)
                    offsets[i], counts[i] = pos, size
                    pos += size
                _pwritev(out, batch, batch_at)
                if counts.max(initial=0) > np.iinfo(ifd.counts_type).max:
                    raise ValueError("a tile is larger than the TIFF's TileByteCounts type holds")
                o = offsets.astype(ifd.offsets_type).tobytes()
                c = counts.astype(ifd.counts_type).tobytes()
                buf[ifd.offsets_at : ifd.offsets_at + len(o)] = o
                buf[ifd.counts_at : ifd.counts_at + len(c)] = c
            os.pwrite(out, bytes(buf), 0)
        finally:
            os.close(out)
        return pos


def _pwritev(fd: int, parts: list[bytes], at: int) -> None:
    while parts:
        n = os.pwritev(fd, parts, at)
        at += n
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts = parts[1:]
        if parts and n:
            parts = [parts[0][n:], *parts[1:]]


def _copy(src: int, src_at: int, dst: int, dst_at: int, size: int) -> None:
    done = 0
    while done < size:
        n = os.copy_file_range(src, dst, size - done, src_at + done, dst_at + done)
        if n <= 0:  # pragma: no cover - a filesystem without copy_file_range falls back
            data = os.pread(src, size - done, src_at + done)
            os.pwrite(dst, data, dst_at + done)
            n = len(data)
        done += n


def tile_grid(width: int, height: int, tile_w: int, tile_h: int) -> tuple[int, int]:
    """Tiles across and down."""
    return -(-width // tile_w), -(-height // tile_h)


def pad_value(nodata: float | None, dtype: Any) -> Any:
    """What the area of an edge tile outside the image holds."""
    if nodata is None:
        return 0
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        if not (info.min <= nodata <= info.max) or nodata != int(nodata):
            return 0
        return int(nodata)
    return nodata
