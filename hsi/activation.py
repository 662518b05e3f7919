"""Activation of raw scenes: the domain steps the Prefect tasks wrap one-to-one.

Indexing lives in :mod:`hsi.indexing` (no rasterio import there); its functions are re-exported
here, because the tasks wrap both.

activate:  raw item -> [skip if done] -> fetch/extract -> COG + quicklooks -> upload -> register

Registration is the commit point: assets are uploaded first to deterministic keys, then the item
is upserted. "Done" means the activated item exists, its ``hsi:product_key`` equals the key of
this activation (raw asset checksums + writer version + profile), and every asset exists with
its recorded size (and checksum where the store knows it cheaply).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pystac

from hsi.cog_profile import CogProfile
from hsi.errors import DataFileError, UnsupportedSourceError
from hsi.events import EventResource, scene_activated_event, stage_outcome_event
from hsi.faults import fault_point
from hsi.indexing import (
    COMPANION_ASSETS,
    SIDECAR_ASSETS,
    discover_scenes,
    find_raw_item,
    index_one,
    index_scene,
    sidecar_key,
)
from hsi.scene import SceneMetadata
from hsi.services import Services
from hsi.sources import read_scene
from hsi.sources.archive import ArchiveLimits
from hsi.sources.envi import find_header
from hsi.sources.ng_sidecars import SIDECAR_KINDS, glt_agrees, read_aux
from hsi.stac.items import (
    COG_MEDIA_TYPE,
    DATETIME_SOURCE,
    MTIME_NS,
    AssetRef,
    activated_item,
    collection_for,
)
from hsi.stac.provenance import InputRef, Provenance, RunInfo, apply_provenance, derivation_key
from hsi.storage import ObjectInfo, file_checksum

if TYPE_CHECKING:  # the writer (rasterio, rio-cogeo) loads in convert(): planning stays light
    from hsi.cog import CogInfo, Progress

__all__ = [
    "ACTIVATION_ALGORITHM",
    "ACTIVATION_VERSION",
    "ActivationPlan",
    "Converted",
    "activated_collection",
    "activation_key",
    "build_activated_item",
    "check_done",
    "discover_scenes",
    "convert",
    "fetch_raw",
    "find_raw_item",
    "index_one",
    "index_scene",
    "not_activated_event",
    "not_activated_reason",
    "plan_activation",
    "register_activated",
    "upload_outputs",
]

log = logging.getLogger(__name__)

ACTIVATION_ALGORITHM = "hsi.activate"
ACTIVATION_VERSION = "1.1.0"  # 1.1: GLT orthorectification, companions/sidecars as assets, HSI_UNITS
_SIDECAR_TITLES = {
    "glt": "GLT: raw (sample, line) of each ortho pixel; 1-based, 0 = none, negative = infill (ENVI int32)",
    "igm": "IGM: easting, northing, elevation of each raw pixel (ENVI float64)",
    "loc": "LOC: longitude, latitude, elevation of each raw pixel (ENVI float64)",
    "obs_raw": "OBS: observation geometry of each raw pixel, 11 bands (ENVI float64)",
    "obs_ort": "OBS_ORT: observation geometry on the ortho grid, 11 bands (ENVI float64)",
}
_COMPANION_ROLES = {
    "mask": (
        ("data-mask", "cloud", "cirrus", "water", "dilated-cloud"),
        "Quality masks (EMIT L2A MASK, orthorectified)",
    ),
    "obs": (
        ("metadata", "sun-angle", "view-angle"),
        "Observation geometry on the cube grid (EMIT OBS via the GLT, AVIRIS-NG _obs_ort)",
    ),
}


# ---------------------------------------------------------------------------------------- index


# ------------------------------------------------------------------------------------- activate
def activated_collection(raw: pystac.Item) -> str:
    return f"{raw.properties['hsi:source']}-{raw.properties.get('hsi:level', 'l1b')}"


def _profile_params(profile: CogProfile) -> dict[str, Any]:
    params = dataclasses.asdict(profile)
    params.pop("num_threads", None)  # does not change the result
    return params


def _asset_identity(asset: pystac.Asset) -> str:
    """An input asset's identity for the key: its checksum, else its ETag/version, else its size."""
    f = asset.extra_fields
    if f.get("file:checksum"):
        return str(f["file:checksum"])
    if f.get("hsi:etag") or f.get("hsi:version_id"):
        return ObjectInfo(
            asset.href, int(f.get("file:size", -1)), None, f.get("hsi:etag"), f.get("hsi:version_id")
        ).identity
    return f"size:{f.get('file:size')}"


