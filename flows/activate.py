"""Activation flow: raw item -> analysis-ready COG + activated STAC item (idempotent).

Deployed twice (deployments/generate.py): ``activate/activate`` (manual, by raw item id) and
``activate/new-scene``, which the ``hsi-new-scene`` automation runs on ``hsi.raw.available`` with the
raw object's ``uri``: the flow then indexes the object inline (one task, no subflow) and activates
it in the same run, so activation starts as soon as the triggered run does.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any

from prefect import flow, get_run_logger

from hsi.activation import discover_scenes
from hsi.cog import CogProfile
from hsi.config import PipelineConfig
from hsi.events import (
    NONE,
    EventResource,
    scene_activated_event,
    stage_outcome_event,
)
from hsi_pipeline.tasks import activation as t
from hsi_pipeline.tasks.ops import note_done, note_failure
from hsi_pipeline.tasks.reporting import publish_item_artifacts, tag_run
from hsi_pipeline.tasks.runtime import emit, get_config, services


def _run_name() -> str:
    """``activate-<item_id>`` or ``activate-<basename of uri>`` (never fails: a bad call is reported by the flow)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    if params.get("item_id"):
        return f"activate-{params['item_id']}"
    uri = str(params.get("uri") or "").rstrip("/")
    return f"activate-{uri.rsplit('/', 1)[-1] or '?'}"


def _index_one(uri: str, source: str | None, cfg: PipelineConfig) -> dict[str, Any]:
    """Index the one raw scene at ``uri`` inline (a task of this run) and return its raw item."""
    entries = discover_scenes(uri)
    if len(entries) != 1:
        found = f": {', '.join(entries)}" if entries else ""
        raise ValueError(f"{uri}: expected exactly one raw scene, found {len(entries)}{found}")
    forced = None if source in (None, "", NONE) else source
    return t.index_raw_scene(entries[0], forced, cfg)


