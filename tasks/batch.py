"""Prefect tasks of batch publishing: thin wrappers over :mod:`hsi.batch` (one task per chunk of scenes)."""

from __future__ import annotations

import shutil
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hsi.batch import publish_batch
from hsi.events import product_published_event
from hsi.stac.product import product_collection
from hsi_pipeline.tasks.runtime import emit, retry_if_transient, run_info, services

__all__ = ["find_activated_items", "publish_chunk"]


@task(
    name="find-activated-items",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def find_activated_items(item_ids: list[str], collection: str, config: Any = None) -> list[dict[str, Any]]:
    """The activated items of ``item_ids`` in ``collection`` (one catalog search); missing ids are absent."""
    found = services(config).catalog.search(collections=[collection], ids=item_ids)
    return [i.to_dict(include_self_link=False, transform_hrefs=False) for i in found]


@task(name="publish-chunk", task_run_name="publish-{label}", cache_policy=NO_CACHE)
def publish_chunk(
    label: str,
    activated: list[dict[str, Any]],
    products: list[tuple[str, dict[str, Any] | None]],
    force: bool = False,
    trigger: dict[str, Any] | None = None,
    config: Any = None,
) -> dict[str, Any]:
    """Every product on every scene of the chunk (:func:`hsi.batch.publish_batch`), one bulk catalog
    write; one ``hsi.product.published`` event per published item. Returns outcomes and phase seconds."""
    import pystac

    log = get_run_logger()
    svc = services(config)
    work = svc.scratch_dir(f"batch-{label}")
    try:
        res = publish_batch(
            svc,
            [pystac.Item.from_dict(d) for d in activated],
            products,
            run_info(trigger),
            work,
            force=force,
            progress=lambda phase, done, total: log.info("%s: %s %d/%d", label, phase, done, total),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by_id = {d["id"]: d for d in activated}
    for o in res.outcomes:
        if o.status == "failed":
            log.error("%s on %s failed: %s", o.product, o.scene, o.reason)
        if o.status != "published":
            continue
        props = by_id[o.scene]["properties"]
        emit(
            product_published_event(
                source=props.get("hsi:source") or "none",
                scene_id=props.get("hsi:scene_id") or "",
                product=o.product,
                collection=o.collection or product_collection(o.product),
                item_id=o.item_id,
                catalog_href=svc.catalog.href,
                product_key=o.product_key,
                item_href=svc.catalog.item_href(o.collection, o.item_id),
                uri=o.asset,
                inputs=[(by_id[o.scene].get("collection") or "", o.scene)],
            )
        )
    return {"outcomes": [o.as_dict() for o in res.outcomes], "seconds": res.seconds}
