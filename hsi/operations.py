"""Operating the catalog over time: the desired state against the catalog, and the work that closes the gap.

The *desired state* is the configuration (every raw item of a configured source is activated, unless
``sources.<s>.activate`` is false, and gets the source's products) or an on-demand request (products
on the raw scenes an AOI/time range selects). :func:`plan_catalog` compares it with the catalog, one
:class:`PlanRow` per (scene, stage/product):

* ``missing``: no item;
* ``stale``: the item's ``hsi:product_key`` differs from the key the work would have now (algorithm
  version, parameters, input checksums or activation profile changed), or the activated scene was
  processed again after the product was made (its input changed under it), or its activation is stale;
* ``failed``: not done, and the last attempt failed (:mod:`hsi.failures`: reason, time, flow run);
* ``up-to-date``.

:func:`select_jobs` turns rows into per-scene :class:`Job`\\ s (activate? which products?), following
forward lineage (:mod:`hsi.lineage`) with ``downstream``: re-activating a scene also redoes every
product item derived from it. Pure: no Prefect; everything comes from the catalog and the failure
records (no state of its own).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pystac

from hsi import activation as act
from hsi.cog_profile import CogProfile
from hsi.errors import HSIError
from hsi.failures import get_failure
from hsi.lineage import descendants
from hsi.planning import ProductRequest, product_requests, raw_collections
from hsi.production import expected_product_params
from hsi.products import get_product
from hsi.quantities import parse_request_params
from hsi.services import Services
from hsi.stac.product import product_collection, product_item_id

__all__ = ["Job", "PlanRow", "State", "desired_products", "plan_catalog", "select_jobs", "summary"]

log = logging.getLogger(__name__)

State = Literal["up-to-date", "missing", "stale", "failed"]
STATES: tuple[State, ...] = ("missing", "stale", "failed", "up-to-date")


@dataclass(frozen=True)
class PlanRow:
    """One (scene, stage) pair of the plan: the target item and its state."""

    scene: str  # the raw item id (= activated item id)
    raw_collection: str
    stage: Literal["activate", "product"]
    collection: str  # the target item's collection
    item_id: str
    product: str  # "" for activation
    params: Mapping[str, Any]
    state: State
    reason: str
    expected_key: str = ""
    current_key: str = ""
    processed: str = ""  # processing:datetime of the current item
    acquired: str = ""  # the raw item's datetime
    failed_at: str = ""
    flow_run: str = ""  # of the failure

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = dict(self.params)
        return d


def _dt(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        d = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def desired_products(services: Services, source: str) -> list[ProductRequest]:
    sc = services.config.sources.get(source)
    return [ProductRequest(p.product, dict(p.params)) for p in sc.products] if sc else []


def _wants_activation(services: Services, source: str) -> bool:
    sc = services.config.sources.get(source)
    return sc is None or sc.activate


def raw_scenes(services: Services, sources: Sequence[str] | None = None) -> list[pystac.Item]:
    """Every raw item of the configured sources (all known sources when none is configured)."""
    chosen = list(sources or services.config.sources or [])
    found = services.catalog.search(collections=raw_collections(chosen or None))
    return sorted(found, key=lambda i: (i.collection_id or "", i.id))


def _failure_fields(services: Services, collection: str, item_id: str, item: pystac.Item | None
                    ) -> tuple[str, str, str] | None:  # fmt: skip
    """(reason, failed_at, flow run) of a failure newer than the item, else None."""
    rec = get_failure(services, collection, item_id)
    if rec is None:
        return None
    done = _dt(item.properties.get("processing:datetime")) if item is not None else None
    when = rec.when
    if done is not None and when is not None and when <= done:
        return None  # an older failure, superseded by a later success
    return rec.reason, rec.failed_at, rec.flow_run_id


def _why_key_differs(stored: pystac.Item, version: str, params: Mapping[str, Any]) -> str:
    p = stored.properties
    was = (p.get("hsi:algorithm") or {}).get("version", "")
    if was != version:
        return f"algorithm version {was or '?'} -> {version}"
    if p.get("hsi:parameters") != dict(params):
        return f"parameters {p.get('hsi:parameters')} -> {dict(params)}"
    return "inputs changed (input item or asset checksums differ)"


def _activation_row(
    services: Services, raw: pystac.Item, profile: CogProfile
) -> tuple[PlanRow, pystac.Item | None]:
    coll = act.activated_collection(raw)
    key, _ = act.activation_key(services, raw, profile)
    item = services.catalog.get_item(coll, raw.id)
    base: dict[str, Any] = dict(scene=raw.id, raw_collection=raw.collection_id or "", stage="activate", collection=coll,
                item_id=raw.id, product="", params={}, expected_key=key,
                acquired=raw.datetime.isoformat() if raw.datetime else "")  # fmt: skip
    cur = item.properties.get("hsi:product_key", "") if item is not None else ""
    processed = item.properties.get("processing:datetime", "") if item is not None else ""
    failure = None if (item is not None and cur == key) else _failure_fields(services, coll, raw.id, item)
    if failure is not None:
        reason, at, run = failure
        row = PlanRow(**base, state="failed", reason=reason, current_key=cur, processed=processed,
                      failed_at=at, flow_run=run)  # fmt: skip
    elif item is None:
        row = PlanRow(**base, state="missing", reason=f"{coll}/{raw.id} is not in the catalog")
    elif cur != key:
        why = _why_key_differs(item, act.ACTIVATION_VERSION, act._profile_params(profile))
        row = PlanRow(
            **base, state="stale", reason=f"key differs: {why}", current_key=cur, processed=processed
        )
    else:
        row = PlanRow(**base, state="up-to-date", reason="key matches", current_key=cur, processed=processed)
    return row, item


def _product_row(services: Services, raw: pystac.Item, activation: PlanRow, activated: pystac.Item | None,
                 req: ProductRequest) -> PlanRow:  # fmt: skip
    coll, pid = product_collection(req.product), product_item_id(raw.id, req.product)
    item = services.catalog.get_item(coll, pid)
    base: dict[str, Any] = dict(scene=raw.id, raw_collection=raw.collection_id or "", stage="product", collection=coll,
                item_id=pid, product=req.product, acquired=activation.acquired)  # fmt: skip
    prod = get_product(req.product)
    p, opts = parse_request_params(prod, req.params)
    params = p.model_dump(mode="json")
    cur = item.properties.get("hsi:product_key", "") if item is not None else ""
    processed = item.properties.get("processing:datetime", "") if item is not None else ""
    key = ""
    if activated is not None and activation.state == "up-to-date":
        try:
            key, params = expected_product_params(services, activated, req.product, {**params, **opts})
        except HSIError as e:
            return PlanRow(**base, params=params, state="failed", reason=str(e), current_key=cur,
                           processed=processed)  # fmt: skip
    kw: dict[str, Any] = dict(base, params=params, expected_key=key, current_key=cur, processed=processed)
    failure = (
        None if (item is not None and key and cur == key) else _failure_fields(services, coll, pid, item)
    )
    if failure is not None:
        reason, at, run = failure
        return PlanRow(**kw, state="failed", reason=reason, failed_at=at, flow_run=run)
    if item is None:
        why = "" if activated is not None else f" (scene {activation.collection}/{raw.id} not activated)"
        return PlanRow(**kw, state="missing", reason=f"{coll}/{pid} is not in the catalog{why}")
    if activation.state != "up-to-date":
        return PlanRow(**kw, state="stale", reason=f"its activation is {activation.state}")
    if cur != key:
        return PlanRow(
            **kw, state="stale", reason=f"key differs: {_why_key_differs(item, prod.version, params)}"
        )
    a_when, p_when = _dt(activation.processed), _dt(processed)
    if a_when is not None and p_when is not None and a_when > p_when:
        return PlanRow(**kw, state="stale",
                       reason=f"scene activated again ({activation.processed}) after the product ({processed})")  # fmt: skip
    return PlanRow(**kw, state="up-to-date", reason="key matches")


def plan_catalog(
    services: Services,
    *,
    scenes: Iterable[pystac.Item] | None = None,
    products: Sequence[str | Mapping[str, Any]] | None = None,
    sources: Sequence[str] | None = None,
    profile: CogProfile | None = None,
) -> list[PlanRow]:
    """The plan: for each raw scene (default: every raw item of the configured sources), its
    activation and each desired product (``products`` = an on-demand request, else the source's
    configured products). Reads only the catalog and failure records."""
    reqs = product_requests(products) if products else None
    prof = profile or CogProfile()
    rows: list[PlanRow] = []
    for raw in scenes if scenes is not None else raw_scenes(services, sources):
        source = raw.properties.get("hsi:source", "")
        arow, activated = _activation_row(services, raw, prof)
        if reqs is not None or _wants_activation(services, source):
            rows.append(arow)
        for req in reqs if reqs is not None else desired_products(services, source):
            rows.append(_product_row(services, raw, arow, activated, req))
    return rows


def summary(rows: Iterable[PlanRow]) -> dict[str, int]:
    counts: dict[str, int] = {s: 0 for s in STATES}
    for r in rows:
        counts[r.state] += 1
    counts["total"] = sum(counts.values())
    return counts


# ------------------------------------------------------------------------------------------ jobs
@dataclass(frozen=True)
class ProductJob:
    product: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"product": self.product, "params": dict(self.params)}


@dataclass(frozen=True)
class Job:
    """The work of one scene: activate it (forced) and/or redo products (forced), in that order."""

    scene: str
    raw_collection: str
    activated_collection: str
    activate: bool
    products: tuple[ProductJob, ...] = ()
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "scene": self.scene,
            "raw_collection": self.raw_collection,
            "activated_collection": self.activated_collection,
            "activate": self.activate,
            "products": [p.as_dict() for p in self.products],
            "why": self.why,
        }


def _matches(row: PlanRow, *, states: Sequence[str], product: str | None, collection: str | None,
             since: datetime | None) -> bool:  # fmt: skip
    if states and row.state not in states:
        return False
    if not states and row.state == "up-to-date" and not (product or collection):
        return False  # nothing asked for: only what is not up to date
    if product and row.product != product:
        return False
    if collection and collection not in (row.collection, row.raw_collection):
        return False
    acquired = _dt(row.acquired)
    return not (since is not None and (acquired is None or acquired < since))


def select_jobs(
    services: Services,
    rows: Sequence[PlanRow],
    *,
    states: Sequence[str] = (),
    product: str | None = None,
    collection: str | None = None,
    since: datetime | None = None,
    downstream: bool = False,
) -> list[Job]:
    """Per-scene jobs for the rows that match every filter (``states`` empty: every row not up to
    date, or every row of ``product``/``collection`` when one is given: a forced reprocessing).

    A product row whose activation is also selected, or stale/missing, runs after the activation.
    ``downstream``: an activation also redoes every product item derived from the scene (read from
    the catalog's lineage) and every desired product of the plan."""
    chosen = [
        r for r in rows if _matches(r, states=states, product=product, collection=collection, since=since)
    ]
    by_scene: dict[str, dict[str, Any]] = {}
    for r in chosen:
        s = by_scene.setdefault(
            r.scene, {"raw": r.raw_collection, "activate": False, "products": {}, "why": []}
        )
        if r.stage == "activate":
            s["activate"] = True
            s["activated"] = r.collection
        else:
            s["products"][(r.product, repr(sorted(dict(r.params).items())))] = ProductJob(
                r.product, dict(r.params)
            )
        s["why"].append(f"{r.collection}/{r.item_id}: {r.state} ({r.reason})")
    jobs = []
    for scene, s in by_scene.items():
        arow = next((r for r in rows if r.scene == scene and r.stage == "activate"), None)
        activated_coll = s.get("activated") or (arow.collection if arow else "")
        if arow is not None and arow.state != "up-to-date" and s["products"]:
            s["activate"] = True  # a product of a stale/missing scene needs the activation first
        if downstream and s["activate"]:
            for r in rows:
                if r.scene == scene and r.stage == "product":
                    s["products"].setdefault((r.product, repr(sorted(dict(r.params).items()))),
                                             ProductJob(r.product, dict(r.params)))  # fmt: skip
            activated = services.catalog.get_item(activated_coll, scene) if activated_coll else None
            for d in descendants(services.catalog, activated) if activated is not None else []:
                p = d.properties
                name = (p.get("hsi:algorithm") or {}).get("name")
                if not name or name in (act.ACTIVATION_ALGORITHM, "hsi.clip"):
                    continue  # clips are redone by the on-demand request that made them
                params = dict(p.get("hsi:parameters") or {})
                s["products"].setdefault((name, repr(sorted(params.items()))), ProductJob(name, params))
        jobs.append(Job(scene=scene, raw_collection=s["raw"], activated_collection=activated_coll,
                        activate=s["activate"], products=tuple(s["products"].values()),
                        why="; ".join(s["why"])))  # fmt: skip
    return sorted(jobs, key=lambda j: j.scene)
