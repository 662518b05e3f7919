"""Batch publishing: many (scene, product) pairs in one call, registered with one bulk catalog write.

    activated items x products -> plan every pair (COG headers only) -> skip the up-to-date ones
      (one catalog search per product collection) -> compute (threads) -> upload every file
      (concurrent PUTs) -> build items with provenance -> validate -> ``catalog.upsert_items`` (bulk)

It is :mod:`hsi.production` step for step, with the per-product round trips folded into a few
per-batch ones. The rules of the single-product path still hold:

* **No partial item is ever visible.** The bulk write comes after every upload of the batch has
  returned; a pair whose compute or upload failed is never in it.
* **A failed pair never stops the others.** Each failure (plan, compute, upload, validation, or
  the catalog refusing that one item) is recorded in its :class:`PairOutcome`; the rest publish.
* **Validated items.** Every item's schema shape is validated (``validate="first"``: the first item
  of each product in the batch, see :func:`publish_batch`; ``"all"``: each item, as ``register`` does).
* **Provenance per item.** Each item records its input (the activated item and its cube checksum),
  the algorithm, version and parameters, the product key, and the flow run given as ``run``.

There are no per-item leases: the batch owns its pairs (a backfill or an on-demand batch). A
concurrent single-product run of the same pair writes the same deterministic keys and the same
item id (upserts are idempotent), so a race costs duplicate work, never a wrong or partial item.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pystac

from hsi.activation import item_done
from hsi.product_compute import Computed, compute_many
from hsi.production import ProductPlan, build_product_item, plan_product, upload_outputs
from hsi.services import Services
from hsi.stac.items import collection_for
from hsi.stac.provenance import RunInfo
from hsi.stac.validation import validate_item
from hsi.storage import ObjectInfo

__all__ = ["PHASES", "BatchResult", "PairOutcome", "publish_batch"]

log = logging.getLogger(__name__)

PHASES = ("plan", "check", "compute", "upload", "build", "register")


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one (scene, product) pair."""

    scene: str  # activated item id
    product: str
    status: str  # published | skipped | failed
    reason: str = ""
    collection: str = ""
    item_id: str = ""
    product_key: str = ""
    asset: str = ""  # the data asset href when published

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchResult:
    outcomes: list[PairOutcome]
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per phase (PHASES)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def _reason(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:500]


