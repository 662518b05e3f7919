"""The demo scene end to end without an orchestrator: synthesize -> index -> activate -> products.

The same domain steps the Prefect tasks wrap (``hsi demo`` runs them as flows). Notebooks and
tests use this to get a small, real catalog in seconds without a Prefect API::

    from hsi.demo import build_demo
    from hsi.services import Services
    out = build_demo(Services.from_config("hsi.yaml"))
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from typing import Any

from hsi import activation as act
from hsi import production as prod
from hsi.cog_profile import CogProfile
from hsi.product_compute import compute
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.items import collection_for
from hsi.stac.provenance import RunInfo

__all__ = ["DEMO_PRODUCTS", "activate", "build_demo", "make_product"]

log = logging.getLogger(__name__)

DEMO_PRODUCTS = ("index:NDVI", "tree-mortality", "oil-spill")


def activate(services: Services, item_id: str, *, force: bool = False, run: RunInfo | None = None) -> str:
    """Activate the raw item ``item_id``; returns ``"activated"`` or the skip reason."""
    raw = act.find_raw_item(services, item_id)
    profile = CogProfile()
    key, ref = act.activation_key(services, raw, profile)
    done = act.check_done(services, act.activated_collection(raw), raw.id, key)
    if done and not force:
        return done
    out = services.scratch_dir(f"activate-{raw.id}")  # private to this run, deleted at the end
    try:
        entry = act.fetch_raw(services, raw, out / "raw")
        conv = act.convert(entry, out / "cog", profile=profile, work_dir=out / "extract")
        uploaded = act.upload_outputs(services, act.activated_collection(raw), raw.id, conv.files)
        item = act.build_activated_item(services, conv, uploaded, raw, ref, profile, run or RunInfo())
        services.catalog.ensure_collection(collection_for(item.collection_id or ""))
        services.catalog.upsert_item(item)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return "activated"


def make_product(
    services: Services,
    item_id: str,
    product: str,
    params: dict[str, Any] | None = None,
    *,
    force: bool = False,
    run: RunInfo | None = None,
) -> str:
    """Compute ``product`` on the activated item ``item_id``; returns ``"published"`` or the skip reason."""
    activated = prod.find_activated_item(services, item_id)
    plan = prod.plan_product(services, activated, product, params)
    done = prod.check_done(services, plan)
    if done and not force:
        return done
    out = services.scratch_dir(f"product-{plan.item_id}")
    try:
        computed = compute(services, plan, out)
        uploaded = prod.upload_outputs(services, plan, computed.files)
        prod.register(
            services, prod.build_product_item(services, plan, computed, uploaded, activated, run or RunInfo())
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return "published"


def build_demo(
    services: Services,
    *,
    width: int = 160,
    height: int = 240,
    rotation_deg: float = 30.0,
    seed: int = 7,
    products: Sequence[str] = DEMO_PRODUCTS,
    scene_id: str | None = None,
) -> dict[str, Any]:
    """The ``hsi demo`` scene in ``services``' catalog and store; skips what is already done."""
    raw_dir = services.work_dir.parent / "raw"
    hdr = synthesize(
        raw_dir,
        source="aviris-ng",
        level="l2",
        width=width,
        height=height,
        rotation_deg=rotation_deg,
        seed=seed,
        scene_id=scene_id,
    )
    raw = act.index_scene(services, str(hdr))
    status = {"activate": activate(services, raw.id)}
    for name in products:
        status[name] = make_product(services, raw.id, name)
    log.info("demo %s: %s", raw.id, status)
    return {
        "item_id": raw.id,
        "catalog": services.catalog.href,
        "assets": services.store.root,
        "status": status,
    }
