"""On-demand analysis: an AOI + time range + products -> every intersecting scene processed.

The supervisor of DESIGN.md §1, an ordinary flow at the application level::

    prefect deployment run 'on-demand/on-demand' --param products='["index:NDVI"]' \\
        --param bbox='[-120.1, 36.9, -119.9, 37.1]' --param start=2024-01-01 --param end=2024-12-31
    hsi run index:NDVI --bbox -120.1,36.9,-119.9,37.1 --start 2024-01-01 --end 2024-12-31
    on_demand(products=["index:NDVI"], bbox=[...], return_state=True)      # notebook

Steps: plan (:func:`hsi.planning.plan_request`: which ``<source>-raw`` scenes intersect the AOI
and time range, which are activated and up to date), then one ``process-scene`` task per scene,
submitted on the configured engine (threads, Dask; :mod:`hsi_pipeline.flows.engine`) inside the
``on-demand-scenes`` subflow: activate when missing/stale (``activate`` subflow), run each product
(``product`` subflow), clip to the AOI when asked. One failing scene never stops the others.

Outcome: a table artifact (``on-demand-outcomes``), a markdown summary with quicklooks
(``on-demand-summary``) and a progress artifact updated as scenes complete. Final state:

* ``Completed`` when every (scene, product) was published or skipped (or nothing matched);
* ``Failed`` named **Partial** when some failed and some succeeded;
* ``Failed`` when all failed.

A non-Completed run carries :class:`OnDemandFailed` whose ``.result`` is the same dict a
Completed run returns (status, counts, scenes, outcomes), so nothing is lost.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Failed, State

from hsi.planning import (
    Outcome,
    Plan,
    aoi_from,
    overall_status,
    plan_request,
    summarize,
    time_range,
)
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.engine import describe_engine, with_engine
from hsi_pipeline.flows.product import run_product
from hsi_pipeline.tasks.clip import clip_product
from hsi_pipeline.tasks.reporting import Progress, publish_outcomes
from hsi_pipeline.tasks.runtime import get_config, retry_if_transient, services

__all__ = ["OnDemandFailed", "on_demand", "process_scene", "run_scenes"]


class OnDemandFailed(Exception):
    """Some (``Partial``) or all (scene, product) pairs failed; ``.result`` holds the full outcome."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message, result)
        self.result = result

    def __str__(self) -> str:
        return str(self.args[0])