def activation_key(services: Services, raw: pystac.Item, profile: CogProfile) -> tuple[str, InputRef]:
    """The key of activating ``raw`` with ``profile`` and the input reference it is made of."""
    checksums = {k: _asset_identity(a) for k, a in raw.assets.items()}
    cid = raw.collection_id or ""
    ref = InputRef(
        collection=cid, id=raw.id, href=services.catalog.item_href(cid, raw.id), checksums=checksums
    )
    return derivation_key([ref], ACTIVATION_ALGORITHM, ACTIVATION_VERSION, _profile_params(profile)), ref


def check_done(
    services: Services, collection: str, item_id: str, key: str, *, verify_checksums: bool = False
) -> str | None:
    """Why the existing item can be kept (a skip reason), or None when the work must be (re)done."""
    item = services.catalog.get_item(collection, item_id)
    if item is None:
        return None
    return item_done(services, item, key, verify_checksums=verify_checksums)


def item_done(
    services: Services, item: pystac.Item, key: str, *, verify_checksums: bool = False
) -> str | None:
    """:func:`check_done` on an item already read: a skip reason when its key is ``key`` and its
    recorded assets are in storage with their recorded size (and checksum), else None."""
    collection, item_id = item.collection_id, item.id
    if item.properties.get("hsi:product_key") != key:
        log.info("%s/%s exists but is stale (key differs): recomputing", collection, item_id)
        return None
    for name, asset in item.assets.items():
        size = asset.extra_fields.get("file:size")
        if size is None:
            continue
        store = services.store_for(asset.href)
        info = store.stat(asset.href, checksum=verify_checksums)
        if info is None or info.size != size:
            log.warning(
                "%s/%s: asset %s missing or incomplete at %s: recomputing",
                collection,
                item_id,
                name,
                asset.href,
            )
            return None
        recorded = asset.extra_fields.get("file:checksum")
        if info.checksum and recorded and info.checksum != recorded:
            log.warning("%s/%s: asset %s checksum differs: recomputing", collection, item_id, name)
            return None
    return f"{collection}/{item_id} is up to date (key {key[:12]}, assets complete)"


def fetch_raw(services: Services, raw: pystac.Item, dest: Path) -> Path:
    """Local copies of the raw assets in ``dest`` (a run's private staging directory; local files are
    used in place); returns the scene entry path. Each remote object is fetched as the raw item
    recorded it (size + ETag/version): a re-uploaded object is refused, not silently processed."""
    for a in raw.assets.values():
        _unchanged_since_indexed(a)
    paths = {k: services.fetch(a.href, dest, expect=_recorded(a)) for k, a in raw.assets.items()}
    fault_point("after-download")
    if "archive" in paths:
        return paths["archive"]
    if "header" in paths:
        return paths["header"]
    if "data" in paths:
        return paths["data"]
    raise UnsupportedSourceError(
        f"raw item {raw.collection_id}/{raw.id} has no data, header or archive asset"
    )


def _unchanged_since_indexed(asset: pystac.Asset) -> None:
    """A local raw file is what its raw item recorded (size, then checksum unless its modification
    time is the recorded one), as an S3 object must be its recorded ETag: else refused."""
    href = asset.href
    if "://" in href and not href.startswith("file://"):
        return  # remote: Services.fetch compares the store's identity
    f = asset.extra_fields
    size, checksum = f.get("file:size"), f.get("file:checksum")
    path = Path(href.removeprefix("file://"))
    if size is None or not path.is_file():
        return  # not recorded (Services.fetch reports a missing file)
    st = path.stat()
    if st.st_size != size:
        what = "truncated" if st.st_size < size else "grown"
        raise DataFileError(
            path,
            f"file changed since it was indexed: {what} to {st.st_size} bytes from {size}; index it again",
        )
    if f.get(MTIME_NS) == st.st_mtime_ns or not checksum:
        return
    if file_checksum(path) != checksum:
        raise DataFileError(path, "file changed since it was indexed (its checksum differs): index it again")


