"""Prefect task for AOI clips of product items: a thin sequence of :mod:`hsi.clip` steps."""

from __future__ import annotations

import shutil
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hsi import clip as hc
from hsi.errors import ItemNotFoundError
from hsi.planning import aoi_from
from hsi_pipeline.tasks.runtime import retry_if_transient, run_info, services

__all__ = ["clip_product"]


@task(
    name="clip-product",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def clip_product(
    collection: str, item_id: str, aoi: dict[str, Any], force: bool = False, config: Any = None
) -> dict[str, Any]:
    """Clip the product item ``collection/item_id`` to the AOI geometry (EPSG:4326); idempotent.

    Returns ``{"status": "published" | "skipped", "reason", "collection", "item_id", "item_href", "asset"}``.
    """
    svc, log = services(config), get_run_logger()
    product = svc.catalog.get_item(collection, item_id)
    if product is None:
        raise ItemNotFoundError(collection, item_id, svc.catalog.href)
    plan = hc.plan_clip(svc, product, aoi_from(geometry=aoi))
    out = {
        "collection": plan.collection,
        "item_id": plan.item_id,
        "item_href": svc.catalog.item_href(plan.collection, plan.item_id),
    }
    skip = None if force else hc.is_done(svc, plan)
    if skip:
        stored = svc.catalog.get_item(plan.collection, plan.item_id)
        return {
            **out,
            "status": "skipped",
            "reason": skip,
            "asset": stored.assets["data"].href if stored else "",
        }
    work = svc.work_dir / "clips" / plan.item_id
    try:
        written = hc.write_clip(svc, plan, work / f"{plan.item_id}.tif")
        if written is None:
            return {
                **out,
                "status": "skipped",
                "reason": f"the AOI does not overlap the raster of {item_id}",
                "asset": "",
            }
        uploaded = svc.store.put_file(
            work / f"{plan.item_id}.tif",
            svc.store.uri(plan.collection, plan.item_id, f"{plan.item_id}.tif"),
            content_type="image/tiff; application=geotiff; profile=cloud-optimized",
        )
        from hsi.production import register

        item = register(svc, hc.build_clip_item(svc, plan, product, written, uploaded, run_info()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info(
        "clipped %s/%s -> %s/%s (window %s)",
        collection,
        item_id,
        plan.collection,
        plan.item_id,
        written["window"],
    )
    return {**out, "status": "published", "reason": "", "asset": item.assets["data"].href}
