"""Soak: many scenes through the event path with random faults; nothing lost, nothing doubled.

    .venv/bin/python benchmarks/soak.py [--scenes 100] [--interval 2] [--seed 1]
        [--p-kill 0.1] [--p-redeliver 0.3] [--restarts 1]

Real processes, as benchmarks/event_latency.py: a moto server (S3 + SQS notifications), the bridge
consumer, a private Prefect server and a process worker whose runs start warm (forked from
``flow-starter``), the generated deployments (``activate/new-scene`` and ``products/aviris-ng`` with
index:NDVI); outputs on the running local stack's SeaweedFS and STAC API (``hsi stack up`` first).

Faults, drawn from ``--seed``:

* **process kills**: ``kill -9`` of a running flow-run process (a fork of the flow starter), with
  probability ``--p-kill`` after each scene's arrival;
* **redeliveries**: the same S3 notification (same bucket, key and ETag, so the same event id) sent
  again to the queue, with probability ``--p-redeliver`` per scene, sometimes twice;
* **service restarts**: the Prefect server is stopped and started on the same port ``--restarts``
  times during the stream (the bridge keeps the events it could not post and retries).

At the end every scene must be in one of two states: **complete** (exactly one activated item and one
item per configured product, each produced by exactly one ``hsi.scene.activated`` /
``hsi.product.published`` event) or **failed with a record** (a CRASHED or FAILED flow run of that
scene in Prefect, or the pipeline's failure record). Anything else is **lost**; more than one
"did the work" event per item is **doubled**. Prints the table and exits 1 if any scene is lost or
doubled. Not a test (no CI): it takes ~10 s per scene on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsi.config import load_config  # noqa: E402
from hsi.events import PRODUCT_PUBLISHED, SCENE_ACTIVATED  # noqa: E402
from hsi.services import Services  # noqa: E402
from hsi.sources.synthetic import synthesize  # noqa: E402
from hsi.stac.product import product_collection, product_item_id  # noqa: E402
from hsi_pipeline.deployments.generate import apply  # noqa: E402
from hsi_pipeline.deployments.local.stack import Layout, status  # noqa: E402
from tests.integration.e2e_harness import (  # noqa: E402
    Bridge,
    PrivatePrefect,
    events,
    landing_bucket,
    ng_scene_id,
    pipeline_config,
    prefect_api,
    stack_prefect_db,
)  # fmt: skip
from tests.integration.moto_server import free_port, stop_process, tool_bin, wait_for  # noqa: E402

PRODUCT = "index:NDVI"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the flow starter's forks: one per running flow run)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(d.name))
    return out


def _notification(bucket: str, key: str, etag: str, size: int) -> str:
    """The S3 ObjectCreated notification of ``key`` (same ETag: the same event id as the original)."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": size, "eTag": etag, "sequencer": "00"}},
    }]})  # fmt: skip