def _recorded(asset: pystac.Asset) -> ObjectInfo | None:
    """The identity a raw asset recorded (None for assets indexed before identities were recorded)."""
    f = asset.extra_fields
    if not (f.get("hsi:etag") or f.get("hsi:version_id")):
        return None
    return ObjectInfo(
        asset.href,
        int(f.get("file:size", -1)),
        f.get("file:checksum"),
        f.get("hsi:etag"),
        f.get("hsi:version_id"),
    )


@dataclass(frozen=True)
class Converted:
    meta: SceneMetadata
    cog: CogInfo
    files: Mapping[str, Path]  # asset key -> local file (cube, rgb, thumbnail)
    rgb_bands: tuple[int, int, int]
    notes: tuple[str, ...] = ()  # checks worth recording in the lineage (GLT vs ortho image)


def convert(
    entry: Path,
    out_dir: Path,
    *,
    source: str | None = None,
    profile: CogProfile | None = None,
    work_dir: Path | None = None,
    progress: Progress | None = None,
    limits: ArchiveLimits | None = None,
) -> Converted:
    """Scene on disk -> analysis-ready COG + RGB quicklook COG + PNG thumbnail in ``out_dir``.

    An archive is extracted into ``work_dir`` within ``limits``."""
    from hsi.cog import write_cog, write_quicklook

    meta = read_scene(entry, source=source, work_dir=work_dir, limits=limits)
    out_dir.mkdir(parents=True, exist_ok=True)
    cube = out_dir / f"{meta.item_id}.tif"
    info = write_cog(meta, cube, profile, progress=progress)
    rgb, png = out_dir / f"{meta.item_id}_rgb.tif", out_dir / f"{meta.item_id}_quicklook.png"
    bands = write_quicklook(cube, rgb, png)
    files = {"cube": cube, "rgb": rgb, "thumbnail": png}
    for kind, comp in companions(meta).items():  # same grid as the cube
        files[kind] = out_dir / f"{meta.item_id}_{kind}.tif"
        write_cog(comp, files[kind], profile)
    notes = _ng_sidecars(meta, files)
    return Converted(meta=meta, cog=info, files=files, rgb_bands=bands, notes=notes)


def sensor_companions(meta: SceneMetadata) -> dict[str, SceneMetadata]:
    """The companions in the scene's *sensor* geometry (a product computed before orthorectification):
    EMIT's OBS / MASK granules, AVIRIS-NG's raw ``_obs`` (not ``_obs_ort``, which is on the ortho grid)."""
    size = (meta.layout.width, meta.layout.height)
    if meta.source == "emit":
        found = companions(meta)
    elif "sidecar_obs" in meta.extra:
        found = {
            "obs": read_aux(
                Path(meta.extra["sidecar_obs"]), source=meta.source, scene_id=meta.scene_id, quantity="obs"
            )
        }
    else:
        found = {}
    return {k: c for k, c in found.items() if (c.layout.width, c.layout.height) == size}


def _ng_sidecars(meta: SceneMetadata, files: dict[str, Path]) -> tuple[str, ...]:
    """AVIRIS-NG sidecars become assets as delivered; the GLT only when it agrees with the image."""
    notes = []
    for kind in SIDECAR_KINDS:
        path = meta.extra.get(f"sidecar_{kind}")
        if path is None:
            continue
        if kind == "glt":
            problem = glt_agrees(
                read_aux(Path(path), source=meta.source, scene_id=meta.scene_id, quantity="glt"), meta
            )
            if problem:
                log.warning(
                    "%s: GLT not registered, it does not match the ortho image: %s", meta.scene_id, problem
                )
                notes.append(f"GLT not registered (does not match the ortho image: {problem})")
                continue
            notes.append("GLT checked against the ortho image: same size and grid")
        key = sidecar_key(kind)
        files[key] = Path(path)
        files[key + "_header"] = find_header(Path(path)) or Path(path + ".hdr")  # .hdr or .HDR
    return tuple(notes)


def companions(meta: SceneMetadata) -> dict[str, SceneMetadata]:
    """The observation-geometry / quality-mask rasters rendered on the activated cube's grid."""
    if meta.source == "aviris-ng" and "sidecar_obs_ort" in meta.extra:  # on the image's grid already
        obs = read_aux(
            Path(meta.extra["sidecar_obs_ort"]), source=meta.source, scene_id=meta.scene_id, quantity="obs"
        )
        if (obs.layout.width, obs.layout.height, obs.transform) != (
            meta.layout.width,
            meta.layout.height,
            meta.transform,
        ):
            log.warning("%s: _obs_ort is not on the image's grid; not used", meta.scene_id)
            return {}
        return {"obs": obs}
    if meta.source != "emit":
        return {}
    from hsi.sources.emit import read_companion

    return {k: read_companion(Path(meta.extra[k]), k) for k in COMPANION_ASSETS if k in meta.extra}


