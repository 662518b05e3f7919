"""Batch publishing: many products on many activated scenes in one flow run (backfills, reprocessing).

    prefect deployment run 'products-batch/products-batch' --param collection=aviris-ng-l2 \\
        --param item_ids='["aviris-ng-ang20150420t182050", ...]' --param products='["index:NDVI"]'
    publish_products_batch(item_ids=[...], products=["index:NDVI"], collection="aviris-ng-l2")  # notebook

The single-product path (``product`` flow) pays a flow run, about a dozen task runs, an item lease
and a catalog upsert per product. Here the unit is a chunk of ``scenes_per_task`` scenes: one
``publish-chunk`` task plans, computes, uploads (concurrent PUTs) and registers every product of
its scenes with one bulk catalog write (:mod:`hsi.batch`). Every item still records this flow run
in its provenance. The run ends ``Completed`` when nothing failed, else ``Failed`` named
``Partial`` (some published) or ``Failed`` (none), with every outcome in the state's data.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from hsi.config import ProductRun
from hsi_pipeline.tasks.batch import publish_chunk

__all__ = ["BatchFailed", "publish_products_batch"]


class BatchFailed(Exception):
    """Some or all products of a batch failed; ``.result`` holds every outcome."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message, result)
        self.result = result

    def __str__(self) -> str:
        return str(self.args[0])


@flow(name="products-batch", validate_parameters=True)
def publish_products_batch(
    item_ids: list[str],
    products: list[str | dict[str, Any]],
    collection: str,
    force: bool = False,
    scenes_per_task: int = 50,
    config: str | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every product on every activated scene ``item_ids`` of ``collection``.

    Args:
        item_ids: Activated scene item ids, e.g. ["aviris-ng-ang20150420t182050"].
        products: Product names or {"product": name, "params": {...}}, e.g. ["index:NDVI"].
        collection: Collection of the activated items, e.g. aviris-ng-l2.
        force: Recompute even when an up-to-date product item exists.
        scenes_per_task: Scenes per publish-chunk task (one bulk catalog write each).
        config: Path of the hsi.yaml configuration (default: $HSI_CONFIG, else the embedded default).
        trigger: Set by automations from the triggering event (provenance); leave empty.
    """
    log = get_run_logger()
    reqs = [ProductRun.model_validate({"product": p} if isinstance(p, str) else p) for p in products]
    prods = [(r.product, dict(r.params) or None) for r in reqs]
    ids = list(dict.fromkeys(item_ids))  # chunks take ids: each searches its own items
    size = max(1, scenes_per_task)
    n_chunks = -(-len(ids) // size)
    futures = [
        publish_chunk.submit(
            f"{n + 1}of{n_chunks}", ids[s : s + size], collection, prods, force, trigger, config
        )
        for n, s in enumerate(range(0, len(ids), size))
    ]
    outcomes: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for fut in futures:
        out = fut.result()
        outcomes += out["outcomes"]
        for k, v in out["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
    counts = {s: sum(1 for o in outcomes if o["status"] == s) for s in ("published", "skipped", "failed")}
    log.info("batch: %s; phase seconds %s", counts, {k: round(v, 2) for k, v in seconds.items()})
    result = {"counts": counts, "outcomes": outcomes, "seconds": seconds}
    if not counts["failed"]:
        return result
    failed = [o for o in outcomes if o["status"] == "failed"]
    msg = f"{len(failed)} of {len(outcomes)} products failed: " + "; ".join(
        f"{o['scene']}/{o['product']}: {o['reason']}" for o in failed[:5]
    )
    log.error(msg)
    return Failed(  # type: ignore[return-value]
        name="Partial" if counts["published"] or counts["skipped"] else "Failed",
        message=msg,
        data=BatchFailed(msg, result),
    )
