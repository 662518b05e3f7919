"""The COG writer's own tile path: TIFF tiles encoded on every core, assembled in the COG layout
(:class:`TileWriter`, which :class:`hsi.cog.CogSink` drives).

GDAL writes GeoTIFF tiles from one thread per dataset copy and recompresses every tile when it
copies a staging file into the COG layout (``COPY_SRC_OVERVIEWS``), even from an identically
compressed staging file. :class:`hsi.cog.CogSink` therefore encodes tiles itself, the way
libtiff does, on a thread pool while the caller reads the next window, and lets GDAL write only
what GDAL knows best: the header. The TIFF structure (IFDs, GeoTIFF keys, GDAL metadata, band
descriptions, scales, nodata, overview IFDs) comes from GDAL copying an *empty sparse* dataset of
the same shape into the COG layout (no tile is written, 0.1 s for a 2 GB cube); the tiles are then
appended after that header, smallest overview first, each level band by band in row-major order,
and the ``TileOffsets`` / ``TileByteCounts`` arrays are patched in place.

Encoding a tile (predictor, codec) is :mod:`hsi.tile_codec`; reading the header's tile arrays is
:mod:`hsi.tiff_ifds`. Edge tiles are stored full size, padded with the nodata value (or 0), as GDAL
does.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy

from hsi.tiff_ifds import IfdLayout, read_ifds
from hsi.tile_codec import COMPRESSION_CODES, encode_tile

if TYPE_CHECKING:
    from hsi.cog import CogSink

#: outputs up to this many uncompressed bytes are staged (overviews) and assembled in memory
MEMORY_STAGING_BYTES = 256 << 20
INLINE_BYTES = 1 << 20  # raw outputs up to this size are encoded without a thread pool
COPY_SHARE_BYTES = 64 << 20  # the least a thread copies when the scratch file is assembled

__all__ = ["TileStore", "TileWriter"]


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

    def assemble(
        self, header: bytes, ifds: list[IfdLayout], dst: str | os.PathLike[str], threads: int = 1
    ) -> int:
        """Write ``dst``: ``header`` with its tile arrays patched, then the tiles. Returns its size.

        Tiles kept in the scratch file are copied in the kernel (``copy_file_range``) on ``threads``
        threads, each taking a contiguous share of the output: one thread copying a 3.4 GB cube kept
        one core busy in the kernel for ~12 s at ~300 MB/s while the other core idled."""
        buf = bytearray(header)
        pos = len(buf)
        total = pos + self._end
        copies: list[tuple[int, int, int]] = []  # (scratch offset, output offset, size)
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
                        copies.append((at, pos, size))
                    offsets[i], counts[i] = pos, size
                    pos += size
                _pwritev(out, batch, batch_at)
                if counts.max(initial=0) > np.iinfo(ifd.counts_type).max:
                    raise ValueError("a tile is larger than the TIFF's TileByteCounts type holds")
                o = offsets.astype(ifd.offsets_type).tobytes()
                c = counts.astype(ifd.counts_type).tobytes()
                buf[ifd.offsets_at : ifd.offsets_at + len(o)] = o
                buf[ifd.counts_at : ifd.counts_at + len(c)] = c
            _copy_all(self._fd, out, copies, threads)
            os.pwrite(out, bytes(buf), 0)
        finally:
            os.close(out)
        return pos


def _copy_all(src: int, dst: int, copies: list[tuple[int, int, int]], threads: int) -> None:
    """Every (src offset, dst offset, size) copy, on up to ``threads`` threads, each one taking a
    contiguous run of ``copies`` of about the same number of bytes."""
    total = sum(c[2] for c in copies)
    n = max(1, min(threads, total // COPY_SHARE_BYTES))
    shares: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
    done = 0
    for c in copies:
        shares[min(n - 1, done * n // max(total, 1))].append(c)
        done += c[2]

    def run(share: list[tuple[int, int, int]]) -> None:
        for at, to, size in share:
            _copy(src, at, dst, to, size)

    if n == 1:
        run(shares[0])
        return
    with ThreadPoolExecutor(n, thread_name_prefix="cog-assemble") as pool:
        for f in [pool.submit(run, share) for share in shares]:
            f.result()


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


class _InlinePool:
    """The executor interface of :class:`TileWriter`, run on the caller's thread."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:  # recorded in the future, as a pool thread's would be
            fut.set_exception(e)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