_CONTENT_TYPES = {".tif": COG_MEDIA_TYPE, ".png": "image/png"}


def upload_outputs(
    services: Services, collection: str, item_id: str, files: Mapping[str, Path]
) -> dict[str, ObjectInfo]:
    """Copy outputs to deterministic keys ``<collection>/<item id>/<file name>`` (atomic per object)."""
    out = {}
    for key, path in files.items():
        uri = services.store.uri(collection, item_id, path.name)
        out[key] = services.store.put_file(path, uri, content_type=_CONTENT_TYPES.get(path.suffix))
    fault_point("after-upload")
    return out


def public_href(services: Services, uri: str) -> str:
    base = services.config.storage.public_base_url
    if base and uri.startswith(services.store.root):
        return base.rstrip("/") + "/" + uri[len(services.store.root) :].lstrip("/")
    return uri


def build_activated_item(
    services: Services,
    conv: Converted,
    uploaded: Mapping[str, ObjectInfo],
    raw: pystac.Item,
    key_input: InputRef,
    profile: CogProfile,
    run: RunInfo,
) -> pystac.Item:
    def ref(
        key: str, mt: str, roles: tuple[str, ...], title: str, extra: dict[str, Any] | None = None
    ) -> AssetRef:
        o = uploaded[key]
        return AssetRef(public_href(services, o.uri), mt, roles, title, o.size, o.checksum, extra or {})

    item = activated_item(
        conv.meta,
        cube=ref("cube", COG_MEDIA_TYPE, ("data",), "Analysis-ready cube (band-interleaved COG)"),
        cog=conv.cog,
        extra_assets={
            "rgb": ref(
                "rgb",
                COG_MEDIA_TYPE,
                ("visual",),
                "True-colour RGB (with overviews)",
                {"hsi:rgb_bands": list(conv.rgb_bands)},
            ),
            "thumbnail": ref("thumbnail", "image/png", ("thumbnail", "overview"), "True-colour quicklook"),
            **{
                k: ref(k, COG_MEDIA_TYPE, _COMPANION_ROLES[k][0], _COMPANION_ROLES[k][1])
                for k in COMPANION_ASSETS
                if k in uploaded
            },
            **_sensor_assets(conv.meta, raw),
            **{
                k: ref(k, "application/octet-stream", ("metadata", k), _SIDECAR_TITLES[k])
                for k in SIDECAR_ASSETS
                if k in uploaded
            },
            **{
                f"{k}_header": ref(f"{k}_header", "text/plain", ("metadata",), f"ENVI header of {k}")
                for k in SIDECAR_ASSETS
                if f"{k}_header" in uploaded
            },
        },
        fallback_datetime=raw.datetime,
        fallback_source=raw.properties.get(DATETIME_SOURCE),
    )
    requested = _profile_params(profile)
    prov = Provenance(
        algorithm=ACTIVATION_ALGORITHM,
        algorithm_version=ACTIVATION_VERSION,
        parameters={**requested, **conv.cog.written},  # what the COG was written with, read back
        key_parameters=requested,
        inputs=[key_input],
        level=conv.meta.level.upper(),
        lineage=f"{conv.meta.source} {conv.meta.quantity} ({conv.meta.layout.interleave.upper()}, "
        f"{conv.meta.layout.dtype}) converted to a band-interleaved COG by hsi-pipeline"
        + ("; rotated grid resampled north-up (nearest)" if conv.meta.is_rotated else "")
        + (
            "; orthorectified from sensor geometry through its GLT (exact lookup, fill = nodata)"
            if conv.meta.glt is not None
            else ""
        )
        + "".join(f"; {n}" for n in conv.notes),
        run=run,
    )
    return apply_provenance(item, prov)


