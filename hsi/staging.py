"""Header-only staging of a raw scene for indexing: no pixel byte is downloaded or extracted.

:func:`stage_headers` puts into a private directory what a source needs to read a scene's
metadata, and returns the entry to read plus the identity (size, ETag/version, checksum) of each
remote object it describes:

* an ``s3://`` header or data key: the scene's sibling objects are listed; metadata objects
  (``.hdr``, ``.gain``, ``.spc``: a few kB) are downloaded, every other sibling becomes a sparse
  placeholder of its size (a HEAD, no GET), so the header's layout checks see the true size;
  an EMIT netCDF4 granule is the exception: HDF5 metadata is spread through the file, so the
  granule is downloaded, and only its OBS/MASK companion (by name) becomes a placeholder;
* an ``s3://`` or ``http(s)://`` archive: a tar is read as one stream, a zip by ranged GETs of its
  central directory and metadata members (:func:`hsi.sources.archive.extract_headers`);
* a local archive: the same, from the file; a local header or data file is used in place.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hsi.errors import StorageError
from hsi.services import Services
from hsi.sources.archive import METADATA_SUFFIXES, ArchiveLimits, extract_headers, is_archive
from hsi.sources.emit import companion_names, parse_emit_name
from hsi.storage import ObjectInfo
from hsi.storage.s3 import S3Store

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
        if emit and base == name:
            # the netCDF4/HDF5 metadata of a granule is spread through the file and cannot be read
            # from a placeholder: the granule itself is downloaded (its companions stay placeholders)
            store.get_file(obj.uri, target, expect=obj)
        elif base.lower().endswith(METADATA_SUFFIXES):
            if obj.size > _MAX_METADATA_OBJECT:
                raise StorageError(obj.uri, f"{obj.size} bytes is too large for a header or sidecar")
            store.get_file(obj.uri, target, expect=obj)
        else:  # pixels: a sparse placeholder of the object's size (no byte is read)
            with open(target, "wb") as f:
                f.truncate(obj.size)
    if emit:
        log.info("%s: EMIT granule downloaded, %d companion placeholders", href, len(remote) - 1)
    else:
        log.info("%s: staged %d header objects, %d placeholders (no pixel data read)", href,
                 sum(b.lower().endswith(METADATA_SUFFIXES) for b in remote),
                 sum(not b.lower().endswith(METADATA_SUFFIXES) for b in remote))  # fmt: skip
    return Staged(dest / name, remote=remote, remote_dir=prefix)