class TileWriter:
    """The tile path of :class:`CogSink`: the header GDAL writes for an empty sparse copy of the
    sink's dataset, tiles encoded on a thread pool, then :meth:`hsi.TileStore.assemble`."""

    def __init__(self, sink: CogSink, tmp: Path) -> None:
        self.sink = sink
        m = sink.meta
        self.count, self.width, self.height = m["count"], m["width"], m["height"]
        self.dtype = np.dtype(m["dtype"])
        self.pad = pad_value(m["nodata"], self.dtype)
        # the full-resolution layout GDAL's header will have (checked against it at the end)
        self.tw = self.th = sink.profile.blocksize
        self.across, self.down = tile_grid(self.width, self.height, self.tw, self.th)
        self.compress = sink.profile.compress
        none = self.compress.upper() == "NONE"
        self.predictor = 1 if none else int(sink.profile.creation_options(m["dtype"])["predictor"])
        self.level = sink.profile.level if self.compress.upper() == "ZSTD" else None
        # small outputs keep their tiles in memory: nothing is read back to write the file
        small = sink._raw_bytes() <= MEMORY_STAGING_BYTES
        self.store = TileStore(None if small else tmp / "bin")
        n = sink.profile.num_threads
        self.threads = (os.cpu_count() or 1) if str(n).upper() == "ALL_CPUS" else max(1, int(n))
        # a tiny output (a product of a small scene) is encoded on the caller's thread: starting
        # threads would cost more than the work (the batch path runs thousands of them)
        tiny = sink._raw_bytes() <= INLINE_BYTES
        self.pool: Any = (
            _InlinePool() if tiny else ThreadPoolExecutor(self.threads, thread_name_prefix="cog-tiles")
        )
        # GDAL writes the header on a pool thread while the caller reads its first windows
        self._template_job = self.pool.submit(self._template, tmp)
        self._layout: tuple[bytes, list[IfdLayout]] | None = None
        self.partial: dict[tuple[int, int], list[Any]] = {}  # (tile row, col) -> [buffer, pixels filled]
        self.cond = threading.Condition()
        self.inflight = 0
        self.limit = max(64 << 20, 2 * self.count * self.tw * self.th * self.dtype.itemsize)
        self.futures: list[Future[None]] = []
        self.error: BaseException | None = None

    def _template(self, tmp: Path) -> tuple[bytes, list[IfdLayout]]:
        # in GDAL's memory filesystem: a few ms less than two files on disk, per output
        sink = self.sink
        with MemoryFile() as src_mem, MemoryFile() as dst_mem:
            with src_mem.open(**sink.meta, sparse_ok=True) as ds:
                sink._describe(ds)
                if sink._levels:
                    ds.build_overviews(sink._levels, Resampling[sink.overview_resampling])
            opts = sink.profile.creation_options(sink.meta["dtype"])
            opts["bigtiff"] = sink.meta["bigtiff"]
            rio_copy(src_mem.name, dst_mem.name, copy_src_overviews=True, sparse_ok=True, **opts)
            header = bytes(dst_mem.getbuffer())
        ifds = read_ifds(header)
        code = COMPRESSION_CODES[sink.profile.compress.upper()]
        main = ifds[0]
        if (
            len(ifds) != 1 + len(sink._levels)
            or (main.width, main.height) != (self.width, self.height)
            or any(i.compression != code for i in ifds)
            or any(i.planar != 2 and self.count > 1 for i in ifds)
            or any(i.n_tiles != self.count * i.tiles_across * i.tiles_down for i in ifds)
        ):
            raise ValueError(f"{sink.dst.name}: unexpected TIFF layout from GDAL's header")
        for i in ifds:
            if np.frombuffer(header, i.offsets_type, i.n_tiles, i.offsets_at).any():
                raise ValueError(f"{sink.dst.name}: GDAL's header is not empty")
        if (main.tile_width, main.tile_height, main.predictor) != (self.tw, self.th, self.predictor):
            raise ValueError(
                f"{sink.dst.name}: GDAL's header has {main.tile_width}x{main.tile_height} tiles, predictor "
                f"{main.predictor}; the tiles were encoded as {self.tw}x{self.th}, predictor {self.predictor}"
            )
        return header, ifds

    def _header(self) -> tuple[bytes, list[IfdLayout]]:
        if self._layout is None:
            self._layout = self._template_job.result()
        return self._layout

    # -- full resolution ------------------------------------------------------------------------
    def write(self, array: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        (r0, r1), (c0, c1) = rows, cols
        tw, th = self.tw, self.th
        for tr in range(r0 // th, (r1 - 1) // th + 1):
            tr0, tr1 = tr * th, min((tr + 1) * th, self.height)
            for tc in range(c0 // tw, (c1 - 1) // tw + 1):
                tc0, tc1 = tc * tw, min((tc + 1) * tw, self.width)
                ir0, ir1, ic0, ic1 = max(r0, tr0), min(r1, tr1), max(c0, tc0), min(c1, tc1)
                part = array[:, ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0]
                key = (tr, tc)
                whole = (ir0, ir1, ic0, ic1) == (tr0, tr1, tc0, tc1)
                if whole and key not in self.partial:
                    self._submit(0, tr * self.across + tc, part, self.across * self.down)
                    continue
                entry = self.partial.get(key)
                if entry is None:
                    entry = self.partial[key] = [np.full((self.count, th, tw), self.pad, self.dtype), 0]
                entry[0][:, ir0 - tr0 : ir1 - tr0, ic0 - tc0 : ic1 - tc0] = part
                entry[1] += (ir1 - ir0) * (ic1 - ic0)
                if entry[1] >= (tr1 - tr0) * (tc1 - tc0):
                    del self.partial[key]
                    self._submit(0, tr * self.across + tc, entry[0], self.across * self.down)

    def _submit(self, level: int, tile: int, block: np.ndarray, per_band: int) -> None:
        """Encode one tile position of every band (``block``: bands x rows x cols, maybe partial)."""
        self._raise()
        nbytes = block.nbytes
        with self.cond:
            while self.inflight and self.inflight + nbytes > self.limit:
                self.cond.wait()
            self.inflight += nbytes
        # bands in chunks of ~8 MB of encoded tiles (an edge tile is encoded at full size, padded), so
        # every thread works on the tile in hand
        step = max(1, (8 << 20) // max(block[0].nbytes, self.th * self.tw * self.dtype.itemsize))
        for b0 in range(0, block.shape[0], step):
            chunk = block[b0 : b0 + step]
            fut = self.pool.submit(self._encode, level, tile, b0, chunk, per_band)
            fut.add_done_callback(self._done(chunk.nbytes))
            self.futures.append(fut)
        if len(self.futures) > 4096:
            self.futures = [f for f in self.futures if not f.done()]

    def _done(self, nbytes: int) -> Callable[[Future[None]], None]:
        def release(fut: Future[None]) -> None:
            with self.cond:
                self.inflight -= nbytes
                if not fut.cancelled() and fut.exception() is not None and self.error is None:
                    self.error = fut.exception()
                self.cond.notify_all()

        return release

    def _encode(self, level: int, tile: int, b0: int, chunk: np.ndarray, per_band: int) -> None:
        if level:  # overview tiles are submitted once the header is known
            ifd = self._header()[1][level]
            th, tw, predictor = ifd.tile_height, ifd.tile_width, ifd.predictor
        else:
            th, tw, predictor = self.th, self.tw, self.predictor
        for k in range(chunk.shape[0]):
            t = chunk[k]
            if t.shape != (th, tw):
                full = np.full((th, tw), self.pad, self.dtype)
                full[: t.shape[0], : t.shape[1]] = t
                t = full
            data = encode_tile(t, predictor, self.compress, self.level)
            self.store.add(level, (b0 + k) * per_band + tile, data)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    # -- overviews and the end ------------------------------------------------------------------
    def add_overviews(self, staging: str) -> None:
        """Encode the overview levels GDAL built in the staging file."""
        ifds = self._header()[1]
        for level in range(1, len(ifds)):
            ifd = ifds[level]
            with rasterio.open(staging, overview_level=level - 1) as ov:
                if (ov.width, ov.height) != (ifd.width, ifd.height):
                    raise ValueError(
                        f"overview {level}: {ov.width}x{ov.height}, header {ifd.width}x{ifd.height}"
                    )
                data = ov.read()
            per_band = ifd.tiles_across * ifd.tiles_down
            for tr in range(ifd.tiles_down):
                for tc in range(ifd.tiles_across):
                    block = data[
                        :,
                        tr * ifd.tile_height : (tr + 1) * ifd.tile_height,
                        tc * ifd.tile_width : (tc + 1) * ifd.tile_width,
                    ]
                    self._submit(level, tr * ifd.tiles_across + tc, block, per_band)

    def finish(self, part: Path) -> None:
        if self.partial:
            raise ValueError(f"{self.sink.dst.name}: {len(self.partial)} tiles were written only in part")
        header, ifds = self._header()
        for fut in self.futures:
            fut.result()
        self.pool.shutdown(wait=True)
        self.store.assemble(header, ifds, part, self.threads)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()