def _sensor_assets(meta: SceneMetadata, raw: pystac.Item) -> dict[str, AssetRef]:
    """A sensor-geometry scene keeps its raw cube + GLT as an asset (products may run before
    orthorectification, EMIT's own practice): a reference to the raw object, nothing copied."""
    data = raw.assets.get("data")
    if meta.glt is None or data is None:
        return {}
    glt = meta.glt
    where = (
        f"{glt.x_variable}, {glt.y_variable}" if glt.x_variable else "ENVI GLT (band 1 sample, band 2 line)"
    )
    return {
        "sensor": AssetRef(
            href=data.href,
            media_type=data.media_type or "application/x-netcdf",
            roles=("data", "sensor-geometry"),
            title="Sensor-geometry cube with its GLT (raw)",
            size=data.extra_fields.get("file:size"),
            checksum=data.extra_fields.get("file:checksum"),
            extra={"hsi:glt": where, "hsi:glt_shape": [glt.height, glt.width]},
        )
    }


def register_activated(services: Services, item: pystac.Item) -> None:
    """Upsert the activated item (the commit point), creating its collection first when needed."""
    services.catalog.ensure_collection(collection_for(item.collection_id or ""))  # a STAC API needs it first
    services.catalog.upsert_item(item)
    fault_point("after-register")


def not_activated_reason(services: Services, raw: pystac.Item) -> str | None:
    """Why the configuration says not to activate this raw item (``sources.<source>.activate: false``)."""
    src = raw.properties["hsi:source"]
    sc = services.config.sources.get(src)
    return f"sources.{src}.activate is false" if sc is not None and not sc.activate else None


def not_activated_event(raw: Mapping[str, Any], reason: str, catalog_href: str) -> dict[str, Any]:
    """``hsi.activate.skipped`` on the raw item (the configuration says not to activate it)."""
    props = raw["properties"]
    resource = EventResource(
        collection=raw["collection"],
        item_id=raw["id"],
        source=props["hsi:source"],
        scene_id=props.get("hsi:scene_id", ""),
    )
    payload = {"catalog_href": catalog_href}
    return stage_outcome_event("activate", "skipped", resource=resource, reason=reason, payload=payload)


@dataclass(frozen=True)
class ActivationPlan:
    """What activating one raw item means: its target item, key, input reference and whether it is done."""

    raw_collection: str
    item_id: str
    source: str
    scene_id: str
    collection: str  # the activated collection
    item_href: str
    catalog_href: str
    key: str
    ref: InputRef
    skip: str | None  # why the existing item is up to date, or None

    @property
    def resource(self) -> EventResource:
        return EventResource(
            collection=self.collection, item_id=self.item_id, source=self.source, scene_id=self.scene_id
        )

    def summary(self, status: str, reason: str = "") -> dict[str, Any]:
        return {
            "status": status,
            "reason": reason,
            "collection": self.collection,
            "item_id": self.item_id,
            "item_href": self.item_href,
            "product_key": self.key,
        }

    def outcome_event(self, outcome: str, reason: str, **extra: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "catalog_href": self.catalog_href,
            "item_href": self.item_href,
            "product_key": self.key,
        }
        if extra:
            payload["extra"] = extra
        return stage_outcome_event(
            "activate", outcome, resource=self.resource, reason=reason, payload=payload
        )

    def activated_event(self, cube: ObjectInfo) -> dict[str, Any]:
        return scene_activated_event(
            source=self.source,
            scene_id=self.scene_id,
            collection=self.collection,
            item_id=self.item_id,
            catalog_href=self.catalog_href,
            product_key=self.key,
            item_href=self.item_href,
            uri=cube.uri,
            size=cube.size,
            checksum=cube.checksum or "",
            raw_item=(self.raw_collection, self.item_id),
        )


def plan_activation(services: Services, raw: pystac.Item, profile: CogProfile) -> ActivationPlan:
    """The activation of ``raw`` with ``profile``: target, key, and whether the stored item is up to date."""
    coll = activated_collection(raw)
    key, ref = activation_key(services, raw, profile)
    skip = check_done(services, coll, raw.id, key)
    if skip is not None:
        ensure_linked = getattr(services.catalog, "ensure_linked", None)
        if ensure_linked is not None:  # a static catalog: repair a link a crash after the commit left out
            ensure_linked(coll, raw.id)
    return ActivationPlan(
        raw_collection=raw.collection_id or "",
        item_id=raw.id,
        source=raw.properties["hsi:source"],
        scene_id=raw.properties.get("hsi:scene_id", ""),
        collection=coll,
        item_href=services.catalog.item_href(coll, raw.id),
        catalog_href=services.catalog.href,
        key=key,
        ref=ref,
        skip=skip,
    )
