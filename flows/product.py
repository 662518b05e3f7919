"""Product flows: one product on one activated scene (idempotent), or several products of a scene.

``run_product`` publishes ``<activated item id>-<slug>`` in ``hsi-<slug>`` (slug: the product name
lower-cased, ``:`` -> ``-``), skips when the item is up to date (same product key, assets
complete), recomputes and replaces the one item when the key changed (new product version or
parameters) or ``force`` is set. Events: ``hsi.product.published`` / ``.skipped`` / ``.failed``
(with the reason). A failure raises (the flow run ends Failed) after the failed event is emitted.

``run_products`` runs several products of one scene in its own run (no subflow per product):
one bad product (e.g. SWIR bands on a VNIR-only cube) does not stop the others; the flow ends
Failed when any product failed, listing every failure with its reason, after the others published.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from hsi.config import PipelineConfig, ProductRun
from hsi.events import EventResource, product_published_event, stage_outcome_event
from hsi.stac.product import product_collection, product_item_id
from hsi_pipeline.tasks import activation as ta
from hsi_pipeline.tasks import products as t
from hsi_pipeline.tasks.ops import note_done, note_failure
from hsi_pipeline.tasks.reporting import publish_item_artifacts, tag_run
from hsi_pipeline.tasks.runtime import as_is, emit, get_config, item_lease, services

__all__ = ["ProductRunsFailed", "product_row", "publish_product", "run_product", "run_products"]


class ProductRunsFailed(RuntimeError):
    """Some products of a ``run_products`` call failed; ``rows`` holds every product's outcome."""

    def __init__(self, item_id: str, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        failed = [r for r in rows if r["status"] == "failed"]
        detail = "; ".join(f"{r['product']}: {r['reason']}" for r in failed)
        super().__init__(f"{len(failed)} of {len(rows)} products failed on {item_id}: {detail}")


@flow(name="product", flow_run_name="product-{product}-{item_id}", validate_parameters=True)
def run_product(
    item_id: str,
    product: str,
    params: dict[str, Any] | None = None,
    force: bool = False,
    config: str | None = None,
    collection: str | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute ``product`` (e.g. ``index:NDVI``, ``oil-spill``) on the activated scene ``item_id``.

    ``collection`` names the activated collection (default: found from the raw item or by trying
    every ``<source>-<level>``); ``trigger`` carries the triggering event for provenance.
    Returns ``{"status": "published" | "skipped", "reason", "collection", "item_id", "item_href",
    "product_key", "asset", "product"}``; raises on failure (reason in the ``hsi.product.failed`` event).

    Args:
        item_id: Activated scene item id, e.g. aviris-ng-ang20150420t182050.
        product: Product name from `hsi products list`, e.g. index:NDVI, tree-mortality, oil-spill.
        params: Product parameters (see `hsi products show NAME`); empty = the product's defaults.
        force: Recompute even when an up-to-date product item exists.
        config: Path of the hsi.yaml configuration (default: $HSI_CONFIG, else the embedded default).
        collection: Collection of the activated item (default: found from the raw item).
        trigger: Set by automations from the triggering event (provenance); leave empty.
    """
    cfg = get_config(config)
    return publish_product(item_id, product, params, cfg, force=force, collection=collection, trigger=trigger)


def publish_product(
    item_id: str,
    product: str,
    params: dict[str, Any] | None,
    cfg: PipelineConfig,
    *,
    force: bool = False,
    collection: str | None = None,
    trigger: dict[str, Any] | None = None,
    activated: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of :func:`run_product`, in the calling flow run (its tasks, events and provenance are
    that run's): ``run_product``, ``run_products`` and the activation run (products in the run) call it.
    ``activated``: the activated item when the caller has it (no catalog read, no run tags)."""

    log = get_run_logger()
    svc = services(cfg)
    coll, pid = product_collection(product), product_item_id(item_id, product)
    resource = EventResource(collection=coll, item_id=pid, product=product)
    item_href = svc.catalog.item_href(coll, pid)
    out: dict[str, Any] = {
        "product": product,
        "collection": coll,
        "item_id": pid,
        "item_href": item_href,
        "product_key": "",
        "asset": "",
    }

    def payload() -> dict[str, Any]:
        return {"catalog_href": svc.catalog.href, "item_href": item_href, "product_key": out["product_key"]}

    try:
        tag = activated is None  # in the activation run, the run is tagged already
        if activated is None:
            activated = t.resolve_activated_item(item_id, collection, as_is(cfg))
        props = activated["properties"]
        if tag:
            tag_run(props.get("hsi:scene_id") or "", props.get("hsi:source") or "none")
        resource = EventResource(
            collection=coll,
            item_id=pid,
            product=product,
            source=props.get("hsi:source") or "none",
            scene_id=props.get("hsi:scene_id") or "",
        )
        plan = t.plan_product(as_is(activated), product, params, as_is(cfg))
        out["product_key"] = plan.key
        with item_lease(coll, pid, cfg):  # concurrent runs of this product: one works, the others skip
            skip = None if force else t.check_product_done(as_is(plan), as_is(cfg))
            if skip:
                log.info("skipped: %s", skip)
                emit(
                    stage_outcome_event(
                        "product", "skipped", resource=resource, reason=skip, payload=payload()
                    )
                )
                note_done(cfg, coll, pid)
                return {
                    **out,
                    "status": "skipped",
                    "reason": skip,
                    "asset": t.stored_product_asset(as_is(plan), as_is(cfg)),
                }
            scratch = ta.open_run(f"product-{pid}", cfg)  # private to this run; reclaimed if it dies
            try:
                computed = t.compute_product(as_is(plan), scratch.path / "out", as_is(cfg))
                uploaded = t.upload_product(as_is(plan), dict(computed.files), as_is(cfg))
                item = t.register_product(
                    as_is(plan), as_is(computed), as_is(uploaded), as_is(activated), trigger, as_is(cfg)
                )
            finally:
                ta.close_run(scratch, cfg)
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
        log.error("product %s on %s failed: %s", product, item_id, reason)
        emit(stage_outcome_event("product", "failed", resource=resource, reason=reason, payload=payload()))
        again = {"item_id": item_id, "product": product, "params": params, "collection": collection}
        note_failure(cfg, "product", coll, pid, reason, again)
        raise
    publish_item_artifacts(item, cfg)
    data = uploaded["data"]
    emit(
        product_published_event(
            source=resource.source,
            scene_id=resource.scene_id,
            product=product,
            collection=coll,
            item_id=pid,
            catalog_href=svc.catalog.href,
            product_key=plan.key,
            item_href=item_href,
            uri=data.uri,
            inputs=[plan.scene_item],
        )
    )
    note_done(cfg, coll, pid)
    log.info("published %s/%s -> %s", coll, pid, data.uri)
    return {**out, "status": "published", "reason": "", "asset": item["assets"]["data"]["href"]}


@flow(name="products", flow_run_name="products-{item_id}", validate_parameters=True)
def run_products(
    item_id: str,
    products: list[dict[str, Any]],
    force: bool = False,
    config: str | None = None,
    collection: str | None = None,
    trigger: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every ``{"product": name, "params": {...}}`` on the activated scene ``item_id``.

    The products run one after the other in this flow run (no subflow each); a failing product is
    reported with its reason and does not stop the others. Raises :class:`ProductRunsFailed` (carrying every row)
    at the end when any product failed.
    """
    log = get_run_logger()
    requests = [ProductRun.model_validate(p) for p in products]
    rows: list[dict[str, Any]] = []
    cfg = get_config(config)
    for req in requests:
        rows.append(product_row(item_id, req, cfg, force=force, collection=collection, trigger=trigger))
    for r in rows:
        log.info(
            "%s\t%s\t%s/%s\t%s",
            r["status"],
            r["product"],
            r["collection"],
            r["item_id"],
            r.get("asset") or r.get("reason", ""),
        )
    if any(r["status"] == "failed" for r in rows):
        raise ProductRunsFailed(item_id, rows)
    return rows


def product_row(
    item_id: str,
    req: ProductRun,
    cfg: PipelineConfig,
    *,
    force: bool = False,
    collection: str | None = None,
    trigger: dict[str, Any] | None = None,
    activated: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`publish_product` of one requested product; a failure is returned as a ``failed`` row
    with its reason (the failed event and the failure record are already written)."""
    try:
        return publish_product(item_id, req.product, dict(req.params) or None, cfg, force=force,
                               collection=collection, trigger=trigger, activated=activated)  # fmt: skip
    except Exception as e:
        return {
            "product": req.product,
            "status": "failed",
            "reason": f"{type(e).__name__}: {e}",
            "collection": product_collection(req.product),
            "item_id": product_item_id(item_id, req.product),
            "item_href": "",
            "product_key": "",
            "asset": "",
        }
