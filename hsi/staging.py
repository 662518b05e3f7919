"""Header-only staging of a raw scene for indexing: no pixel byte is downloaded or extracted.

:func:`stage_headers` puts into a private directory what a source needs to read a scene's
metadata, and returns the entry to read plus the identity (size, ETag/version, checksum) of each
remote object it describes:

* an ``s3://`` header or data key: the scene's sibling objects are listed; metadata objects
  (``.hdr``, ``.gain``, ``.spc``: a few kB) are downloaded, every other sibling becomes a sparse
  placeholder of its size (a HEAD, no GET), so the header's layout checks see the true size;
* an ``s3://`` EMIT netCDF4 granule: its HDF5 metadata is spread through the file, so it cannot be
  read from a placeholder, and it is not downloaded either. The granule and its OBS/MASK companion
  (found by name) become placeholders, and the EMIT reader itself reads the granule's metadata
  from a file object made of cached, aligned ranged GETs pinned to the ETag
  (:class:`hsi.storage.blocks.RangedBlocks`): exactly the bytes it touches, rounded to blocks. That
  read *is* the scene's metadata read (:attr:`Staged.meta`, paths naming the placeholders): nothing
  reads the placeholder's bytes afterwards, so no unfetched range can be read as zeros;
* an ``s3://`` or ``http(s)://`` archive: a tar is read as one stream, a zip by ranged GETs of its
  central directory and metadata members (:func:`hsi.sources.archive.extract_headers`);
* a local archive: the same, from the file; a local header or data file is used in place.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from hsi.errors import InvalidInputError, StorageError, UnsupportedSourceError
from hsi.services import Services
from hsi.sources.archive import METADATA_SUFFIXES, ArchiveLimits, extract_headers, is_archive
from hsi.sources.emit import companion_names, parse_emit_name
from hsi.storage import ObjectInfo
from hsi.storage.s3 import S3Store

if TYPE_CHECKING:
    from hsi.scene import SceneMetadata

__all__ = ["Staged", "stage_headers"]

log = logging.getLogger(__name__)

_MAX_METADATA_OBJECT = 64 << 20


@dataclass(frozen=True)
class Staged:
    """What :func:`stage_headers` prepared."""

    entry: Path  # what to read (a header, data file, or the header-only directory of an archive)
    archive: str | None = None  # the archive's href/path when the scene is an archive
    remote: dict[str, ObjectInfo] = field(default_factory=dict)  # file name -> identity of remote objects
    remote_dir: str | None = None  # href of the directory holding the remote objects
    # the scene's metadata when staging read it (an s3:// EMIT granule, by ranged GETs): ``entry``
    # is then a placeholder whose bytes must not be read; the metadata's paths name the placeholders
    meta: SceneMetadata | None = None


def _name(href: str) -> str:
    return Path(urlsplit(href).path).name if "://" in href else Path(href).name


def stage_headers(services: Services, href: str, dest: Path, limits: ArchiveLimits | None = None) -> Staged:
    """Stage the metadata of the scene at ``href`` into ``dest`` (a run's private directory)."""
    limits = limits or services.config.archive_limits.limits()
    name = _name(href)
    remote_dir = href.rsplit("/", 1)[0] if "://" in href and not href.startswith("file://") else None
    if remote_dir is None:  # local: archives are read for their headers; anything else in place
        path = Path(href[len("file://") :] if href.startswith("file://") else href)
        if is_archive(path):
            return Staged(extract_headers(path, dest, limits=limits), archive=str(path))
        return Staged(path)
    info = services.stat(href)
    if info is None:
        raise StorageError(href, "object does not exist")
    if is_archive(name):
        if href.startswith("s3://"):
            store = _s3(services, href)
            zipped = name.lower().endswith(".zip")  # a zip's directory is at its end: ranged reads
            stream = store.open_ranged(href, info) if zipped else store.open_read(href, expect=info)
            try:
                d = extract_headers(stream, dest, name=name, size=info.size, limits=limits)
            finally:
                stream.close()
        elif name.lower().endswith(".zip"):  # http(s) zip: needs random access; staged whole, then dropped
            local = services.fetch(href, dest / ".download", expect=info)
            d = extract_headers(local, dest, name=name, size=info.size, limits=limits)
            local.unlink()
        else:
            try:
                r = urllib.request.urlopen(href, timeout=60)  # noqa: S310
            except OSError as e:
                raise StorageError(href, f"download failed: {e}") from e
            with r:
                d = extract_headers(
                    r, dest, name=name, size=info.size if info.size >= 0 else None, limits=limits
                )
        return Staged(d, archive=href, remote={name: info}, remote_dir=remote_dir)
    if not href.startswith("s3://"):  # a single http(s) file: staged as it is
        return Staged(services.fetch(href, dest, expect=info), remote={name: info}, remote_dir=remote_dir)
    return _stage_s3_scene(services, href, dest, info)


def _s3(services: Services, href: str) -> S3Store:
    store = services.store_for(href)
    assert isinstance(store, S3Store)
    return store


def _stage_s3_scene(services: Services, href: str, dest: Path, info: ObjectInfo) -> Staged:
    prefix, name = href.rsplit("/", 1)
    store = _s3(services, href)
    remote: dict[str, ObjectInfo] = {name: info}
    emit = parse_emit_name(name) is not None
    if emit:  # an EMIT granule: its siblings are its OBS/MASK companions, by name (not every EMIT_*)
        for base in companion_names(name):
            sib = store.stat(f"{prefix}/{base}")
            if sib is not None:
                remote[base] = sib
    else:
        stem = name.split("_")[0].split(".")[0]
        for uri in store.list(prefix + "/"):
            base = uri.rsplit("/", 1)[-1]
            if base != name and base.startswith(stem) and "/" not in uri[len(prefix) + 1 :]:
                sib = store.stat(uri)
                if sib is not None:
                    remote[base] = sib
    dest.mkdir(parents=True, exist_ok=True)
    for base, obj in remote.items():
        target = dest / base
        if base.lower().endswith(METADATA_SUFFIXES):
            if obj.size > _MAX_METADATA_OBJECT:
                raise StorageError(obj.uri, f"{obj.size} bytes is too large for a header or sidecar")
            store.get_file(obj.uri, target, expect=obj)
        else:  # pixels or an EMIT granule: a sparse placeholder of the object's size (no byte is read)
            with open(target, "wb") as f:
                f.truncate(obj.size)
    if emit:
        return _read_emit(store, href, info, dest, remote)
    log.info("%s: staged %d header objects, %d placeholders (no pixel data read)", href,
             sum(b.lower().endswith(METADATA_SUFFIXES) for b in remote),
             sum(not b.lower().endswith(METADATA_SUFFIXES) for b in remote))  # fmt: skip
    return Staged(dest / name, remote=remote, remote_dir=prefix)


def _read_emit(
    store: S3Store, href: str, info: ObjectInfo, dest: Path, remote: dict[str, ObjectInfo]
) -> Staged:
    """The metadata of the EMIT granule at ``href`` (``info``; a placeholder in ``dest``), read by
    the EMIT reader from cached ranged GETs pinned to its ETag: the only read of its bytes."""
    from hsi.sources.emit import EmitSource
    from hsi.storage.blocks import RangedBlocks

    prefix, name = href.rsplit("/", 1)
    blocks = RangedBlocks(
        lambda start, length: store.read_range(href, start, length, etag=info.etag),
        info.size,
        name=href,
    )
    with blocks.open() as f:
        try:
            meta = EmitSource().read(dest / name, fileobj=f)
        except InvalidInputError as e:  # not readable as a granule: name the object, not our scratch
            if blocks.error is not None:
                raise blocks.error from None
            raise UnsupportedSourceError(str(e).replace(str(dest), prefix)) from None
        except Exception:
            if blocks.error is not None:  # the store's error (changed object, outage), not the reader's
                raise blocks.error from None
            raise
    if blocks.error is not None:  # a failed read the reader swallowed: its result is not to be trusted
        raise blocks.error
    log.info("%s: EMIT granule metadata read by %d ranged GETs, %d of %d bytes; %d companion placeholders",
             href, blocks.gets, blocks.bytes_read, info.size, len(remote) - 1)  # fmt: skip
    return Staged(dest / name, remote=remote, remote_dir=prefix, meta=meta)
