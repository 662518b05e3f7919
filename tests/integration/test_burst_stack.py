"""A burst of N raw objects arriving at once drains with bounded concurrency (issue 15 must-show 3).

``HSI_BURST_N`` scenes (default 4 to keep CI cheap: 12 cost 280 s; 200 by hand, figures in docs/SCALING.md) are put
into a moto bucket at once (S3 -> SQS notifications -> the bridge -> ``hsi.raw.available``), as in
test_new_scene_e2e.py, on a private Prefect server whose database is in the stack's PostgreSQL (as
``hsi stack up`` runs it) and a process worker with warm starts, whose pool has the concurrency limit
``hsi stack up`` sets (``HSI_POOL_CONCURRENCY``). Outputs go to the stack's SeaweedFS and STAC API.

Checked: every scene ends with its activated item and its configured product item; exactly one
``activate`` run and one ``hsi.scene.activated`` event per scene; every deployment run COMPLETED
(none failed or crashed); never more pool runs running at once than the pool's limit; no
"database is locked" and no HTTP 503 in the server, worker or flow-run logs; no automation action
failed. Prints the wall time and the drain rate.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hsi.config import load_config
from hsi.events import SCENE_ACTIVATED
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.product import product_collection, product_item_id
from tests.integration.e2e_harness import (
    POOL,
    Bridge,
    PrivatePrefect,
    events,
    landing_bucket,
    ng_scene_id,
    pipeline_config,
    prefect_api,
    runs_ended,
    stack_prefect_db,
    wait_for,
)  # fmt: skip
from tests.integration.moto_server import aws_env, moto_endpoint

__all__ = ["aws_env", "moto_endpoint"]
N = int(os.environ.get("HSI_BURST_N", "4"))
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900 + 60 * N)]

PRODUCT = "index:NDVI"
HTTP_503 = re.compile(r"(?<![\w.:/-])503(?!\w|\.\d)")


@pytest.fixture(scope="module")
def pipeline(stack: dict[str, Any], moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:  # fmt: skip
    from hsi_pipeline.deployments.generate import apply

    tmp = tmp_path_factory.mktemp("burst")
    run_id = ng_scene_id()[-6:]
    bucket = f"burst-{run_id}"
    with stack_prefect_db(Path(stack["root"]), f"burst_{run_id}") as db_url:
        prefect = PrivatePrefect(tmp / "prefect", db_url=db_url)
        prefect.start_server(timeout=300)
        try:
            prefect.start_worker()
            s3, sqs, queue = landing_bucket(moto_endpoint, bucket)
            path = pipeline_config(tmp / "hsi.yaml", stack=stack, moto=moto_endpoint, bucket=bucket,
                                   api=prefect.api, products=[{"product": PRODUCT}], run_id=run_id)  # fmt: skip
            cfg = load_config(path)
            apply(cfg, config_path=path, api_url=prefect.api)
            yield {"prefect": prefect, "api": prefect.api, "s3": s3, "sqs": sqs, "queue": queue,
                   "bucket": bucket, "cfg": cfg, "tmp": tmp, "catalog": Services.from_config(cfg).catalog}  # fmt: skip
        finally:
            prefect.stop()


def _all_runs(api: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        r = prefect_api("POST", f"{api}/flow_runs/filter", json={"limit": 200, "offset": len(out),
                                                                  "sort": "EXPECTED_START_TIME_ASC"})  # fmt: skip
        r.raise_for_status()
        page = r.json()
        out += page
        if len(page) < 200:
            return out


def _max_overlap(runs: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """The most runs whose [start, end] intervals overlap at one instant, and those runs."""
    edges: list[tuple[datetime, int, dict[str, Any]]] = []
    for r in runs:
        if r.get("start_time") and r.get("end_time"):
            edges += [
                (datetime.fromisoformat(r["start_time"]), 1, r),
                (datetime.fromisoformat(r["end_time"]), -1, r),
            ]
    peak, at_peak, cur = 0, [], {}
    for _, d, r in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        if d > 0:
            cur[r["id"]] = f"{r['name']} {r['start_time']}..{r['end_time']}"
        else:
            cur.pop(r["id"], None)
        if len(cur) > peak:
            peak, at_peak = len(cur), list(cur.values())
    return peak, at_peak


def test_a_burst_of_scenes_drains_with_bounded_concurrency(pipeline: dict[str, Any]) -> None:
    p = pipeline
    scenes = {}
    for k in range(N):
        sid = ng_scene_id()
        scenes[sid] = synthesize(p["tmp"] / "raw" / sid, width=24, height=32, scene_id=sid, seed=k)

    def put(hdr: Path) -> str:  # header first, then the data object (whose notification emits)
        p["s3"].upload_file(str(hdr), p["bucket"], f"incoming/{hdr.name}")
        p["s3"].upload_file(str(hdr.with_suffix("")), p["bucket"], f"incoming/{hdr.with_suffix('').name}")
        return f"s3://{p['bucket']}/incoming/{hdr.with_suffix('').name}"

    cat = p["catalog"]

    def done(sid: str) -> bool:
        item = f"aviris-ng-{sid}"
        return (cat.get_item("aviris-ng-l2", item) is not None
                and cat.get_item(product_collection(PRODUCT), product_item_id(item, PRODUCT)) is not None)  # fmt: skip

    with Bridge(p["cfg"], p["sqs"], p["s3"], p["queue"], p["api"]):
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:  # all at once
            uris = dict(zip(scenes, pool.map(put, scenes.values()), strict=True))
        put_s = time.monotonic() - t0
        pending = set(scenes)

        def drained() -> bool:
            pending.difference_update([s for s in list(pending) if done(s)])
            return not pending

        wait_for(drained, timeout=300 + 30 * N, interval=3.0, what=f"{N} scenes with their items")
        wall = time.monotonic() - t0

    # the runs the pool started: deployment runs, not the subflow runs nested in them
    pool_runs = runs_ended(
        lambda: [
            r
            for r in _all_runs(p["api"])
            if r.get("work_pool_name") == POOL and not r.get("parent_task_run_id")
        ],
        N,
        what="the deployment runs to end",
    )
    bad = [
        (r["name"], r["state_type"], r.get("state_name")) for r in pool_runs if r["state_type"] != "COMPLETED"
    ]
    assert not bad, f"deployment runs not completed: {bad[:10]}"
    flows = {r["flow_id"] for r in pool_runs}
    names = {f: prefect_api("GET", f"{p['api']}/flows/{f}").json()["name"] for f in flows}
    activate = [r for r in pool_runs if names[r["flow_id"]] == "activate"]
    per_uri = {u: [r for r in activate if r["parameters"].get("uri") == u] for u in uris.values()}
    assert {u: len(rs) for u, rs in per_uri.items() if len(rs) != 1} == {}, "one activate run per scene"
    for sid in scenes:
        assert len(events(p["api"], SCENE_ACTIVATED, f"stac.item.aviris-ng-l2.aviris-ng-{sid}")) == 1, sid

    limit = httpx.get(f"{p['api']}/work_pools/{POOL}", timeout=10).json()["concurrency_limit"]
    peak, at_peak = _max_overlap(pool_runs)
    assert limit and peak <= limit, f"{peak} pool runs at once, limit {limit}: {at_peak}"

    failed_actions = prefect_api("POST", f"{p['api']}/events/filter", json={
        "filter": {"event": {"name": ["prefect.automation.action.failed"]}}, "limit": 50}).json()["events"]  # fmt: skip
    assert failed_actions == []
    home = p["prefect"].home
    for log in ("server.log", "worker.log", "flow-starter.log"):
        text = (home / log).read_text(errors="replace") if (home / log).exists() else ""
        assert "database is locked" not in text, log
        # a 503 status on its own (not inside an id or a derivation key such as "key 5033e38f9f2c")
        assert not HTTP_503.search(text) and "Service Unavailable" not in text, log
    print(
        f"\nburst: {N} scenes put in {put_s:.1f} s, drained in {wall:.0f} s ({N / wall * 60:.1f} scenes/min); "
        f"{len(pool_runs)} deployment runs, peak {peak} at once (pool limit {limit})"
    )
