"""Activation flow: raw item -> analysis-ready COG + activated STAC item (idempotent)."""

from __future__ import annotations

import shutil
import uuid
from typing import Any

from prefect import flow, get_run_logger

from hsi.cog import CogProfile
from hsi.events import (
    EventResource,
    scene_activated_event,
    stage_outcome_event,
)
from tasks import activation as t
from tasks.runtime import emit, get_config, services


@flow(name="activate", flow_run_name="activate-{item_id}", validate_parameters=True)
def activate_scene(
    item_id: str,
    collection: str | None = None,
    force: bool = False,
    config: str | None = None,
    profile: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Activate one indexed raw scene (``item_id`` = ``<source>-<scene id>``).

    Skips when the activated item is up to date (same key, assets complete) unless ``force``.
    ``trigger`` carries the triggering event (templated by the automation) for provenance.
    """
    log = get_run_logger()
    cfg = get_config(config)
    prof = CogProfile(**(profile or {}))
    raw = t.resolve_raw_item(item_id, collection, cfg)
    props = raw["properties"]
    source, level, scene_id = props["hsi:source"], props.get("hsi:level", "l1b"), props["hsi:scene_id"]
    coll = f"{source}-{level}"
    svc = services(cfg)
    resource = EventResource(collection=coll, item_id=item_id, source=source, scene_id=scene_id)
    item_href = svc.catalog.item_href(coll, item_id)
    key, ref, skip = t.check_activated(raw, prof, cfg)
    base = {"collection": coll, "item_id": item_id, "item_href": item_href, "product_key": key}
    if skip and not force:
        log.info("skipped: %s", skip)
        emit(stage_outcome_event("activate", "skipped", resource=resource, reason=skip,
                                 payload={"catalog_href": svc.catalog.href, "item_href": item_href, "product_key": key}))
        return {"status": "skipped", "reason": skip, **base}
    uploaded: dict[str, Any] = {}
    out_dir = svc.work_dir / "out" / f"{item_id}-{uuid.uuid4().hex[:8]}"  # private to this run (scratch only)
    try:
        entry = t.fetch_raw(raw, cfg)
        conv = t.convert(entry, item_id, source, prof, out_dir, cfg)
        uploaded = t.upload(coll, item_id, dict(conv.files), cfg)
        t.register_activated(conv, uploaded, raw, ref, prof, trigger, cfg)
    except Exception as e:
        # Assets uploaded before a failed registration stay at their deterministic keys (a concurrent
        # run may own an item pointing at them); they are recorded here and overwritten by the next run.
        orphans = sorted(o.uri for o in uploaded.values())
        if orphans:
            log.warning("registration failed; unregistered assets left at %s (the next run replaces them)",
                        ", ".join(orphans))
        emit(stage_outcome_event("activate", "failed", resource=resource, reason=f"{type(e).__name__}: {e}",
                                 payload={"catalog_href": svc.catalog.href, "item_href": item_href, "product_key": key,
                                          "extra": {"unregistered_assets": orphans}}))
        raise
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    cube = uploaded["cube"]
    emit(scene_activated_event(
        source=source, scene_id=scene_id, collection=coll, item_id=item_id, catalog_href=svc.catalog.href,
        product_key=key, item_href=item_href, uri=cube.uri, size=cube.size, checksum=cube.checksum or "",
        raw_item=(raw["collection"], item_id),
    ))
    log.info("activated %s/%s -> %s", coll, item_id, cube.uri)
    return {"status": "activated", "reason": "", "cube": cube.uri, **base}