def publish_batch(
    services: Services,
    activated: Sequence[pystac.Item],
    products: Sequence[tuple[str, Mapping[str, Any] | None]],
    run: RunInfo,
    work_dir: Path,
    *,
    force: bool = False,
    workers: int = 4,
    upload_workers: int = 8,
    validate: str = "first",
    progress: Callable[[str, int, int], None] | None = None,
) -> BatchResult:
    """Run every ``(product name, params)`` on every activated item; one bulk catalog write.

    ``workers`` threads compute (GDAL releases the GIL); ``upload_workers`` threads PUT the files.
    ``validate``: ``"all"`` validates every item against its STAC schemas (about 30 ms each);
    ``"first"`` (default) the first item of each product in the batch: the items of one product are
    built by the same code and differ only in values (ids, geometry, hrefs, checksums, numbers).
    ``progress(phase, done, total)`` is called after each phase. Never raises for a pair's failure;
    raises CatalogUnavailableError only when the catalog cannot be reached for the final write.
    """
    res = BatchResult([])
    failed: dict[int, str] = {}  # pair index -> reason

    def timed(phase: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            res.seconds[phase] = res.seconds.get(phase, 0.0) + time.perf_counter() - t0

    pairs = [(item, name, params) for item in activated for name, params in products]
    total = len(pairs)

    # plan: parameters validated, bands selected from the COG header, key computed
    headers: dict[str, Any] = {}  # one header read per cube, shared by its products

    def plan_scene(item: pystac.Item) -> list[ProductPlan | BaseException]:
        out: list[ProductPlan | BaseException] = []
        for name, params in products:
            try:
                out.append(plan_product(services, item, name, params, headers=headers))
            except Exception as e:
                out.append(e)
        return out

    with ThreadPoolExecutor(max(1, workers)) as pool:
        planned = timed("plan", lambda: [p for ps in pool.map(plan_scene, activated) for p in ps])
    plans: dict[int, ProductPlan] = {}
    for i, pl in enumerate(planned):
        if isinstance(pl, BaseException):
            failed[i] = f"plan: {_reason(pl)}"
        else:
            plans[i] = pl
    _tick(progress, "plan", len(plans), total)

    # check: one search per product collection; assets of matching keys checked for presence
    skipped: dict[int, str] = {}
    if not force:
        skipped = timed("check", lambda: _skips(services, plans, upload_workers))
    todo = [i for i in plans if i not in skipped]
    _tick(progress, "check", len(todo), len(plans))

    # compute: COG + preview per pair (each in its own directory), one job per scene so that its
    # cube is opened once for all its products; scenes in threads
    by_scene: dict[str, list[int]] = {}
    for i in todo:
        by_scene.setdefault(plans[i].cube_href, []).append(i)

    def compute_scene(idx: list[int]) -> list[Computed | BaseException]:
        return compute_many(services, [plans[i] for i in idx], [work_dir / f"{i:06d}" for i in idx])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        per_scene = timed("compute", lambda: list(pool.map(compute_scene, by_scene.values())))
    results = {
        i: c
        for idx, cs in zip(by_scene.values(), per_scene, strict=True)
        for i, c in zip(idx, cs, strict=True)
    }
    computed_list = [results[i] for i in todo]
    computed: dict[int, Computed] = {}
    for i, c in zip(todo, computed_list, strict=True):
        if isinstance(c, BaseException):
            failed[i] = f"compute: {_reason(c)}"
        else:
            computed[i] = c
    _tick(progress, "compute", len(computed), len(todo))

    # upload: every file of every pair, concurrently; a pair is complete when all its files are
    def upload_one(i: int) -> dict[str, ObjectInfo] | BaseException:
        try:
            return upload_outputs(services, plans[i], dict(computed[i].files))
        except Exception as e:
            return e

    with ThreadPoolExecutor(max(1, upload_workers)) as pool:
        uploads = timed("upload", lambda: list(pool.map(upload_one, list(computed))))
    uploaded: dict[int, dict[str, ObjectInfo]] = {}
    for i, up in zip(list(computed), uploads, strict=True):
        if isinstance(up, BaseException):
            failed[i] = f"upload: {_reason(up)}"
        else:
            uploaded[i] = up
    _tick(progress, "upload", len(uploaded), len(computed))

    # build + validate: the items with their provenance
    built: dict[int, pystac.Item] = {}

    validated: set[str] = set()

    def build_all() -> None:
        for i, up in uploaded.items():
            try:
                item = build_product_item(services, plans[i], computed[i], up, pairs[i][0], run)
                if validate == "all" or plans[i].product not in validated:
                    probe = item.clone()  # the catalog adds the collection link the schema requires
                    probe.add_link(
                        pystac.Link("collection", "../collection.json", media_type="application/json")
                    )
                    validate_item(probe)
                    validated.add(plans[i].product)
                built[i] = item
            except Exception as e:
                failed[i] = f"build: {_reason(e)}"

    timed("build", build_all)

    # register: collections ensured once, then one bulk upsert (the commit point of every item)
    def register_all() -> dict[str, str]:
        for cid in sorted({plans[i].collection for i in built}):
            services.catalog.ensure_collection(collection_for(cid))
        return services.catalog.upsert_items(list(built.values())) if built else {}

    refused = timed("register", register_all)
    for i in built:
        why = refused.get(f"{plans[i].collection}/{plans[i].item_id}")
        if why:
            failed[i] = f"register: {why}"
    _tick(progress, "register", len(built) - len(refused), len(built))

    for i, (item, name, _) in enumerate(pairs):
        pl = plans.get(i)
        ids = {"collection": pl.collection, "item_id": pl.item_id, "product_key": pl.key} if pl else {}
        if i in failed:
            res.outcomes.append(PairOutcome(item.id, name, "failed", failed[i], **ids))
        elif i in skipped:
            res.outcomes.append(PairOutcome(item.id, name, "skipped", skipped[i], **ids))
        else:
            asset = built[i].assets["data"].href
            res.outcomes.append(PairOutcome(item.id, name, "published", "", asset=asset, **ids))
    log.info(
        "batch of %d pairs: %d published, %d skipped, %d failed (%s)",
        total,
        res.count("published"),
        res.count("skipped"),
        res.count("failed"),
        ", ".join(f"{k} {v:.2f} s" for k, v in res.seconds.items()),
    )
    return res


def _skips(services: Services, plans: Mapping[int, ProductPlan], workers: int) -> dict[int, str]:
    """Skip reasons of the up-to-date pairs: one catalog search per product collection, then the
    recorded assets of the items whose key matches checked in storage (as ``check_done`` does)."""
    by_coll: dict[str, dict[str, list[int]]] = {}
    for i, pl in plans.items():
        by_coll.setdefault(pl.collection, {}).setdefault(pl.item_id, []).append(i)
    candidates: list[tuple[int, pystac.Item]] = []
    for cid, wanted in by_coll.items():
        for stored in services.catalog.search(collections=[cid], ids=sorted(wanted)):
            for i in wanted.get(stored.id, []):
                if stored.properties.get("hsi:product_key") == plans[i].key:
                    candidates.append((i, stored))

    def check(c: tuple[int, pystac.Item]) -> str | None:
        return item_done(services, c[1], plans[c[0]].key)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = list(pool.map(check, candidates))
    return {i: r for (i, _), r in zip(candidates, reasons, strict=True) if r}


def _tick(progress: Callable[[str, int, int], None] | None, phase: str, done: int, total: int) -> None:
    if progress is not None:
        progress(phase, done, total)
