"""Random access to a remote object in cached, aligned blocks fetched by ranged reads.

For readers that jump around a file and read each spot more than once (HDF5/netCDF4 metadata: the
superblock, object headers, B-trees and heaps are spread through the file). :class:`RangedBlocks`
fetches a block of ``block_size`` bytes the first time any byte of it is read, keeps it, and
serves every later read from memory; a read that spans several missing blocks fetches them in one
ranged read. It counts the ranged reads and the bytes they returned, and :meth:`RangedBlocks.open`
gives seekable binary file objects over it (h5py accepts Python file objects).

A read that fails (the object changed: ETag differs; the server is unreachable) raises, and the
first such error is also kept in :attr:`RangedBlocks.error`: a caller whose reader might swallow
exceptions from a file object (a C library calling back into Python) re-raises it afterwards.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from hsi.errors import StorageError

__all__ = ["DEFAULT_BLOCK_SIZE", "RangedBlocks", "RangedRaw"]

DEFAULT_BLOCK_SIZE = 256 << 10


class RangedBlocks:
    """The bytes of one object of ``size`` bytes, fetched on demand by ``read_range(start, length)``."""

    def __init__(
        self,
        read_range: Callable[[int, int], bytes],
        size: int,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        name: str = "",
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block size must be positive, got {block_size}")
        self._read_range = read_range
        self.size = int(size)
        self.block_size = int(block_size)
        self.name = name
        self._blocks: dict[int, bytes] = {}
        self.gets = 0  # ranged reads sent
        self.bytes_read = 0  # bytes they returned
        self.error: BaseException | None = None

    def read(self, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` (cut at the end of the object)."""
        end = min(self.size, start + max(0, length))
        if start < 0 or start >= end:
            return b""
        bs = self.block_size
        first, last = start // bs, (end - 1) // bs
        try:
            self._fetch(first, last)
        except BaseException as e:
            if self.error is None:
                self.error = e
            raise
        data = b"".join(self._blocks[i] for i in range(first, last + 1))
        return data[start - first * bs : end - first * bs]

    def _fetch(self, first: int, last: int) -> None:
        """Fetch the missing blocks of ``first..last``, one ranged read per run of missing blocks."""
        bs = self.block_size
        i = first
        while i <= last:
            if i in self._blocks:
                i += 1
                continue
            j = i
            while j + 1 <= last and j + 1 not in self._blocks:
                j += 1
            lo, hi = i * bs, min(self.size, (j + 1) * bs)
            data = self._read_range(lo, hi - lo)
            self.gets += 1
            self.bytes_read += len(data)
            if len(data) != hi - lo:
                raise StorageError(self.name, f"short ranged read: {len(data)} of {hi - lo} bytes at {lo}")
            for k in range(i, j + 1):
                self._blocks[k] = data[(k - i) * bs : (k - i + 1) * bs]
            i = j + 1

    def ranges(self) -> list[tuple[int, int]]:
        """The fetched byte ranges ``(start, end)``, merged and sorted."""
        out: list[tuple[int, int]] = []
        for k in sorted(self._blocks):
            lo, hi = k * self.block_size, min(self.size, (k + 1) * self.block_size)
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out

    def open(self) -> io.RawIOBase:
        """A seekable binary file object over the object's bytes (its own position; shared blocks).
        Unbuffered: a read asks for exactly its bytes, no read-ahead past them."""
        return RangedRaw(self.read, self.size)


class RangedRaw(io.RawIOBase):
    """A seekable raw binary reader over ``read_at(start, length) -> bytes`` of an object of ``size``
    bytes (each read asks for exactly its bytes: wrap it in ``io.BufferedReader`` for read-ahead)."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self._read_at, self._size, self._pos = read_at, int(size), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._read_at(self._pos, n)
        memoryview(buf).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)
