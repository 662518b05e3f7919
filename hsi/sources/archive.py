"""Safe extraction of scene archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``).

Every member is checked before anything is written: absolute names, ``..`` components, links,
devices and names that would resolve outside the destination are refused
(:class:`~hsi.errors.UnsupportedSourceError` naming the archive and the member). Extraction is
idempotent: an archive already extracted completely into the same directory is not re-extracted.

Expansion is bounded (:class:`ArchiveLimits`): the number of members, the total extracted bytes and
the expansion ratio (extracted / archive bytes) are checked against the members' declared sizes
before anything is written, and the bytes actually written are counted as they are copied. A
failed extraction leaves nothing behind.

:func:`extract_headers` is what indexing uses: it reads the archive as a stream and writes only the
small metadata members (``.hdr``, ``.gain``, ``.spc``); every other file becomes a sparse
placeholder of its declared size, so a header parser sees the scene's layout without a byte of
pixel data being written.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from hsi.errors import UnsupportedSourceError

__all__ = ["ARCHIVE_SUFFIXES", "ArchiveLimits", "archive_stem", "extract", "extract_headers", "is_archive"]

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_DONE = ".extracted"
GiB = 1 << 30
#: members :func:`extract_headers` writes (everything else becomes a sparse placeholder)
METADATA_SUFFIXES = (".hdr", ".gain", ".spc")
_MAX_METADATA_MEMBER = 64 << 20  # a header or sidecar larger than this is not a header


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one archive may expand to (zip/tar bombs); ``None`` disables a bound."""

    max_bytes: int | None = 512 * GiB  # total extracted bytes (an AVIRIS-NG flight line: <= ~60 GB)
    max_ratio: float | None = 200.0  # extracted bytes / archive bytes (real cubes compress 1.2-20x)
    max_members: int | None = 10_000

    def check(self, archive: object, members: int, total: int, archive_size: int | None) -> None:
        """Raise :class:`UnsupportedSourceError` naming ``archive`` when a bound is exceeded."""
        if self.max_members is not None and members > self.max_members:
            raise UnsupportedSourceError(
                f"{archive}: {members} members exceed the limit of {self.max_members} "
                f"(archive_limits.max_members); refusing to extract"
            )
        if self.max_bytes is not None and total > self.max_bytes:
            raise UnsupportedSourceError(
                f"{archive}: expands to {total} bytes, over the limit of {self.max_bytes} "
                f"(archive_limits.max_bytes); refusing to extract"
            )
        if self.max_ratio is not None and archive_size and total > self.max_ratio * archive_size:
            raise UnsupportedSourceError(
                f"{archive}: expands {total / archive_size:.0f}x ({archive_size} -> {total} bytes), over the "
                f"limit of {self.max_ratio:g}x (archive_limits.max_ratio); refusing to extract"
            )


def is_archive(path: Path | str) -> bool:
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def archive_stem(path: Path | str) -> str:
    """``ang20150420t182050_rfl_v2p9.tar.gz`` -> ``ang20150420t182050_rfl_v2p9``."""
    name = Path(path).name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_name(archive: object, name: str) -> PurePosixPath:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsupportedSourceError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if any(part == ".." for part in pure.parts):
        raise UnsupportedSourceError(f"{archive}: member {name!r} escapes the destination ('..'); refusing")
    return pure


def _inside(dest: Path, rel: PurePosixPath, archive: object, name: str) -> Path:
    target = (dest / Path(*rel.parts)).resolve() if rel.parts else dest
    if target != dest and dest not in target.parents:
        raise UnsupportedSourceError(f"{archive}: member {name!r} resolves outside {dest}; refusing")
    return target


