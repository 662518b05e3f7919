"""Activation flow: raw item -> analysis-ready COG + activated STAC item (idempotent).

Deployed twice (deployments/generate.py): ``activate/activate`` (manual, by raw item id) and
``activate/new-scene``, which the ``hsi-new-scene`` automation runs on ``hsi.raw.available`` with the
raw object's ``uri``: the flow then indexes the object inline (one task, no subflow) and activates
it in the same run, so activation starts as soon as the triggered run does.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from hsi.cog_profile import CogProfile
from hsi.storage import ObjectInfo
from hsi_pipeline.flows.product import ProductRunsFailed, product_row
from hsi_pipeline.tasks import activation as t
from hsi_pipeline.tasks.ops import note_done, note_failure
from hsi_pipeline.tasks.reporting import publish_item_artifacts, tag_run
from hsi_pipeline.tasks.runtime import as_is, emit, get_config, item_lease


def _run_name() -> str:
    """``activate-<item_id>`` or ``activate-<basename of uri>`` (never fails: a bad call is reported by the flow)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    if params.get("item_id"):
        return f"activate-{params['item_id']}"
    uri = str(params.get("uri") or "").rstrip("/")
    return f"activate-{uri.rsplit('/', 1)[-1] or '?'}"


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
    run_products: bool = False,
) -> dict[str, Any]:
    """Activate one raw scene, given either as an indexed raw item or as a raw object to index first.

    Exactly one of:

    * ``item_id`` (``<source>-<scene id>``, optionally with its raw ``collection``): an indexed raw item;
    * ``uri`` (s3://, http(s) or a local path of ONE raw scene: an ENVI header/data file or an
      archive): indexed inline first (the raw item is registered/updated), then activated unless the
      configuration says ``sources.<source>.activate: false`` (then ``status`` is ``"indexed"``).
      ``source`` forces the source (``None``/``""``/``"none"``: detect it).

    Skips when the activated item is up to date (same key, assets complete) unless ``force``.
    Concurrent runs of the same scene take the item's lease in turn: the first does the work, the
    others wait, find the item up to date and skip. Each run works in its own scratch directory
    (``<work_dir>/runs/``), deleted at its end; what a killed run left is reclaimed by the next one.
    ``trigger`` carries the triggering event (templated by the automation) for provenance.
    With ``run_products`` the source's configured products (``sources.<source>.products``, except
    those of container processors, which run in their own image) are computed in this run right
    after the activated item is registered (no second flow run): each publishes its item with this
    run's provenance and emits ``hsi.product.published``; the run ends Failed, after the others
    published, when any of them failed.

    Args:
        item_id: Indexed raw item id, e.g. aviris-ng-ang20150420t182050 (or give uri instead).
        collection: Collection of the raw item (default: <source>-raw).
        force: Re-activate even when an up-to-date activated item exists.
        config: Path of the hsi.yaml configuration (default: $HSI_CONFIG, else the embedded default).
        profile: COG profile overrides, e.g. {"blocksize": 512, "compress": "ZSTD"}.
        trigger: Set by automations from the triggering event (provenance); leave empty.
        uri: A raw object to index first and then activate (s3://, http(s) or a local path).
        source: Source of the raw object (default: detected from its name and header).
        run_products: After activating, run the source's configured products (those without a
            container image) in this run, as the new-scene trigger does.
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
        raw = t.index_raw_object(uri, source, as_is(cfg))
        out = {"uri": uri, "raw": {"collection": raw["collection"], "item_id": raw["id"]}}
        if skipped := t.not_activated(raw, cfg):
            reason = skipped["payload"]["reason"]
            log.info("%s: indexed; not activated (%s)", raw["id"], reason)
            emit(skipped)
            return {**out, "status": "indexed", "reason": reason, "item_id": raw["id"]}
    else:
        raw = t.resolve_raw_item(str(item_id), collection, as_is(cfg))
    plan = t.plan_activation(as_is(raw), prof, as_is(cfg))
    tag_run(plan.scene_id, plan.source)
    again = (
        {"uri": uri, "source": source} if uri is not None else {"item_id": item_id, "collection": collection}
    )
    with item_lease(plan.collection, plan.item_id, cfg):
        if plan.skip is None and not force:  # a run we waited for may have done it meanwhile
            plan = t.plan_activation(as_is(raw), prof, as_is(cfg))
        if plan.skip and not force:
            log.info("skipped: %s", plan.skip)
            emit(plan.outcome_event("skipped", plan.skip))
            note_done(cfg, plan.collection, plan.item_id)
            return {**out, **plan.summary("skipped", plan.skip)}
        cube, item = _activate(plan, raw, prof, trigger, cfg, {**again, "profile": profile})
    emit(plan.activated_event(cube))
    note_done(cfg, plan.collection, plan.item_id)
    log.info("activated %s/%s -> %s", plan.collection, plan.item_id, cube.uri)
    result = {**out, **plan.summary("activated"), "cube": cube.uri}
    if run_products and (requests := cfg.product_groups(plan.source).get(None)):
        rows = [product_row(plan.item_id, req, cfg, collection=plan.collection, trigger=trigger,
                            activated=item) for req in requests]  # fmt: skip
        for r in rows:
            log.info("product %s: %s %s", r["product"], r["status"], r.get("asset") or r.get("reason", ""))
        if any(r["status"] == "failed" for r in rows):
            raise ProductRunsFailed(plan.item_id, rows)
        result["products"] = rows
    return result


def _activate(
    plan: Any, raw: dict[str, Any], prof: CogProfile, trigger: Any, cfg: Any, again: dict[str, Any]
) -> tuple[ObjectInfo, dict[str, Any]]:
    """fetch -> convert -> upload -> register in the run's own scratch, then the run's artifacts; on
    failure the failed event and a failure record (``again``: the parameters that redo the work)."""
    uploaded: dict[str, ObjectInfo] = {}
    scratch = t.open_run(f"activate-{plan.item_id}", cfg)
    try:
        entry = t.fetch_raw(
            as_is(raw), as_is(cfg), dest=scratch.path / "raw"
        )  # the run's private staging copy
        conv = t.convert(entry, plan.item_id, plan.source, prof, scratch, as_is(cfg))
        uploaded = t.upload(plan.collection, plan.item_id, dict(conv.files), as_is(cfg))
        item = t.register_activated(
            as_is(conv), as_is(uploaded), as_is(raw), plan.ref, prof, trigger, as_is(cfg)
        )
    except Exception as e:
        # Assets uploaded before a failed registration stay at their deterministic keys (a concurrent
        # run may own an item pointing at them); they are recorded here and overwritten by the next run.
        orphans = sorted(o.uri for o in uploaded.values())
        if orphans:
            get_run_logger().warning(
                "registration failed; unregistered assets left at %s (the next run replaces them)",
                ", ".join(orphans),
            )
        emit(plan.outcome_event("failed", f"{type(e).__name__}: {e}", unregistered_assets=orphans))
        note_failure(cfg, "activate", plan.collection, plan.item_id, f"{type(e).__name__}: {e}", again)
        raise
    finally:
        t.close_run(scratch, cfg)
    publish_item_artifacts(item, cfg)
    return uploaded["cube"], item
