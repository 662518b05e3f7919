"""Prefect tasks for indexing and activation: each is a thin wrapper over one :mod:`hsi.activation` step.

Tasks exchange small, picklable values (item dicts, paths, URIs), never arrays, so they work
under any task runner (threads, Dask) and Prefect never hashes pixel data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pystac
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hsi import activation as act
from hsi.cog_profile import CogProfile
from hsi.scratch import RunScratch
from hsi.stac.provenance import InputRef
from hsi.storage import ObjectInfo
from hsi_pipeline.tasks.runtime import (
    progress_logger,
    reclaim_dead_runs,
    retry_if_transient,
    run_info,
    services,
)


@task(
    name="index-raw-scene",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def index_raw_scene(href: str, source: str | None = None, config: Any = None) -> dict[str, Any]:
    item = act.index_scene(services(config), href, source=source)
    get_run_logger().info("indexed %s/%s from %s", item.collection_id, item.id, href)
    return item.to_dict(include_self_link=False, transform_hrefs=False)


@task(
    name="index-raw-scene",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def index_raw_object(uri: str, source: str | None = None, config: Any = None) -> dict[str, Any]:
    """Index the one raw scene at ``uri`` (``source``: None, "" or "none" = detect it)."""
    forced = None if source in (None, "", "none") else source
    item = act.index_one(services(config), uri, source=forced)
    get_run_logger().info("indexed %s/%s from %s", item.collection_id, item.id, uri)
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def not_activated(raw: dict[str, Any], config: Any = None) -> dict[str, Any] | None:
    """The ``hsi.activate.skipped`` event when the configuration says not to activate ``raw``, else None.
    A plain function (no I/O worth a task run of its own)."""
    svc = services(config)
    reason = act.not_activated_reason(svc, pystac.Item.from_dict(raw))
    return act.not_activated_event(raw, reason, svc.catalog.href) if reason else None


@task(
    name="resolve-raw-item",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def resolve_raw_item(item_id: str, collection: str | None = None, config: Any = None) -> dict[str, Any]:
    raw = act.find_raw_item(services(config), item_id, collection)
    return raw.to_dict(include_self_link=False, transform_hrefs=False)


@task(
    name="check-activated",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def check_activated(
    raw: dict[str, Any], profile: CogProfile, config: Any = None
) -> tuple[str, InputRef, str | None]:
    """(key, input reference, skip reason or None)."""
    svc = services(config)
    item = pystac.Item.from_dict(raw)
    key, ref = act.activation_key(svc, item, profile)
    return key, ref, act.check_done(svc, act.activated_collection(item), item.id, key)


@task(
    name="plan-activation",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def plan_activation(raw: dict[str, Any], profile: CogProfile, config: Any = None) -> act.ActivationPlan:
    """Reclaim what dead runs left (scratch, their unfinished uploads), then: target, key and whether
    the activated item is up to date (``plan.skip``)."""
    svc = services(config)
    reclaim_dead_runs(svc)
    return act.plan_activation(svc, pystac.Item.from_dict(raw), profile)


def open_run(prefix: str, config: Any = None) -> RunScratch:
    """Open this run's scratch directory (a plain function: a local ``mkdir``, not worth a task run)."""
    svc = services(config)
    scratch = svc.open_run(prefix)
    get_run_logger().debug("scratch %s", scratch.path)
    return scratch


def close_run(scratch: RunScratch, config: Any = None) -> None:
    """Abort this run's unfinished uploads and delete its scratch (a plain function: it runs in the
    flow's ``finally`` and has nothing to retry)."""
    aborted = services(config).finish_run(scratch)
    if aborted:
        get_run_logger().info("aborted unfinished uploads: %s", ", ".join(aborted))


@task(
    name="fetch-raw",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
def fetch_raw(raw: dict[str, Any], config: Any = None, dest: Path | None = None) -> Path:
    """Stage the raw assets into ``dest`` (the run's scratch directory, which the run deletes)."""
    if dest is None:
        raise ValueError("fetch_raw: dest (the run's private scratch directory) is required")
    return act.fetch_raw(services(config), pystac.Item.from_dict(raw), dest)


@task(name="convert-to-cog", cache_policy=NO_CACHE)
def convert(
    entry: Path,
    item_id: str,
    source: str | None,
    profile: CogProfile,
    scratch: RunScratch,
    config: Any = None,
) -> act.Converted:
    log = get_run_logger()
    svc = services(config)
    conv = act.convert(
        entry,
        scratch.sub("out"),
        source=source,
        profile=profile,
        work_dir=scratch.sub("extract"),
        progress=progress_logger(log, f"writing {item_id}"),
        limits=svc.config.archive_limits.limits(),
    )
    log.info(
        "%s: COG %dx%dx%d %s (%s-interleaved)",
        item_id,
        conv.cog.width,
        conv.cog.height,
        conv.cog.count,
        conv.cog.dtype,
        conv.cog.interleave.lower(),
    )
    return conv


@task(
    name="upload-assets",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
def upload(
    collection: str, item_id: str, files: dict[str, Path], config: Any = None
) -> dict[str, ObjectInfo]:
    return act.upload_outputs(services(config), collection, item_id, files)


@task(
    name="register-item",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def register_activated(
    conv: act.Converted,
    uploaded: dict[str, ObjectInfo],
    raw: dict[str, Any],
    key_input: InputRef,
    profile: CogProfile,
    trigger: dict[str, Any] | None = None,
    config: Any = None,
) -> dict[str, Any]:
    """Build the activated item with provenance and upsert it: the commit point."""
    svc = services(config)
    item = act.build_activated_item(
        svc, conv, uploaded, pystac.Item.from_dict(raw), key_input, profile, run_info(trigger)
    )
    act.register_activated(svc, item)
    get_run_logger().info("registered %s/%s in %s", item.collection_id, item.id, svc.catalog.href)
    return item.to_dict(include_self_link=False, transform_hrefs=False)
