"""RangedBlocks: cached, aligned ranged reads of one object (what an s3:// EMIT granule's metadata is
read through), on an in-memory object and on a real EMIT granule's bytes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hsi.errors import StorageError, StorageUnavailableError
from hsi.sources import read_scene
from hsi.sources.emit import EmitSource
from hsi.sources.emit_synth import synthesize_emit
from hsi.storage.blocks import RangedBlocks


def _object(n: int) -> bytes:
    return random.Random(7).randbytes(n)


def test_reads_are_the_objects_bytes_fetched_once_per_block() -> None:
    data = _object(10_000)
    calls: list[tuple[int, int]] = []

    def read_range(start: int, length: int) -> bytes:
        calls.append((start, length))
        return data[start : start + length]

    b = RangedBlocks(read_range, len(data), block_size=1000)
    rng = random.Random(1)
    for _ in range(300):
        s, n = rng.randrange(0, 11_000), rng.randrange(0, 2500)
        assert b.read(s, n) == data[s : s + n]
    with b.open() as f:
        f.seek(-10, 2)
        assert f.read() == data[-10:] and f.tell() == len(data) and f.read(5) == b""
    fetched = sorted(calls)
    assert all(s % 1000 == 0 for s, _ in fetched)  # aligned
    covered = [i for s, n in fetched for i in range(s // 1000, (s + n + 999) // 1000)]
    assert len(covered) == len(set(covered)) == 10  # every block once, never twice
    assert b.gets == len(calls) and b.bytes_read == len(data) and b.ranges() == [(0, len(data))]


def test_a_read_over_several_missing_blocks_is_one_ranged_read() -> None:
    data = _object(8_000)
    calls: list[tuple[int, int]] = []
    b = RangedBlocks(lambda s, n: calls.append((s, n)) or data[s : s + n], len(data), block_size=1000)
    assert b.read(2500, 10) == data[2500:2510] and calls == [(2000, 1000)]
    assert b.read(1500, 3000) == data[1500:4500]  # blocks 1 and 3, 4 missing; 2 cached
    assert calls == [(2000, 1000), (1000, 1000), (3000, 2000)]
    assert b.ranges() == [(1000, 5000)]


def test_a_short_or_failed_read_raises_and_is_kept() -> None:
    b = RangedBlocks(lambda s, n: b"x" * (n - 1), 5000, block_size=1000, name="s3://b/k")
    with pytest.raises(StorageError, match="short ranged read"):
        b.read(0, 10)
    assert isinstance(b.error, StorageError)

    def down(start: int, length: int) -> bytes:
        raise StorageUnavailableError("s3://b/k", "cannot reach S3")

    b = RangedBlocks(down, 5000)
    with pytest.raises(StorageUnavailableError), b.open() as f:
        f.read(1)
    assert isinstance(b.error, StorageUnavailableError)


@pytest.mark.parametrize("level", ["l1b", "l2a"])
def test_the_emit_reader_on_blocks_reads_what_it_reads_from_the_file(tmp_path: Path, level: str) -> None:
    """The EMIT reader through RangedBlocks gives the metadata it reads from the file on disk, from
    a small share of it; a store error during the read reaches the caller as itself."""
    nc = synthesize_emit(tmp_path, level=level, crosstrack=48, downtrack=96, seed=2)  # type: ignore[arg-type]
    data = nc.read_bytes()
    b = RangedBlocks(lambda s, n: data[s : s + n], len(data), block_size=64 << 10)
    with b.open() as f:
        meta = EmitSource().read(nc, fileobj=f)
    assert meta == read_scene(nc)
    assert b.bytes_read < len(data) / 4 and b.gets <= 6

    def flaky(start: int, length: int) -> bytes:
        if start > 0:
            raise StorageUnavailableError("s3://b/k", "cannot reach S3")
        return data[start : start + length]

    b = RangedBlocks(flaky, len(data), block_size=64 << 10)
    with pytest.raises(StorageUnavailableError), b.open() as f:
        EmitSource().read(nc, fileobj=f)
