"""Throughput: sustained trivial products per second through the full path, batch vs one run per product.

    flock /work/stack.lock bash -c '.venv/bin/hsi stack up && \
        .venv/bin/python benchmarks/throughput.py --scenes 20 --products 20 --baseline 20; .venv/bin/hsi stack down'

The full path of the running local stack (``hsi stack up``; ``$HSI_STACK_DIR`` or ``./.stack``):
Prefect server on PostgreSQL, pgstac behind stac-fastapi, SeaweedFS S3. Trivial products: one-band
spectral indices (``index:*``, two or three bands read) on tiny synthetic AVIRIS-NG scenes
(``--size`` pixels square), activated once beforehand (not timed). Four measurements, in one run,
all with ``force`` so every product is computed, uploaded and registered:

1. **baseline**: the current path, one ``product`` flow run per product (called in this process,
   so without the worker's run start of ~1.7 s: a generous baseline), ``--baseline`` products;
2. **single, no Prefect**: the same domain steps per product (plan, check, compute, upload,
   register: :func:`hsi.demo.make_product`), same products: the difference to 1 is the per-product
   Prefect overhead; the Prefect API calls of one product run are counted (task runs);
3. **batch, no Prefect**: :func:`hsi.batch.publish_batch` over every (scene, product) pair, with
   its phase seconds (plan, check, compute, upload, build, register);
4. **batch flow**: the ``products-batch`` flow (``publish-chunk`` tasks of ``--scenes-per-task``
   scenes, bulk catalog writes): the figure, and its ratio to the baseline.

Prints products/s of each and the ratio batch flow / baseline. Timings on a shared 2-core machine
are noisy: compare the ratios of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsi_pipeline.deployments.local.stack import Layout, status  # noqa: E402


def _stack() -> tuple[Path, str]:
    layout = Layout.default()
    info = status(layout)
    # `hsi stack up` writes ./hsi.stack.yaml; the test suite's stack fixture writes it into the state dir
    config = next((c for c in (Path("hsi.stack.yaml"), layout.root / "hsi.stack.yaml") if c.exists()), Path())
    if not info["up"] or not config.is_file():
        sys.exit(f"the local stack in {layout.root} is not up: run `.venv/bin/hsi stack up` first")
    return config.resolve(), str(info["prefect_api"])


def _scene_ids(n: int) -> list[str]:
    """AVIRIS-NG names (angYYYYMMDDtHHMMSS), one second apart from a random start: unique per run."""
    rnd = uuid.uuid4().int
    day, start = f"2019{1 + rnd % 12:02d}{1 + rnd // 12 % 28:02d}", rnd // 400 % (86400 - n)
    return [
        f"ang{day}t{(start + k) // 3600:02d}{(start + k) // 60 % 60:02d}{(start + k) % 60:02d}"
        for k in range(n)
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=20, help="tiny scenes (default 20)")
    ap.add_argument("--products", type=int, default=20, help="index products per scene (default 20)")
    ap.add_argument("--baseline", type=int, default=20, help="products through one run each (default 20)")
    ap.add_argument("--size", type=int, default=16, help="scene width and height in pixels (default 16)")
    ap.add_argument("--scenes-per-task", type=int, default=25, help="scenes per publish-chunk task")
    a = ap.parse_args()

    config, api = _stack()
    os.environ["PREFECT_API_URL"] = api
    os.environ["HSI_CONFIG"] = str(config)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    import pystac
    from prefect import get_client

    from hsi.activation import index_scene
    from hsi.batch import publish_batch
    from hsi.demo import activate, make_product
    from hsi.production import find_activated_item, plan_product
    from hsi.products import list_products
    from hsi.services import Services
    from hsi.sources.synthetic import synthesize
    from hsi.stac.provenance import RunInfo
    from hsi_pipeline.flows.batch import publish_products_batch
    from hsi_pipeline.flows.product import run_product

    svc = Services.from_config(config)
    tmp = Path(tempfile.mkdtemp(prefix="hsi-throughput-"))
    t0 = time.perf_counter()
    scenes: list[pystac.Item] = []
    for k, sid in enumerate(_scene_ids(a.scenes)):
        hdr = synthesize(tmp / "raw" / str(k), width=a.size, height=a.size, seed=k, scene_id=sid)
        raw = index_scene(svc, str(hdr))
        activate(svc, raw.id)
        scenes.append(find_activated_item(svc, raw.id))
    coll = scenes[0].collection_id or ""
    names = []
    for name in sorted(p for p in list_products() if p.startswith("index:")):
        try:
            plan_product(svc, scenes[0], name)
        except Exception:  # noqa: S112 - an index the synthetic scene cannot supply is not trivial here
            continue
        names.append(name)
        if len(names) == a.products:
            break
    pairs = [(s, n) for s in scenes for n in names]
    print(
        f"setup: {len(scenes)} scenes of {a.size}x{a.size}x425 activated in {time.perf_counter() - t0:.1f} s; "
        f"{len(names)} index products per scene: {len(pairs)} pairs",
        flush=True,
    )

    # 1. baseline: one product flow run per product
    base = pairs[: a.baseline]
    t = time.perf_counter()
    run_ids = []
    for s, n in base:
        st = run_product(item_id=s.id, product=n, force=True, collection=coll, return_state=True)
        assert st.is_completed(), f"baseline run failed: {st.message}"
        run_ids.append(st.state_details.flow_run_id)
    base_s = time.perf_counter() - t
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_ids[-1]])))
    print(
        f"1 baseline      {len(base):5d} products in {base_s:7.1f} s: {len(base) / base_s:7.2f} /s "
        f"({base_s / len(base):.3f} s each; {len(tasks)} task runs per product run)",
        flush=True,
    )

    # 2. the same domain steps, one product at a time, no Prefect
    t = time.perf_counter()
    for s, n in base:
        assert make_product(svc, s.id, n, force=True) == "published"
    single_s = time.perf_counter() - t
    print(
        f"2 single, no Prefect {len(base):5d} in {single_s:7.1f} s: {len(base) / single_s:7.2f} /s "
        f"({single_s / len(base):.3f} s each) -> Prefect overhead {(base_s - single_s) / len(base):.3f} s per product",
        flush=True,
    )

    # 3. batch, no Prefect
    t = time.perf_counter()
    res = publish_batch(svc, scenes, [(n, None) for n in names], RunInfo(), tmp / "batch", force=True)
    batch_s = time.perf_counter() - t
    assert res.count("published") == len(pairs), [o for o in res.outcomes if o.status == "failed"][:3]
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
    print(
        f"3 batch, no Prefect {len(pairs):5d} in {batch_s:7.1f} s: {len(pairs) / batch_s:7.2f} /s ({phases})",
        flush=True,
    )

    # 4. the products-batch flow
    t = time.perf_counter()
    st = publish_products_batch(
        item_ids=[s.id for s in scenes], products=names, collection=coll, force=True,
        scenes_per_task=a.scenes_per_task, return_state=True,
    )  # fmt: skip
    flow_s = time.perf_counter() - t
    out = st.result()
    assert st.is_completed() and out["counts"]["published"] == len(pairs), out["counts"]
    fr = st.state_details.flow_run_id
    stored = svc.catalog.get_item(out["outcomes"][0]["collection"], out["outcomes"][0]["item_id"])
    assert stored is not None and stored.properties["hsi:flow_run"]["id"] == str(fr), (
        "provenance names the run"
    )
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in out["seconds"].items())
    print(
        f"4 batch flow    {len(pairs):5d} in {flow_s:7.1f} s: {len(pairs) / flow_s:7.2f} /s (seconds summed "
        f"over the concurrent chunk tasks: {phases}; flow wall - batch wall without Prefect: {flow_s - batch_s:+.1f} s)",
        flush=True,
    )
    print(
        f"\nlargest: {len(pairs) / flow_s:.1f} products/s (batch flow); baseline {len(base) / base_s:.2f} products/s; "
        f"ratio {(len(pairs) / flow_s) / (len(base) / base_s):.0f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