def _reason(state: State[Any], limit: int = 500) -> str:
    """Why a subflow/task run failed: the exception type and message (first ``limit`` characters)."""
    exc = state.result(raise_on_failure=False)
    text = (
        f"{type(exc).__name__}: {exc}"
        if isinstance(exc, BaseException)
        else (state.message or state.name or "")
    )
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@task(
    name="plan-on-demand",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def plan_on_demand(
    aoi: dict[str, Any],
    start: str | None,
    end: str | None,
    products: list[Any],
    sources: list[str] | None,
    force: bool,
    config: str | None,
) -> Plan:
    return plan_request(
        services(config),
        aoi=aoi_from(geometry=aoi),
        time_range=time_range(start, end),
        products=products,
        sources=sources,
        force=force,
    )


@task(name="process-scene", task_run_name="process-{scene[item_id]}", cache_policy=NO_CACHE)
def process_scene(
    scene: dict[str, Any],
    products: list[dict[str, Any]],
    force: bool = False,
    clip_aoi: dict[str, Any] | None = None,
    config: str | None = None,
) -> list[dict[str, Any]]:
    """Activate one scene when needed, then run every product (and clip); one outcome dict per product."""
    log = get_run_logger()
    item_id = scene["item_id"]
    activation = "skipped"
    if scene["activate"]:
        st = activate_scene(
            item_id=item_id, collection=scene["raw_collection"], force=force, config=config, return_state=True
        )
        if not st.is_completed():
            reason = f"activation of {item_id} failed: {_reason(st)}"
            log.error(reason)
            return [
                Outcome(item_id, p["product"], "failed", reason, activation="failed").as_dict()
                for p in products
            ]
        activation = st.result()["status"]
    catalog = services(config).catalog
    rows = []
    for p in products:
        st = run_product(
            item_id=item_id,
            product=p["product"],
            params=p.get("params") or None,
            force=force,
            config=config,
            collection=scene["activated_collection"],
            return_state=True,
        )
        if not st.is_completed():
            rows.append(Outcome(item_id, p["product"], "failed", _reason(st), activation=activation))
            continue
        res = st.result()
        stored = catalog.get_item(res["collection"], res["item_id"])
        thumb = stored.assets["thumbnail"].href if stored is not None and "thumbnail" in stored.assets else ""
        out = Outcome(
            item_id,
            p["product"],
            res["status"],
            res.get("reason", ""),
            activation,
            res["collection"],
            res["item_id"],
            res["item_href"],
            res.get("asset", ""),
            thumb,
        )
        if clip_aoi is not None:
            cs = clip_product(res["collection"], res["item_id"], clip_aoi, force, config, return_state=True)
            if cs.is_completed():
                c = cs.result()
                out = Outcome(**{**out.as_dict(), "clip_href": c["item_href"] if c["asset"] else ""})
                if c["status"] == "skipped" and not c["asset"]:
                    out = Outcome(
                        **{**out.as_dict(), "reason": (out.reason + "; " if out.reason else "") + c["reason"]}
                    )
            else:
                out = Outcome(
                    **{
                        **out.as_dict(),
                        "status": "failed",
                        "reason": f"product {res['status']}, AOI clip failed: {_reason(cs)}",
                    }
                )
        rows.append(out)
    return [r.as_dict() for r in rows]


@flow(name="on-demand-scenes", validate_parameters=False)
def run_scenes(
    scenes: list[dict[str, Any]],
    products: list[dict[str, Any]],
    force: bool = False,
    clip_aoi: dict[str, Any] | None = None,
    config: str | None = None,
    progress_id: str | None = None,
) -> list[dict[str, Any]]:
    """Submit one ``process-scene`` task per scene on this flow's task runner; collect every outcome."""
    log = get_run_logger()
    progress = Progress.attach(progress_id, len(scenes))
    futures = [process_scene.submit(s, products, force, clip_aoi, config) for s in scenes]
    by_run = {f.task_run_id: s for f, s in zip(futures, scenes, strict=True)}
    by_scene: dict[str, list[dict[str, Any]]] = {}
    for fut in as_completed(futures):
        scene = by_run[fut.task_run_id]
        try:
            by_scene[scene["item_id"]] = fut.result()
        except Exception as e:  # a crashed task (e.g. a lost Dask worker) fails only its scene
            reason = f"scene task failed: {type(e).__name__}: {e}"
            log.error("%s: %s", scene["item_id"], reason)
            by_scene[scene["item_id"]] = [
                Outcome(scene["item_id"], p["product"], "failed", reason).as_dict() for p in products
            ]
        pct = progress.advance()
        log.info("%s done (%d/%d scenes, %.0f%%)", scene["item_id"], progress.done, len(scenes), pct)
    return [row for s in scenes for row in by_scene[s["item_id"]]]


@flow(name="on-demand", validate_parameters=True)
def on_demand(
    products: list[str | dict[str, Any]],
    bbox: list[float] | None = None,
    aoi: dict[str, Any] | None = None,
    start: str | None = None,
    end: str | None = None,
    sources: list[str] | None = None,
    clip: bool = False,
    force: bool = False,
    config: str | None = None,
) -> dict[str, Any]:
    """Run ``products`` on every raw scene intersecting the AOI (``bbox`` W,S,E,N or a GeoJSON
    ``aoi`` geometry, EPSG:4326) acquired between ``start`` and ``end`` (ISO dates, inclusive),
    optionally only of ``sources``; activate scenes as needed; ``clip`` also publishes AOI clips."""
    log = get_run_logger()
    cfg = get_config(config)
    area = aoi_from(bbox=bbox, geometry=aoi)  # invalid input fails here, before any work
    plan = plan_on_demand(dict(area.geometry), start, end, list(products), sources, force, config)
    prods = [{"product": r.product, "params": dict(r.params)} for r in plan.products]
    log.info(
        "AOI %s (%s), %s..%s: %d scene(s), products %s, engine %s",
        area.short,
        area.bbox,
        start or "*",
        end or "*",
        len(plan.scenes),
        ", ".join(r.label() for r in plan.products),
        describe_engine(cfg),
    )
    for row in plan.table():
        log.info("plan: %s", row)
    progress = Progress(
        len(plan.scenes),
        key="on-demand-progress",
        description=f"scenes done of {len(plan.scenes)} (AOI {area.short})",
    )
    rows = (
        with_engine(run_scenes, cfg)(
            scenes=[s.as_dict() for s in plan.scenes],
            products=prods,
            force=force,
            clip_aoi=dict(area.geometry) if clip else None,
            config=config,
            progress_id=str(progress.id) if progress.id else None,
        )
        if plan.scenes
        else []
    )
    outcomes = [Outcome.from_dict(r) for r in rows]
    counts, overall = summarize(outcomes), overall_status(outcomes)
    svc = services(cfg)
    quicklooks = {}
    for s in plan.scenes:
        item = svc.catalog.get_item(s.activated_collection, s.item_id)
        if item is not None and "thumbnail" in item.assets:
            quicklooks[s.item_id] = item.assets["thumbnail"].href
    context = {
        "AOI": f"{area.short} bbox {list(area.bbox)}",
        "time": f"{start or '*'} .. {end or '*'}",
        "sources": ", ".join(sources or []) or "all",
        "engine": describe_engine(cfg),
        "catalog": svc.catalog.href,
        "clip": clip,
        "force": force,
    }
    artifacts = publish_outcomes(
        outcomes,
        key="on-demand",
        title=f"On-demand run (AOI {area.short})",
        context=context,
        scene_quicklooks=quicklooks,
    )
    result = {
        "status": overall,
        "counts": counts,
        "aoi_key": area.key,
        "bbox": list(area.bbox),
        "engine": describe_engine(cfg),
        "catalog": svc.catalog.href,
        "scenes": [s.as_dict() for s in plan.scenes],
        "outcomes": rows,
        "artifacts": artifacts,
    }
    if not plan.scenes:
        log.warning("no raw scene intersects AOI %s in %s..%s", area.short, start or "*", end or "*")
    if overall == "ok":
        return result
    failed = [o for o in outcomes if o.status == "failed"]
    msg = (
        f"{counts['failed']} of {counts['total']} scene/product runs failed: "
        + "; ".join(f"{o.scene}/{o.product}: {o.reason}" for o in failed[:5])
        + (f" (+{len(failed) - 5} more)" if len(failed) > 5 else "")
    )
    log.error(msg)
    return Failed(
        name="Partial" if overall == "partial" else "Failed",
        message=msg,  # type: ignore[return-value]
        data=OnDemandFailed(msg, result),
    )
