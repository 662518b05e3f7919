"""Safe extraction of scene archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``).

Every member is checked before anything is written: absolute names, ``..`` components, links,
devices and names that would resolve outside the destination are refused
(:class:`~hsi.errors.UnsupportedSourceError` naming the archive and the member). Extraction is
idempotent: an archive already extracted completely into the same directory is not re-extracted.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from hsi.errors import UnsupportedSourceError

__all__ = ["ARCHIVE_SUFFIXES", "archive_stem", "extract", "is_archive"]

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_DONE = ".extracted"


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


def _check_name(archive: Path, name: str) -> PurePosixPath:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsupportedSourceError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if any(part == ".." for part in pure.parts):
        raise UnsupportedSourceError(f"{archive}: member {name!r} escapes the destination ('..'); refusing")
    return pure


def _inside(dest: Path, rel: PurePosixPath, archive: Path, name: str) -> Path:
    target = (dest / Path(*rel.parts)).resolve() if rel.parts else dest
    if target != dest and dest not in target.parents:
        raise UnsupportedSourceError(f"{archive}: member {name!r} resolves outside {dest}; refusing")
    return target


def extract(archive: Path | str, dest_dir: Path | str) -> Path:
    """Extract ``archive`` into ``dest_dir/<archive stem>/`` safely and return that directory."""
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
            _extract_zip(archive, staging)
        else:
            _extract_tar(archive, staging)
        (staging / _DONE).write_text(stamp)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UnsupportedSourceError(f"{archive}: cannot read archive ({exc})") from None
    except UnsupportedSourceError:
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


def _write_members(members: list[_Member]) -> None:
    """Write members that were all validated first (nothing is written for a bad archive)."""
    for target, is_dir, open_src in members:
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = open_src()
        if src is None:  # pragma: no cover - regular files always have a stream
            continue
        with src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 8 << 20)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members: list[_Member] = []
        for m in tf.getmembers():
            rel = _check_name(archive, m.name)
            if m.issym() or m.islnk():
                raise UnsupportedSourceError(f"{archive}: member {m.name!r} is a link; refusing to extract")
            if not (m.isfile() or m.isdir()):
                raise UnsupportedSourceError(f"{archive}: member {m.name!r} is not a regular file; refusing")
            members.append((_inside(dest, rel, archive, m.name), m.isdir(), partial(tf.extractfile, m)))
        _write_members(members)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members: list[_Member] = []
        for info in zf.infolist():
            target = _inside(dest, _check_name(archive, info.filename), archive, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsupportedSourceError(f"{archive}: member {info.filename!r} is a link; refusing")
            members.append((target, info.is_dir(), partial(zf.open, info)))
        _write_members(members)
