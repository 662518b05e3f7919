"""URI-based object storage: the protocol and shared helpers.

A store is rooted at a URI (a local directory or ``s3://bucket/prefix``). Writes are atomic per
object (readers never see a partial object) and return the size and a multihash sha2-256 checksum
(the form of the STAC file extension's ``file:checksum``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK = 8 * 1024 * 1024
SHA256_MULTIHASH_PREFIX = "1220"  # multihash: 0x12 = sha2-256, 0x20 = 32 bytes


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    checksum: str | None  # multihash hex ("1220" + sha256 hex) when known
    etag: str | None = None  # the server's entity tag (S3: changes whenever the content does)
    version_id: str | None = None  # S3 object version (versioned buckets)

    @property
    def identity(self) -> str:
        """What decides whether a copy is still this object: size + ETag/version (or checksum)."""
        parts = [f"size:{self.size}"]
        if self.version_id:
            parts.append(f"version:{self.version_id}")
        if self.etag:
            parts.append(f"etag:{self.etag}")
        elif self.checksum:
            parts.append(f"sha256:{self.checksum}")
        return ";".join(parts)


def multihash_sha256(hexdigest: str) -> str:
    return SHA256_MULTIHASH_PREFIX + hexdigest


def file_checksum(path: Path | str, chunk: int = CHUNK) -> str:
    """Multihash sha2-256 of a local file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return multihash_sha256(h.hexdigest())


def stream_checksum(f: BinaryIO, chunk: int = CHUNK) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for block in iter(lambda: f.read(chunk), b""):
        h.update(block)
        n += len(block)
    return n, multihash_sha256(h.hexdigest())


@runtime_checkable
class ObjectStore(Protocol):
    """Object I/O by URI. Implementations: LocalStore (directories), S3Store (s3://)."""

    @property
    def root(self) -> str:
        """Root URI of this store (no credentials)."""
        ...

    def uri(self, *parts: str) -> str:
        """URI of a key below the root."""
        ...

    def put_file(self, local: Path, uri: str, content_type: str | None = None) -> ObjectInfo:
        """Upload/copy a local file atomically; returns its size and checksum."""
        ...

    def put_bytes(self, data: bytes, uri: str, content_type: str | None = None) -> ObjectInfo: ...

    def get_bytes(self, uri: str) -> bytes:
        """Object content; raises FileNotFoundError when absent."""
        ...

    def get_file(self, uri: str, local: Path, *, expect: ObjectInfo | None = None) -> Path:
        """Download to ``local``; with ``expect`` (an earlier :meth:`stat`), only that exact object."""
        ...

    def stat(self, uri: str, checksum: bool = False) -> ObjectInfo | None:
        """Size (and checksum when ``checksum`` or cheaply known) or None when absent."""
        ...

    def delete(self, uri: str) -> bool: ...

    def list(self, prefix_uri: str) -> Iterator[str]:
        """URIs of the objects below a prefix."""
        ...

    def gdal_path(self, uri: str) -> str:
        """A path GDAL/rasterio can open for ranged reads (local path or /vsis3/...)."""
        ...

    def gdal_env(self) -> dict[str, str]:
        """GDAL config options needed to read this store's objects (no secrets)."""
        ...
