"""Product runs on activated scenes: the domain steps the Prefect product tasks wrap one-to-one.

    activated item -> plan (params validated, bands selected, key) -> [skip if done]
      -> compute (windowed engine, reads only the selected bands through GDAL) -> COG + preview PNG
      -> upload to ``<collection>/<item id>/<file>`` -> register the product item (commit point)

* **Plan first.** :func:`plan_product` validates the parameters and selects the bands from the
  cube's header (a ranged read of the COG, no pixels) *before* anything is computed or written,
  so a product the scene cannot supply (e.g. ``oil-spill`` SWIR bands on a VNIR-only cube) fails
  with :class:`~hsi.errors.BandSelectionError` naming product, wavelength and scene, and leaves
  nothing behind.
* **Key.** ``derivation_key([activated item + cube checksum], product name, product version,
  validated parameters)``. "Done" = the product item exists with that key and its assets exist
  with their recorded size (:func:`hsi.activation.check_done`). A new product version or other
  parameters give another key: the one item is recomputed and replaced (upsert).
* **Never a whole download.** The engine opens the cube with ``store.gdal_path(href)`` under the
  store's GDAL environment (``/vsis3/`` ranged reads for S3) and reads k of N bands per window.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pystac
import rasterio

from hsi.activation import activated_collection as _activated_collection
from hsi.activation import check_done as _check_done
from hsi.activation import public_href
from hsi.activation import upload_outputs as _upload
from hsi.errors import InvalidInputError, ItemNotFoundError
from hsi.indexing import find_raw_item
from hsi.products import get_product, select_bands
from hsi.quantities import (
    MASK_ASSET,
    InputPlan,
    parse_request_params,
    plan_inputs,
)
from hsi.scene import bands_from_dataset
from hsi.services import Services
from hsi.sources import list_sources
from hsi.stac.items import AssetRef, collection_for
from hsi.stac.product import data_asset_ref, product_collection, product_item, product_item_id
from hsi.stac.provenance import InputRef, Provenance, RunInfo, apply_provenance, derivation_key
from hsi.stac.validation import validate_item
from hsi.storage import ObjectInfo
from hsi.storage.base import file_checksum

if TYPE_CHECKING:
    from hsi.product_compute import Computed

__all__ = [
    "ACTIVATED_LEVELS",
    "ProductPlan",
    "build_product_item",
    "check_done",
    "expected_product_key",
    "expected_product_params",
    "find_activated_item",
    "plan_product",
    "register",
    "source_env",
    "upload_outputs",
]

log = logging.getLogger(__name__)

ACTIVATED_LEVELS = ("l2", "l1b", "l2a")
CUBE_ASSET = "cube"
PRODUCT_LEVEL = "L3"


# ------------------------------------------------------------------------------------ resolve
def find_activated_item(services: Services, item_id: str, collection: str | None = None) -> pystac.Item:
    """The activated item ``item_id`` (``<source>-<scene id>``): in ``collection`` when given, else
    in the collection its raw item names, else in any ``<source>-<level>`` collection."""
    if collection:
        candidates = [collection]
    else:
        candidates = []
        with contextlib.suppress(ItemNotFoundError):
            candidates.append(_activated_collection(find_raw_item(services, item_id)))
        candidates += [
            f"{s}-{lvl}" for s in list_sources() for lvl in ACTIVATED_LEVELS if f"{s}-{lvl}" not in candidates
        ]
    for cid in candidates:
        item = services.catalog.get_item(cid, item_id)
        if item is not None:
            return item
    raise ItemNotFoundError(collection or " | ".join(candidates), item_id, services.catalog.href)


@dataclass(frozen=True)
class ConfigSourceEnv:
    """A picklable ``rasterio.Env`` factory for ``href`` rebuilt from the configuration (what a Dask
    worker opens the cube under; credentials come from the worker's profile/environment, never
    through the scheduler)."""

    config: Any  # PipelineConfig
    href: str

    def __call__(self) -> Any:
        return source_env(Services.from_config(self.config), self.href)[1]


def dask_target(services: Services) -> str | None:
    """The scheduler address product windows go to (``engine.dask_address``), or None: also when
    storage is reached through a credentials block (a worker cannot resolve Prefect blocks)."""
    cfg = services.config
    addr = cfg.engine.dask_address
    if not addr:
        return None
    if cfg.storage.credentials_block or any(i.credentials_block for i in cfg.inputs):
        log.info("engine.dask_address set but storage uses a credentials block: products run windowed here")
        return None
    return addr


def source_env(services: Services, href: str) -> tuple[str, Any]:
    """(GDAL path, ``rasterio.Env``) to read ``href`` in place (credentials included for S3)."""
    store = services.store_for(href)
    path = store.gdal_path(href)
    env_factory = getattr(store, "rasterio_env", None)
    env = env_factory() if env_factory is not None else rasterio.Env(**store.gdal_env())
    return path, env


# --------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class ProductPlan:
    """Everything decided before computing (small and picklable: tasks pass it around)."""

    product: str  # registry name, e.g. "index:NDVI"
    version: str
    title: str
    params: dict[str, Any]  # validated, JSON-ready
    input: InputRef  # the activated item + the checksum of the cube read
    cube_href: str
    collection: str  # hsi-<slug>
    item_id: str  # <activated id>-<slug>
    key: str
    bands_used: list[dict[str, Any]] = field(default_factory=list)
    inputs: InputPlan | None = None  # TOA reflectance / quality mask (hsi.quantities)
    files: list[InputRef] = field(default_factory=list)  # input-file parameters and their checksums

    @property
    def scene_item(self) -> tuple[str, str]:
        return self.input.collection, self.input.id


def plan_product(
    services: Services,
    activated: pystac.Item,
    product: str,
    params: Mapping[str, Any] | None = None,
    *,
    headers: dict[str, Any] | None = None,
) -> ProductPlan:
    """Validate ``params``, select the bands from the cube header and compute the product key.

    ``headers``: a dict the caller keeps to read each cube's header once for many products (batch
    publishing); keyed by the cube href. Raises ProductError (unknown product, bad parameters),
    BandSelectionError (the scene cannot supply a band) or InvalidInputError (no cube asset)
    before any pixel is read.
    """
    prod = get_product(product)
    p, opts = parse_request_params(prod, params)
    prod.check_quantity(
        activated.properties.get("hsi:quantity"), f"item {activated.collection_id}/{activated.id}"
    )
    cube = activated.assets.get(CUBE_ASSET)
    if cube is None:
        raise InvalidInputError(
            f"activated item {activated.collection_id}/{activated.id} has no "
            f"'{CUBE_ASSET}' asset (assets: {', '.join(activated.assets) or 'none'})"
        )
    if headers is None:
        header = _cube_header(services, activated, cube)
    else:
        header = headers.get(cube.href) or headers.setdefault(
            cube.href, _cube_header(services, activated, cube)
        )
    selected = select_bands(prod, header[1], activated.id, p)
    inputs = _input_plan(activated, prod, opts, header)
    key, ref, params_json, files = _key_parts(services, activated, cube, prod, p, inputs.records)
    return ProductPlan(
        product=prod.name,
        version=prod.version,
        title=prod.title,
        params=params_json,
        input=ref,
        cube_href=cube.href,
        collection=product_collection(prod.name),
        item_id=product_item_id(activated.id, prod.name),
        key=key,
        bands_used=[s.as_dict() for s in selected],
        inputs=inputs,
        files=files,
    )


def _cube_header(
    services: Services, activated: pystac.Item, cube: pystac.Asset
) -> tuple[dict[str, str], tuple[Any, ...], list[str] | None]:
    """(cube tags, cube bands, mask band descriptions): COG headers only, no pixels."""
    path, env = source_env(services, cube.href)
    with env, rasterio.open(path) as ds:
        bands = bands_from_dataset(ds)
        cube_tags = ds.tags()
    mask_desc = None
    if MASK_ASSET in activated.assets:
        mpath, menv = source_env(services, activated.assets[MASK_ASSET].href)
        with menv, rasterio.open(mpath) as mds:
            mask_desc = [d or "" for d in mds.descriptions]
    return cube_tags, bands, mask_desc


def _header_needed(activated: pystac.Item, prod: Any, opts: Mapping[str, Any]) -> bool:
    """Whether the input plan depends on the COG headers: a reflectance product on a radiance scene
    (TOA: band centres/FWHM, HSI_UNITS) or an applied quality mask (its flag bands)."""
    toa = prod.needs == "reflectance" and activated.properties.get("hsi:quantity") == "radiance"
    return toa or (MASK_ASSET in activated.assets and bool(opts["mask"]))


def _input_plan(
    activated: pystac.Item,
    prod: Any,
    opts: Mapping[str, Any],
    header: tuple[dict[str, str], tuple[Any, ...], list[str] | None] | None,
) -> InputPlan:
    tags, bands, mask_desc = header if header is not None else ({}, (), None)
    return plan_inputs(prod.name, prod.needs, activated, tags, bands, opts, mask_desc)


def _key_parts(
    services: Services,
    activated: pystac.Item,
    cube: pystac.Asset,
    prod: Any,
    p: Any,
    records: Mapping[str, Any],
) -> tuple[str, InputRef, dict[str, Any], list[InputRef]]:
    checksum = cube.extra_fields.get("file:checksum") or f"size:{cube.extra_fields.get('file:size')}"
    cid = activated.collection_id or ""
    ref = InputRef(
        collection=cid,
        id=activated.id,
        href=services.catalog.item_href(cid, activated.id),
        checksums={CUBE_ASSET: checksum},
    )
    params_json = {**p.model_dump(mode="json"), **records}
    files = input_file_refs(prod.input_files(p))  # a changed reference file changes the key
    return derivation_key([ref, *files], prod.name, prod.version, params_json), ref, params_json, files


def expected_product_key(
    services: Services, activated: pystac.Item, product: str, params: Mapping[str, Any] | None = None
) -> str:
    """The key :func:`plan_product` would give, from the activated item (no pixels): what ``hsi plan``
    compares with the stored product item. Raises ProductError for bad parameters."""
    return expected_product_params(services, activated, product, params)[0]


def expected_product_params(
    services: Services, activated: pystac.Item, product: str, params: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """(key, recorded parameters) :func:`plan_product` would give. Only when the input plan depends on
    the COG headers (TOA on a radiance scene, an applied quality mask) are they read; never pixels."""
    prod = get_product(product)
    p, opts = parse_request_params(prod, params)
    cube = activated.assets.get(CUBE_ASSET)
    if cube is None:
        raise InvalidInputError(
            f"activated item {activated.collection_id}/{activated.id} has no '{CUBE_ASSET}' asset"
        )
    header = _cube_header(services, activated, cube) if _header_needed(activated, prod, opts) else None
    inputs = _input_plan(activated, prod, opts, header)
    key, _, params_json, _ = _key_parts(services, activated, cube, prod, p, inputs.records)
    return key, params_json


def input_file_refs(files: Mapping[str, str]) -> list[InputRef]:
    """One :class:`InputRef` per input-file parameter (collection ``file``, id ``<param>:<path>``) with
    the file's content checksum, so that a changed file at the same path changes the product key.
    InvalidInputError when a file cannot be read."""
    out = []
    for name, path in sorted(files.items()):
        try:
            checksum = file_checksum(path)
        except OSError as exc:
            raise InvalidInputError(f"parameter '{name}': cannot read input file {path}: {exc}") from exc
        out.append(InputRef(collection="file", id=f"{name}:{path}", checksums={"file": checksum}))
    return out


def check_done(services: Services, plan: ProductPlan, *, verify_checksums: bool = False) -> str | None:
    """Skip reason when the product item is up to date (same key, assets complete), else None."""
    return _check_done(services, plan.collection, plan.item_id, plan.key, verify_checksums=verify_checksums)


# ------------------------------------------------------------------------------------- upload
def upload_outputs(services: Services, plan: ProductPlan, files: Mapping[str, Path]) -> dict[str, ObjectInfo]:
    """Copy outputs to ``<collection>/<item id>/<file name>`` (deterministic keys, atomic per object)."""
    return _upload(services, plan.collection, plan.item_id, files)


# ----------------------------------------------------------------------------------- register
def _lineage(plan: ProductPlan) -> str:
    used = ", ".join(f"b{b['index']} {b['wavelength']:.1f} nm" for b in plan.bands_used[:12])
    more = f" (+{len(plan.bands_used) - 12} more)" if len(plan.bands_used) > 12 else ""
    return (
        f"{plan.title} ('{plan.product}' {plan.version}) computed by hsi-pipeline in windows over the "
        f"analysis-ready cube of {plan.input.collection}/{plan.input.id}, reading only bands "
        f"{used}{more}; written as a COG with overviews"
    )


def build_product_item(
    services: Services,
    plan: ProductPlan,
    computed: Computed,
    uploaded: Mapping[str, ObjectInfo],
    activated: pystac.Item,
    run: RunInfo,
) -> pystac.Item:
    """The product item with provenance (``derived_from`` the activated item, flow run, key)."""
    d, t = uploaded["data"], uploaded.get("thumbnail")
    thumb = (
        AssetRef(
            public_href(services, t.uri),
            "image/png",
            ("thumbnail", "overview"),
            f"{plan.product} preview (colour map + legend)",
            t.size,
            t.checksum,
        )
        if t
        else None
    )
    item = product_item(
        activated=activated,
        product=plan.product,
        result=computed.result,
        data=data_asset_ref(public_href(services, d.uri), d.size, d.checksum, f"{plan.title} (COG)"),
        thumbnail=thumb,
        proj=computed.proj,
        classes=computed.classes,
        title=f"{plan.product} of {activated.id}",
    )
    for key, info in uploaded.items():  # fit details (e.g. PCA loadings) as JSON assets
        if key not in ("data", "thumbnail"):
            item.add_asset(
                key,
                AssetRef(
                    public_href(services, info.uri),
                    "application/json",
                    ("metadata",),
                    f"{plan.product} fitted model ({key}): statistics to interpret and reproduce the output",
                    info.size,
                    info.checksum,
                ).to_asset(),
            )
    prov = Provenance(
        algorithm=plan.product,
        algorithm_version=plan.version,
        parameters=plan.params,
        inputs=[plan.input, *plan.files],
        level=PRODUCT_LEVEL,
        lineage=_lineage(plan),
        run=run,
    )
    item = apply_provenance(item, prov)
    if item.properties["hsi:product_key"] != plan.key:  # same recipe as the plan, by construction
        raise RuntimeError(f"{plan.collection}/{plan.item_id}: key mismatch between plan and provenance")
    return item


def register(services: Services, item: pystac.Item) -> pystac.Item:
    """Validate ``item``, upsert it (the commit point), read it back and validate the stored document."""
    cid = item.collection_id or ""
    probe = item.clone()  # the catalog adds the collection link the core schema requires
    probe.add_link(pystac.Link("collection", "../collection.json", media_type="application/json"))
    validate_item(probe)
    services.catalog.ensure_collection(collection_for(cid))
    services.catalog.upsert_item(item)
    stored = services.catalog.get_item(cid, item.id)
    if stored is None:
        raise ItemNotFoundError(cid, item.id, services.catalog.href)
    validate_item(stored)
    log.info("registered %s/%s (key %s)", cid, item.id, item.properties["hsi:product_key"][:12])
    return stored
