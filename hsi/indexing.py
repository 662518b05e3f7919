"""Indexing raw scenes: the domain steps of ``hsi index``, kept apart from activation's pixel work.

index:     raw files (local, s3://, https://) -> raw STAC item in ``<source>-raw``

Only headers and sidecars are read (remote ones staged into a scratch directory removed afterwards);
this module does not import rasterio, so the command line can check an input in well under a second.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pystac

from hsi.errors import HSIError, InvalidInputError, ItemNotFoundError, UnsupportedSourceError
from hsi.geo import bbox_of, scene_footprint
from hsi.scene import SceneMetadata
from hsi.services import Services
from hsi.sources import detect_source, list_sources, read_scene
from hsi.sources.archive import METADATA_SUFFIXES, is_archive
from hsi.sources.emit import EmitSource
from hsi.sources.envi import find_header
from hsi.sources.generic import GenericEnviSource
from hsi.sources.ng_sidecars import SIDECAR_KINDS
from hsi.stac.items import MTIME_NS, AssetRef, collection_for, raw_item
from hsi.staging import Staged, stage_headers
from hsi.storage import file_checksum

__all__ = [
    "COMPANION_ASSETS",
    "SIDECAR_ASSETS",
    "discover_scenes",
    "find_raw_item",
    "index_one",
    "index_scene",
    "sidecar_key",
]

log = logging.getLogger(__name__)

# Companion rasters of a scene, orthorectified with it and registered as assets of the activated item.
COMPANION_ASSETS = ("obs", "mask")
SIDECAR_ASSETS = ("glt", "igm", "loc", "obs_raw", "obs_ort")


def _local_files(entry: Path, meta: SceneMetadata) -> dict[str, Path]:
    """Raw assets of a scene on disk: the archive, or data + header + sensor sidecars."""
    if is_archive(entry):
        return {"archive": entry}
    files: dict[str, Path] = {"data": meta.layout.data_path}
    if meta.layout.header_path is not None:
        files["header"] = meta.layout.header_path
    data = meta.layout.data_path
    for p in sorted(data.parent.iterdir()):
        if p.suffix in (".gain", ".spc") and p.name.startswith(meta.scene_id):
            files[p.suffix.lstrip(".")] = p
    for kind in COMPANION_ASSETS:  # EMIT: the OBS / MASK granule of the same acquisition
        if kind in meta.extra:
            files[kind] = Path(meta.extra[kind])
    for kind in SIDECAR_KINDS:  # AVIRIS-NG GLT / IGM / LOC / OBS / OBS_ORT (data + header)
        if f"sidecar_{kind}" in meta.extra:
            sc = Path(meta.extra[f"sidecar_{kind}"])
            files[sidecar_key(kind)] = sc
            files[sidecar_key(kind) + "_header"] = find_header(sc) or sc.with_name(sc.name + ".hdr")
    return files


def sidecar_key(kind: str) -> str:
    return "obs_raw" if kind == "obs" else kind


def _media_type(key: str, path: str) -> tuple[str, tuple[str, ...]]:
    if key == "archive":
        return ("application/gzip" if path.endswith(("gz", "tgz")) else "application/zip"), (
            "data",
            "archive",
        )
    if key in SIDECAR_ASSETS:
        return "application/octet-stream", ("metadata", key)
    if path.endswith(".nc"):
        return "application/x-netcdf", (("data",) if key == "data" else ("metadata",))
    if key == "data":
        return "application/octet-stream", ("data",)
    return "text/plain", ("metadata",)


def index_scene(services: Services, href: str, *, source: str | None = None) -> pystac.Item:
    """Read a raw scene's metadata (only headers, no pixels) and register its raw item (upsert).

    Remote objects are not downloaded: only headers/sidecars are (or, in an archive, only its
    metadata members are read; of an s3:// EMIT granule, the blocks holding its HDF5 metadata, by
    ranged GETs), into a scratch directory removed afterwards. Each remote asset
    records its size and identity (``file:checksum`` when the store knows it, ``hsi:etag``,
    ``hsi:version_id``), so a re-uploaded scene is a new input even when its size is unchanged."""
    scratch = services.scratch_dir("index")
    try:
        staged = stage_headers(services, href, scratch)
        try:
            meta = _read(staged, href, source)
        except HSIError as e:  # name the input, not our scratch copy
            msg = str(e).replace(str(staged.entry), href) if staged.archive else str(e)
            raise UnsupportedSourceError(msg.replace(str(scratch), href.rsplit("/", 1)[0])) from None
        assets = _raw_assets(staged, meta, href)
        mtime = (
            datetime.fromtimestamp(staged.entry.stat().st_mtime, tz=UTC)
            if not staged.remote
            else datetime.now(UTC)
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    geom = scene_footprint(meta)
    item = raw_item(
        meta,
        assets,
        geometry=geom,
        bbox=bbox_of(geom) if geom else None,
        fallback_datetime=mtime,
        fallback_source="time of indexing" if staged.remote else "file modification time",
    )
    item.properties["hsi:level"] = meta.level
    _refuse_id_collision(services, item, meta, href)
    services.catalog.ensure_collection(collection_for(item.collection_id or ""))  # a STAC API needs it first
    services.catalog.upsert_item(item)
    log.info("indexed %s/%s from %s", item.collection_id, item.id, href)
    return item


def _refuse_id_collision(services: Services, item: pystac.Item, meta: SceneMetadata, href: str) -> None:
    """A generic ENVI scene's id comes from its file name: a different scene (other file, other
    bytes) with the same name must not replace the one indexed under that id. Sensor ids name the
    acquisition: another file of the same acquisition and level (a re-delivery, a newer processing
    version) replaces the raw item, with a note; another level (radiance after reflectance) is
    refused, as it would replace the other level's raw item."""
    prior = services.catalog.get_item(item.collection_id or "", item.id)
    if prior is None:
        return
    key = "archive" if "archive" in item.assets else "data"
    old, new = prior.assets.get(key), item.assets.get(key)
    if old is None or new is None or old.href == new.href:
        return
    if old.extra_fields.get("file:checksum") == new.extra_fields.get("file:checksum"):
        return  # the same bytes, moved
    old_level = prior.properties.get("hsi:level")
    if old_level and old_level != meta.level:
        raise InvalidInputError(
            f"{href}: a {meta.level} delivery of {item.id}, which is indexed as {old_level} from "
            f"{old.href}: one raw item per acquisition in a catalog; index the other level into another "
            f"catalog (catalog.url in hsi.yaml), or remove {item.collection_id}/{item.id} first"
        )
    if meta.source == GenericEnviSource.name:
        raise InvalidInputError(
            f"{href}: its id '{item.id}' (from the file name) already names another scene, indexed from "
            f"{old.href}: rename one of the files, or remove the item {item.collection_id}/{item.id} first"
        )
    log.warning("%s/%s: replaces the raw item indexed from %s", item.collection_id, item.id, old.href)


