"""The tile arrays of a TIFF header: where each IFD keeps its ``TileOffsets`` and ``TileByteCounts``
(:func:`read_ifds`), so :mod:`hsi.tiles` can patch them after appending the tiles."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IfdLayout", "read_ifds"]

_TYPES: dict[int, np.dtype[Any]] = {3: np.dtype("<u2"), 4: np.dtype("<u4"), 16: np.dtype("<u8")}
_TAG_WIDTH, _TAG_LENGTH, _TAG_COMPRESSION = 256, 257, 259
_TAG_TILE_W, _TAG_TILE_H, _TAG_OFFSETS, _TAG_COUNTS = 322, 323, 324, 325
_TAG_PLANAR, _TAG_PREDICTOR = 284, 317


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