def extract(archive: Path | str, dest_dir: Path | str, limits: ArchiveLimits | None = None) -> Path:
    """Extract ``archive`` into ``dest_dir/<archive stem>/`` safely and return that directory.

    ``limits`` bound the expansion (default: :class:`ArchiveLimits` ()); on any failure nothing is left.
    """
    limits = limits or ArchiveLimits()
    archive = Path(archive)
    if not archive.is_file():
        raise UnsupportedSourceError(f"{archive}: archive not found")
    if not is_archive(archive):
        raise UnsupportedSourceError(f"{archive}: not a supported archive ({', '.join(ARCHIVE_SUFFIXES)})")
    dest = (Path(dest_dir) / archive_stem(archive)).resolve()
    marker = dest / _DONE
    stamp = f"{archive.stat().st_size}:{archive.stat().st_mtime_ns}"
    if marker.is_file() and marker.read_text() == stamp:
        log.info("archive %s already extracted into %s", archive, dest)
        return dest
    # extract into a private staging directory, then rename into place: concurrent runs never
    # see (or delete) each other's half-extracted files
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, staging, limits)
        else:
            _extract_tar(archive, staging, limits)
        (staging / _DONE).write_text(stamp)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UnsupportedSourceError(f"{archive}: cannot read archive ({exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if dest.exists() and not (marker.is_file() and marker.read_text() == stamp):
        shutil.rmtree(dest, ignore_errors=True)  # partial or stale extraction of an older archive
    try:
        os.rename(staging, dest)
    except OSError:  # another run finished first with the same archive: use its copy
        shutil.rmtree(staging, ignore_errors=True)
        if not (marker.is_file() and marker.read_text() == stamp):
            raise
    log.info("extracted %s into %s", archive, dest)
    return dest


#: a validated member: (target path inside dest, is a directory, opens its content)
_Member = tuple[Path, bool, Callable[[], IO[bytes] | None]]


def _copy_bounded(src: IO[bytes], out: IO[bytes], budget: int | None, archive: object) -> int:
    """Copy ``src`` to ``out``; raise once more than ``budget`` bytes were read (None: no bound)."""
    n = 0
    while block := src.read(8 << 20):
        n += len(block)
        if budget is not None and n > budget:
            raise UnsupportedSourceError(
                f"{archive}: a member expands beyond its declared size or the extraction limit "
                f"(archive_limits.max_bytes); refusing to extract"
            )
        out.write(block)
    return n


def _write_members(members: list[_Member], budget: int | None, archive: object) -> None:
    """Write members that were all validated first (nothing is written for a bad archive); at most
    ``budget`` bytes in total, counted as they are written."""
    for target, is_dir, open_src in members:
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = open_src()
        if src is None:  # pragma: no cover - regular files always have a stream
            continue
        with src, open(target, "wb") as out:
            written = _copy_bounded(src, out, budget, archive)
        if budget is not None:
            budget -= written


def _check_tar_member(archive: object, m: tarfile.TarInfo) -> PurePosixPath:
    rel = _check_name(archive, m.name)
    if m.issym() or m.islnk():
        raise UnsupportedSourceError(f"{archive}: member {m.name!r} is a link; refusing to extract")
    if not (m.isfile() or m.isdir()):
        raise UnsupportedSourceError(f"{archive}: member {m.name!r} is not a regular file; refusing")
    return rel


def _extract_tar(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members: list[_Member] = []
        total = 0
        for m in tf.getmembers():
            rel = _check_tar_member(archive, m)
            members.append((_inside(dest, rel, archive, m.name), m.isdir(), partial(tf.extractfile, m)))
            total += m.size if m.isfile() else 0
            limits.check(archive, len(members), total, None)  # stop early: do not list a bomb's members
        limits.check(archive, len(members), total, archive.stat().st_size)
        _write_members(members, limits.max_bytes, archive)


def _extract_zip(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    with zipfile.ZipFile(archive) as zf:
        members: list[_Member] = []
        infos = zf.infolist()
        limits.check(archive, len(infos), sum(i.file_size for i in infos), archive.stat().st_size)
        for info in infos:
            target = _inside(dest, _check_name(archive, info.filename), archive, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsupportedSourceError(f"{archive}: member {info.filename!r} is a link; refusing")
            members.append((target, info.is_dir(), partial(zf.open, info)))
        _write_members(members, limits.max_bytes, archive)


# ------------------------------------------------------------------------------- headers only
def _is_metadata(name: str) -> bool:
    return name.lower().endswith(METADATA_SUFFIXES)


def _placeholder(target: Path, size: int) -> None:
    """A sparse file of ``size`` bytes (no data blocks written): layout checks see the true size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        f.truncate(size)


def extract_headers(
    archive: Path | str | IO[bytes],
    dest_dir: Path | str,
    *,
    name: str | None = None,
    size: int | None = None,
    limits: ArchiveLimits | None = None,
) -> Path:
    """Write only the metadata members of ``archive`` into ``dest_dir/<archive stem>/``; return it.

    ``archive`` is a path or a binary stream (a tar read sequentially, e.g. an S3 object body; a
    zip needs a seekable file). ``name`` (the archive's file name) and ``size`` (its bytes, for the
    ratio bound) are required for a stream. Pixel files become sparse placeholders of their
    declared size. On failure nothing is left in ``dest_dir``.
    """
    limits = limits or ArchiveLimits()
    if isinstance(archive, (str, Path)):
        path = Path(archive)
        if not path.is_file():
            raise UnsupportedSourceError(f"{path}: archive not found")
        name, size = name or path.name, size if size is not None else path.stat().st_size
    elif name is None:
        raise ValueError("extract_headers: name= is required for a stream")
    label = str(archive) if isinstance(archive, (str, Path)) else name
    if not is_archive(name):
        raise UnsupportedSourceError(f"{label}: not a supported archive ({', '.join(ARCHIVE_SUFFIXES)})")
    dest = Path(dest_dir) / archive_stem(name)
    if dest.exists():
        raise UnsupportedSourceError(
            f"{label}: {dest} already exists; extract_headers needs a fresh directory"
        )
    dest.mkdir(parents=True)
    root = dest.resolve()
    try:
        if name.lower().endswith(".zip"):
            _headers_zip(archive, root, label, size, limits)
        else:
            _headers_tar(archive, root, label, size, limits)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise UnsupportedSourceError(f"{label}: cannot read archive ({exc})") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _metadata_member(src: IO[bytes] | None, target: Path, label: str, member: str, declared: int) -> None:
    if declared > _MAX_METADATA_MEMBER:
        raise UnsupportedSourceError(
            f"{label}: metadata member {member!r} is {declared} bytes; a header is at most "
            f"{_MAX_METADATA_MEMBER} bytes; refusing"
        )
    if src is None:  # pragma: no cover - regular files always have a stream
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with src, open(target, "wb") as out:
        _copy_bounded(src, out, declared, label)


def _headers_tar(archive: Path | str | IO[bytes], root: Path, label: str, size: int | None,
                 limits: ArchiveLimits) -> None:  # fmt: skip
    kw: dict[str, object] = (
        {"name": str(archive)} if isinstance(archive, (str, Path)) else {"fileobj": archive}
    )
    with tarfile.open(mode="r|*", **kw) as tf:  # type: ignore[call-overload]
        total = 0
        for count, m in enumerate(tf, start=1):  # streaming: a member's data is skipped unless read now
            rel = _check_tar_member(label, m)
            target = _inside(root, rel, label, m.name)
            total += m.size if m.isfile() else 0
            limits.check(label, count, total, size)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif _is_metadata(m.name):
                _metadata_member(tf.extractfile(m), target, label, m.name, m.size)
            else:
                _placeholder(target, m.size)


def _headers_zip(archive: Path | str | IO[bytes], root: Path, label: str, size: int | None,
                 limits: ArchiveLimits) -> None:  # fmt: skip
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        limits.check(label, len(infos), sum(i.file_size for i in infos), size)
        for info in infos:
            target = _inside(root, _check_name(label, info.filename), label, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsupportedSourceError(f"{label}: member {info.filename!r} is a link; refusing")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif _is_metadata(info.filename):
                _metadata_member(zf.open(info), target, label, info.filename, info.file_size)
            else:
                _placeholder(target, info.file_size)