def _read(staged: Staged, href: str, source: str | None) -> SceneMetadata:
    """The scene's metadata: read by staging (an s3:// EMIT granule, whose staged entry is a
    placeholder that must not be read), else read from the staged entry."""
    if staged.meta is not None:
        if source not in (None, staged.meta.source):
            raise UnsupportedSourceError(f"{href}: a {staged.meta.source} scene, not {source!r}")
        return staged.meta
    return read_scene(staged.entry, source=source or _detect(staged, href))


def _detect(staged: Staged, href: str) -> str:
    """The source of a staged scene, detected by the original name for archives (as for local ones)."""
    if staged.archive is not None:
        return detect_source(Path(staged.archive.rsplit("/", 1)[-1])).name
    return detect_source(staged.entry).name


def _raw_assets(staged: Staged, meta: SceneMetadata, href: str) -> dict[str, AssetRef]:
    if staged.archive is not None:
        arc = Path(staged.archive.rsplit("/", 1)[-1])
        files: dict[str, Path] = {"archive": arc}
    else:
        files = _local_files(staged.entry, meta)
    assets = {}
    for key, path in files.items():
        mt, roles = _media_type(key, path.name)
        remote = staged.remote.get(path.name)
        if remote is not None:
            # headers (.hdr/.gain/.spc) are staged bytes; anything else (data, companions, binary
            # sidecars) may be a sparse placeholder: its identity is the store's
            staged_bytes = key not in ("archive", "data") and path.name.lower().endswith(METADATA_SUFFIXES)
            local = path if staged_bytes else None
            extra = {k: v for k, v in (("hsi:etag", remote.etag), ("hsi:version_id", remote.version_id)) if v}
            asset_href = href if key == "archive" else f"{staged.remote_dir}/{path.name}"
            checksum = file_checksum(local) if local is not None else remote.checksum
            assets[key] = AssetRef(asset_href, mt, roles, path.name, remote.size, checksum, extra)
        else:
            local_path = Path(staged.archive) if key == "archive" and staged.archive else path
            st = local_path.stat()
            assets[key] = AssetRef(
                href=str(local_path.resolve()),
                media_type=mt,
                roles=roles,
                title=path.name,
                size=st.st_size,
                checksum=file_checksum(local_path),
                extra={MTIME_NS: st.st_mtime_ns},  # activation re-hashes only a file touched since
            )
    return assets


def find_raw_item(services: Services, item_id: str, collection: str | None = None) -> pystac.Item:
    """The raw item ``item_id`` (in ``collection``, or in any ``<source>-raw`` collection)."""
    collections = [collection] if collection else [f"{s}-raw" for s in list_sources()]
    for cid in collections:
        item = services.catalog.get_item(cid, item_id)
        if item is not None:
            return item
    raise ItemNotFoundError(collection or " | ".join(collections), item_id, services.catalog.href)


def index_one(services: Services, uri: str, source: str | None = None) -> pystac.Item:
    """Index the one raw scene at ``uri`` (refused, naming what was found, when there is not exactly one)."""
    entries = discover_scenes(uri)
    if len(entries) != 1:
        found = f": {', '.join(entries)}" if entries else ""
        raise ValueError(f"{uri}: expected exactly one raw scene, found {len(entries)}{found}")
    return index_scene(services, entries[0], source=source)


def discover_scenes(href: str) -> list[str]:
    """Scene entries at ``href``: itself for a file/URL/s3 key; for a local directory, every
    archive and every ENVI header in it (sensor sidecar headers excluded), sorted."""
    if "://" in href and not href.startswith("file://"):
        return [href]
    p = Path(href[7:] if href.startswith("file://") else href)
    if not p.is_dir():
        return [str(p)]
    found = []
    for f in sorted(p.rglob("*")):
        if not f.is_file():
            continue
        if (
            is_archive(f)
            or (
                f.suffix.lower() == ".hdr"
                and not any(s in f.name.lower() for s in ("_glt", "_igm", "_loc", "_obs", "_h2o"))
            )
            or f.suffix == ".nc"
            and EmitSource().matches(f)
        ):
            found.append(str(f))
    return found