@flow(name="activate", flow_run_name=_run_name, validate_parameters=True)
def activate_scene(
    item_id: str | None = None,
    collection: str | None = None,
    force: bool = False,
    config: str | None = None,
    profile: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    uri: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Activate one raw scene, given either as an indexed raw item or as a raw object to index first.

    Exactly one of:

    * ``item_id`` (``<source>-<scene id>``, optionally with its raw ``collection``): an indexed raw item;
    * ``uri`` (s3://, http(s) or a local path of ONE raw scene: an ENVI header/data file or an
      archive): indexed inline first (the raw item is registered/updated), then activated unless the
      configuration says ``sources.<source>.activate: false`` (then ``status`` is ``"indexed"``).
      ``source`` forces the source (``None``/``""``/``"none"``: detect it).

    Skips when the activated item is up to date (same key, assets complete) unless ``force``.
    ``trigger`` carries the triggering event (templated by the automation) for provenance.

    Args:
        item_id: Indexed raw item id, e.g. aviris-ng-ang20150420t182050 (or give uri instead).
        collection: Collection of the raw item (default: <source>-raw).
        force: Re-activate even when an up-to-date activated item exists.
        config: Path of the hsi.yaml configuration (default: $HSI_CONFIG, else the embedded default).
        profile: COG profile overrides, e.g. {"blocksize": 512, "compress": "ZSTD"}.
        trigger: Set by automations from the triggering event (provenance); leave empty.
        uri: A raw object to index first and then activate (s3://, http(s) or a local path).
        source: Source of the raw object (default: detected from its name and header).
    """
    if (item_id is None) == (uri is None):
        got = "both" if item_id is not None else "neither"
        raise ValueError(f"activate_scene: give exactly one of item_id (an indexed raw item) or uri "
                         f"(a raw object to index), got {got}")  # fmt: skip
    log = get_run_logger()
    cfg = get_config(config)
    prof = CogProfile(**(profile or {}))
    out: dict[str, Any] = {}
    if uri is not None:
        raw = _index_one(uri, source, cfg)
        item_id = str(raw["id"])
        out = {"uri": uri, "raw": {"collection": raw["collection"], "item_id": item_id}}
        src = raw["properties"]["hsi:source"]
        sc = cfg.sources.get(src)
        if sc is not None and not sc.activate:
            reason = f"sources.{src}.activate is false"
            log.info("%s: indexed; not activated (%s)", item_id, reason)
            emit(stage_outcome_event(
                "activate", "skipped", reason=reason, payload={"catalog_href": services(cfg).catalog.href},
                resource=EventResource(collection=raw["collection"], item_id=item_id, source=src,
                                       scene_id=raw["properties"].get("hsi:scene_id", "")),
            ))  # fmt: skip
            return {
                **out,
                "status": "indexed",
                "reason": reason,
                "item_id": item_id,
            }
    else:
        assert item_id is not None
        raw = t.resolve_raw_item(item_id, collection, cfg)
    props = raw["properties"]
    source, level, scene_id = props["hsi:source"], props.get("hsi:level", "l1b"), props["hsi:scene_id"]
    tag_run(scene_id, source)
    coll = f"{source}-{level}"
    svc = services(cfg)
    resource = EventResource(collection=coll, item_id=item_id, source=source, scene_id=scene_id)
    item_href = svc.catalog.item_href(coll, item_id)
    key, ref, skip = t.check_activated(raw, prof, cfg)
    base = {"collection": coll, "item_id": item_id, "item_href": item_href, "product_key": key}
    if skip and not force:
        log.info("skipped: %s", skip)
        emit(
            stage_outcome_event(
                "activate",
                "skipped",
                resource=resource,
                reason=skip,
                payload={"catalog_href": svc.catalog.href, "item_href": item_href, "product_key": key},
            )
        )
        note_done(cfg, coll, item_id)
        return {**out, "status": "skipped", "reason": skip, **base}
    uploaded: dict[str, Any] = {}
    out_dir = svc.work_dir / "out" / f"{item_id}-{uuid.uuid4().hex[:8]}"  # private to this run (scratch only)
    try:
        entry = t.fetch_raw(raw, cfg, dest=out_dir / "raw")  # the run's private staging copy
        conv = t.convert(entry, item_id, source, prof, out_dir, cfg)
        uploaded = t.upload(coll, item_id, dict(conv.files), cfg)
        item = t.register_activated(conv, uploaded, raw, ref, prof, trigger, cfg)
    except Exception as e:
        # Assets uploaded before a failed registration stay at their deterministic keys (a concurrent
        # run may own an item pointing at them); they are recorded here and overwritten by the next run.
        orphans = sorted(o.uri for o in uploaded.values())
        if orphans:
            log.warning(
                "registration failed; unregistered assets left at %s (the next run replaces them)",
                ", ".join(orphans),
            )
        again = (
            {"uri": uri, "source": source}
            if uri is not None
            else {"item_id": item_id, "collection": collection}
        )
        note_failure(
            cfg, "activate", coll, item_id, f"{type(e).__name__}: {e}", {**again, "profile": profile}
        )
        emit(
            stage_outcome_event(
                "activate",
                "failed",
                resource=resource,
                reason=f"{type(e).__name__}: {e}",
                payload={
                    "catalog_href": svc.catalog.href,
                    "item_href": item_href,
                    "product_key": key,
                    "extra": {"unregistered_assets": orphans},
                },
            )
        )
        raise
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    publish_item_artifacts(item, cfg)
    cube = uploaded["cube"]
    emit(
        scene_activated_event(
            source=source,
            scene_id=scene_id,
            collection=coll,
            item_id=item_id,
            catalog_href=svc.catalog.href,
            product_key=key,
            item_href=item_href,
            uri=cube.uri,
            size=cube.size,
            checksum=cube.checksum or "",
            raw_item=(raw["collection"], item_id),
        )
    )
    note_done(cfg, coll, item_id)
    log.info("activated %s/%s -> %s", coll, item_id, cube.uri)
    return {**out, "status": "activated", "reason": "", "cube": cube.uri, **base}
