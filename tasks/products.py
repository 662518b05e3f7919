"""Prefect tasks for product runs: each is a thin wrapper over one :mod:`hsi.production` step.

Tasks exchange small, picklable values (item dicts, the :class:`~hsi.production.ProductPlan`,
paths, object infos), never arrays. Invalid input (unknown product, bad parameters, a band the
scene lacks) fails at once; transient failures (catalog, storage) are retried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pystac
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hsi import production as prod
from hsi.product_compute import Computed, compute
from hsi.storage import ObjectInfo
from hsi_pipeline.tasks.runtime import (
    progress_logger,
    reclaim_dead_runs,
    retry_if_transient,
    run_info,
    services,
)

__all__ = [
    "check_product_done",
    "compute_product",
    "plan_product",
    "register_product",
    "resolve_activated_item",
    "upload_product",
]


@task(
    name="resolve-activated-item",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def resolve_activated_item(item_id: str, collection: str | None = None, config: Any = None) -> dict[str, Any]:
    item = prod.find_activated_item(services(config), item_id, collection)
    return item.to_dict(include_self_link=False, transform_hrefs=False)


@task(
    name="plan-product",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def plan_product(
    activated: dict[str, Any], product: str, params: dict[str, Any] | None = None, config: Any = None
) -> prod.ProductPlan:
    """Reclaim what dead runs left, then validate parameters, select bands from the cube header (no
    pixels), compute the key."""
    svc = services(config)
    reclaim_dead_runs(svc)
    plan = prod.plan_product(svc, pystac.Item.from_dict(activated), product, params)
    get_run_logger().info(
        "%s on %s: bands %s; key %s",
        plan.product,
        plan.input.id,
        [f"b{b['index']}@{b['wavelength']:.1f}" for b in plan.bands_used[:8]],
        plan.key[:12],
    )
    return plan


@task(
    name="check-product-done",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def check_product_done(plan: prod.ProductPlan, config: Any = None) -> str | None:
    """The skip reason when the product item is up to date, else None."""
    return prod.check_done(services(config), plan)


@task(
    name="stored-product-asset",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def stored_product_asset(plan: prod.ProductPlan, config: Any = None) -> str:
    """The href of the stored product item's data asset ("" when there is none)."""
    stored = services(config).catalog.get_item(plan.collection, plan.item_id)
    return stored.assets["data"].href if stored is not None and "data" in stored.assets else ""


@task(name="compute-product", cache_policy=NO_CACHE)
def compute_product(plan: prod.ProductPlan, out_dir: Path, config: Any = None) -> Computed:
    svc = services(config)
    log = get_run_logger()
    out = compute(svc, plan, out_dir, progress=progress_logger(log, f"computing {plan.item_id}", step=25))
    r = out.result
    log.info(
        "%s: %dx%d, %d windows, read %d bands%s",
        plan.item_id,
        r.width,
        r.height,
        r.windows,
        len(r.bands_read),
        f"; classes {r.class_fractions}" if r.class_fractions else "",
    )
    return out


@task(
    name="upload-product",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
def upload_product(
    plan: prod.ProductPlan, files: dict[str, Any], config: Any = None
) -> dict[str, ObjectInfo]:
    return prod.upload_outputs(services(config), plan, files)


@task(
    name="register-product",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
)
def register_product(
    plan: prod.ProductPlan,
    computed: Computed,
    uploaded: dict[str, ObjectInfo],
    activated: dict[str, Any],
    trigger: dict[str, Any] | None = None,
    config: Any = None,
) -> dict[str, Any]:
    """Build the product item with provenance, upsert it (the commit point), validate it read back."""
    svc = services(config)
    item = prod.build_product_item(
        svc, plan, computed, uploaded, pystac.Item.from_dict(activated), run_info(trigger)
    )
    stored = prod.register(svc, item)
    get_run_logger().info("registered %s/%s in %s", stored.collection_id, stored.id, svc.catalog.href)
    return stored.to_dict(include_self_link=False, transform_hrefs=False)
