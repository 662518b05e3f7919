"""Local-directory object store (the embedded default).

Writes go to ``.<name>.<owner token>.<random>.part`` next to the target and are renamed into place.
The owner token (:func:`hsi.scratch.owner_token`) lets :meth:`LocalStore.abort_stale_uploads` delete
the partial files of a writer that died (``kill -9``) without touching a live writer's.
"""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from hsi.errors import StorageError
from hsi.scratch import owner_token, token_alive
from hsi.storage.base import ObjectInfo, file_checksum

FILE_MODE = 0o644  # published files: readable by other users and web servers (whatever the umask)
DIR_MODE = 0o755


def make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new directories are ``DIR_MODE`` regardless of the umask."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)


class LocalStore:
    """Objects are files below a root directory; URIs are absolute paths.

    Files are written ``0644`` and the directories the store creates ``0755`` (a catalog and its
    assets are meant to be published), independent of the process umask.
    """

    def __init__(self, root: str | Path) -> None:
        root_s = str(root)
        if root_s.startswith("file://"):
            root_s = root_s[len("file://") :]
        self._root = Path(root_s).expanduser().resolve()

    @property
    def root(self) -> str:
        return str(self._root)

    def uri(self, *parts: str) -> str:
        return str(self._root.joinpath(*[p.strip("/") for p in parts]))

    def _path(self, uri: str) -> Path:
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        return Path(uri)

    def _atomic_target(self, dest: Path) -> tuple[int, str]:
        make_dirs(dest.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{owner_token()}.", suffix=".part", dir=dest.parent)
        os.fchmod(fd, FILE_MODE)  # mkstemp creates 0600
        return fd, tmp

    def put_file(self, local: Path, uri: str, content_type: str | None = None) -> ObjectInfo:
        dest = self._path(uri)
        local = Path(local)
        if not local.is_file():
            raise StorageError(str(local), "source file does not exist")
        checksum = file_checksum(local)
        if dest.resolve() == local.resolve():
            return ObjectInfo(uri, dest.stat().st_size, checksum)
        fd, tmp = self._atomic_target(dest)
        os.close(fd)
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, dest)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(uri, f"write failed: {e}") from e
        return ObjectInfo(uri, dest.stat().st_size, checksum)

    def put_bytes(self, data: bytes, uri: str, content_type: str | None = None) -> ObjectInfo:
        import hashlib

        from hsi.storage.base import multihash_sha256

        dest = self._path(uri)
        fd, tmp = self._atomic_target(dest)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(uri, f"write failed: {e}") from e
        return ObjectInfo(uri, len(data), multihash_sha256(hashlib.sha256(data).hexdigest()))

    def get_bytes(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def get_file(self, uri: str, local: Path, *, expect: ObjectInfo | None = None) -> Path:
        src = self._path(uri)
        if not src.is_file():
            raise FileNotFoundError(uri)
        local = Path(local)
        if src.resolve() != local.resolve():
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, local)
        return local

    def stat(self, uri: str, checksum: bool = False) -> ObjectInfo | None:
        p = self._path(uri)
        if not p.is_file():
            return None
        return ObjectInfo(uri, p.stat().st_size, file_checksum(p) if checksum else None)

    def delete(self, uri: str) -> bool:
        p = self._path(uri)
        if p.is_file():
            p.unlink()
            return True
        return False

    def list(self, prefix_uri: str) -> Iterator[str]:
        base = self._path(prefix_uri)
        if base.is_file():
            yield str(base)
            return
        if not base.is_dir():
            return
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.endswith(".part"):
                yield str(p)

    def incomplete_uploads(self, prefix_uri: str) -> builtins.list[tuple[str, str, float]]:
        """Partial files below ``prefix_uri``: (path, owner token, age in seconds)."""
        base = self._path(prefix_uri)
        out: builtins.list[tuple[str, str, float]] = []
        if not base.is_dir():
            return out
        now = time.time()
        for p in base.rglob(".*.part"):
            parts = p.name[: -len(".part")].split(".")
            token = next((t for t in parts if t.count("~") == 2), "")
            try:
                out.append((str(p), token, now - p.stat().st_mtime))
            except OSError:
                continue
        return out

    def abort_stale_uploads(self, prefix_uri: str, older_than_s: float) -> builtins.list[str]:
        """Delete partial files below ``prefix_uri`` whose writer is dead, or older than ``older_than_s``."""
        removed = []
        for path, token, age in self.incomplete_uploads(prefix_uri):
            if token_alive(token) is False or age >= older_than_s:
                Path(path).unlink(missing_ok=True)
                removed.append(path)
        return removed

    def gdal_path(self, uri: str) -> str:
        return str(self._path(uri))

    def gdal_env(self) -> dict[str, str]:
        return {}