def _all_runs(api: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while True:
        r = prefect_api("POST", f"{api}/flow_runs/filter", json={"limit": 200, "offset": len(runs)})
        r.raise_for_status()
        page = r.json()
        runs += page
        if len(page) < 200:
            return runs


def _count_events(api: str, name: str) -> int | str:
    """How many ``name`` events the server has (a diagnostic: "?" when it cannot tell)."""
    body = {"filter": {"event": {"name": [name]}}, "limit": 50}
    r = prefect_api("POST", f"{api}/events/filter", json=body)
    if r.status_code != 200:
        return f"? (HTTP {r.status_code})"
    return int(r.json().get("total", len(r.json()["events"])))


def _orphans(api: str, runs: list[dict[str, Any]]) -> set[str]:
    """Ids of non-terminal subflow runs whose parent flow run ended (crashed) without them."""
    state = {r["id"]: r["state_type"] for r in runs}
    out = set()
    for r in runs:
        if r["state_type"] in TERMINAL or not r.get("parent_task_run_id"):
            continue
        tr = prefect_api("GET", f"{api}/task_runs/{r['parent_task_run_id']}")
        parent = tr.json().get("flow_run_id") if tr.status_code == 200 else None
        if parent and state.get(parent) in TERMINAL:
            out.add(r["id"])
    return out


def _settled(api: str, scene_uris: dict[str, str], svc: Services) -> tuple[dict[str, str], int]:
    """Scene -> 'complete' | 'failed' | 'pending' from the catalog and the flow runs; the number of
    runs not yet in a terminal state."""
    runs = _all_runs(api)
    # subflow runs left PENDING/RUNNING by a parent that crashed never move again: not "active"
    orphans = _orphans(api, runs)
    by_scene: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        p = r.get("parameters") or {}
        sid = scene_uris.get(str(p.get("uri"))) or next(
            (s for s in scene_uris.values() if str(p.get("item_id", "")).endswith(s)), None
        )
        if sid:
            by_scene.setdefault(sid, []).append(r)
    out = {}
    for sid in scene_uris.values():
        item = f"aviris-ng-{sid}"
        done = (
            svc.catalog.get_item("aviris-ng-l2", item) is not None
            and svc.catalog.get_item(product_collection(PRODUCT), product_item_id(item, PRODUCT)) is not None
        )
        states = [r["state_type"] for r in by_scene.get(sid, [])]
        if done:
            out[sid] = "complete"
        elif any(s in ("FAILED", "CRASHED") for s in states):
            # a killed parent's in-process subflow run stays PENDING in Prefect: the crash is the record
            out[sid] = "failed"
        else:
            out[sid] = "pending"
    return out, sum(r["state_type"] not in TERMINAL for r in runs if r["id"] not in orphans)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between scene arrivals (load shape)")
    ap.add_argument("--size", type=int, default=24, help="scene width (height = 1.25 x)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--p-kill", type=float, default=0.1)
    ap.add_argument("--p-redeliver", type=float, default=0.3)
    ap.add_argument("--restarts", type=int, default=1, help="Prefect server restarts during the stream")
    ap.add_argument("--settle-timeout", type=float, default=1800.0)
    ap.add_argument("--idle-timeout", type=float, default=180.0,
                    help="stop waiting when no run is active and nothing changed for this long")  # fmt: skip
    ap.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres",
                    help="the private Prefect server's database: the stack's PostgreSQL (as `hsi stack up` "
                         "runs Prefect) or SQLite")  # fmt: skip
    args = ap.parse_args()
    layout = Layout.default(Path(os.environ.get("HSI_STACK_DIR") or ROOT / ".stack"))
    info = status(layout)
    if not info["up"]:
        print("the local stack is not running: `hsi stack up` first", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="hsi-soak-"))
    port = free_port()
    moto_log = (tmp / "moto.log").open("wb")
    moto_proc = subprocess.Popen([tool_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=moto_log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    moto = f"http://127.0.0.1:{port}"
    db = contextlib.ExitStack()
    db_url = None
    if args.prefect_db == "postgres":  # dropped on exit
        db_url = db.enter_context(stack_prefect_db(layout.root, f"soak_{os.getpid()}"))
    prefect = PrivatePrefect(tmp / "prefect", db_url=db_url)
    faults: Counter[str] = Counter()
    t_start = time.monotonic()
    try:
        wait_for(lambda: httpx.get(f"{moto}/moto-api/", timeout=2).status_code == 200, what="moto")
        prefect.start_server(timeout=600)
        prefect.start_worker(warm=True)
        run_id = ng_scene_id()[-6:]
        bucket = f"soak-{run_id}"
        s3, sqs, queue = landing_bucket(moto, bucket)
        path = pipeline_config(tmp / "hsi.yaml", stack=info, moto=moto, bucket=bucket, api=prefect.api,
                               products=[{"product": PRODUCT}], run_id=run_id)  # fmt: skip
        cfg = load_config(path)
        apply(cfg, config_path=path, api_url=prefect.api)
        svc = Services.from_config(cfg)
        restart_at = set(
            rng.sample(range(1, max(2, args.scenes)), min(args.restarts, max(0, args.scenes - 1)))
        )
        uris: dict[str, str] = {}
        with Bridge(cfg, sqs, s3, queue, prefect.api):
            for i in range(args.scenes):
                sid = ng_scene_id()
                hdr = synthesize(tmp / sid, source="aviris-ng", level="l2", width=args.size,
                                 height=int(args.size * 1.25), scene_id=sid, seed=i)  # fmt: skip
                data = hdr.with_suffix("")
                s3.upload_file(str(hdr), bucket, f"in/{hdr.name}")
                key = f"in/{data.name}"
                s3.upload_file(str(data), bucket, key)
                uris[f"s3://{bucket}/{key}"] = sid
                if rng.random() < args.p_redeliver:
                    head = s3.head_object(Bucket=bucket, Key=key)
                    for _ in range(rng.choice((1, 1, 2))):
                        sqs.send_message(QueueUrl=queue, MessageBody=_notification(
                            bucket, key, head["ETag"], head["ContentLength"]))  # fmt: skip
                        faults["redelivery"] += 1
                time.sleep(args.interval)  # arrival spacing (load shape), not synchronisation
                if prefect.starter is not None and rng.random() < args.p_kill:
                    kids = _children(prefect.starter.pid)
                    if kids:
                        os.kill(rng.choice(kids), signal.SIGKILL)
                        faults["process kill"] += 1
                if i in restart_at:
                    prefect.stop_server()
                    prefect.start_server(timeout=600)
                    faults["Prefect server restart"] += 1
            deadline = time.monotonic() + args.settle_timeout
            last, changed = None, time.monotonic()
            while True:  # poll until every scene is complete or failed (or the deadline: "lost")
                state, active = _settled(prefect.api, uris, svc)
                if (state, active) != last:
                    last, changed = (state, active), time.monotonic()
                idle = not active and time.monotonic() - changed > args.idle_timeout
                if "pending" not in state.values() or time.monotonic() > deadline or idle:
                    break
                time.sleep(5.0)  # polling interval of a condition, not synchronisation
        doubled = 0
        for sid in uris.values():
            item = f"aviris-ng-{sid}"
            act = events(prefect.api, SCENE_ACTIVATED, f"stac.item.aviris-ng-l2.{item}")
            pub = events(
                prefect.api, PRODUCT_PUBLISHED,
                f"stac.item.{product_collection(PRODUCT)}.{product_item_id(item, PRODUCT)}",
            )  # fmt: skip
            doubled += int(len(act) > 1) + int(len(pub) > 1)
        counts = Counter(state.values())
        action_failed = _count_events(prefect.api, "prefect.automation.action.failed")
        wall = time.monotonic() - t_start
        print(f"\nsoak: {args.scenes} scenes, seed {args.seed}, {wall:.0f} s wall")
        print("faults injected: " + (", ".join(f"{k} x{v}" for k, v in sorted(faults.items())) or "none"))
        print(f"{'complete (1 activated + 1 product item)':<44}{counts['complete']:>6}")
        print(f"{'failed with a record (crashed/failed run)':<44}{counts['failed']:>6}")
        print(f"{'lost':<44}{counts['pending']:>6}")
        print(f"{'doubled (work done twice for one item)':<44}{doubled:>6}")
        print(f"{'automation actions that failed (Prefect)':<44}{action_failed:>6}")
        return 1 if counts["pending"] or doubled else 0
    finally:
        prefect.stop()
        stop_process(moto_proc)
        moto_log.close()
        db.close()


if __name__ == "__main__":
    sys.exit(main())
