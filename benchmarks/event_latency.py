"""Event latency of the new-scene pipeline: object put -> flow runs start -> product published.

    .venv/bin/python benchmarks/event_latency.py [--scenes 10] [--interval 2]

Real processes: a moto server (S3 + SQS notifications), the bridge consumer, a private Prefect server
and a process worker polling every second (PREFECT_WORKER_QUERY_SECONDS=1), the generated deployments
(``activate/new-scene``, which computes index:NDVI in the activation run); outputs to the running local
stack's SeaweedFS and STAC API (``hsi stack up``). Each synthetic ENVI scene's header is put first,
then its data object (whose notification emits); t0 = just before the data put.

Runs twice, each with a fresh moto and Prefect server: with warm starts (the pool's runs fork from
``flow-starter``, deployments/local/warm.py, as in ``hsi stack up``) and, as the baseline, with
Prefect's default process start; prints both and the warm/cold ratio of the medians.

Prints per scene and median / p95 of: t0 -> activate run created (bridge + event + automation),
t0 -> activate run start (the activation flow starts), t0 -> hsi.product.published (the products
run inside the activation run), each against the issue-16 targets (start: median <= 1 s, p95 <= 2 s;
published: median <= 4 s) as a ratio, then where the seconds go: the segments between put, run
created, flow start, hsi.scene.activated, hsi.product.published and the run's end. The activate runs
are the ones the trigger created (flow ``activate``, parameter ``uri`` = the data object).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hsi.config import load_config  # noqa: E402
from hsi.events import PRODUCT_PUBLISHED, SCENE_ACTIVATED  # noqa: E402
from hsi.sources.synthetic import synthesize  # noqa: E402
from hsi.stac.product import product_collection, product_item_id  # noqa: E402
from hsi_pipeline.deployments.generate import apply  # noqa: E402
from hsi_pipeline.deployments.local.prefect_services import WORKER_QUERY_SECONDS  # noqa: E402
from hsi_pipeline.deployments.local.stack import Layout, status  # noqa: E402
from tests.integration.e2e_harness import (  # noqa: E402
    Bridge,
    PrivatePrefect,
    events,
    flow_runs,
    landing_bucket,
    ng_scene_id,
    pipeline_config,
    prefect_api,
    stack_prefect_db,
)  # fmt: skip
from tests.integration.moto_server import free_port, stop_process, tool_bin, wait_for  # noqa: E402

PRODUCT = "index:NDVI"


def _ts(s: str | None) -> float | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


Row = tuple[str, float, float, float, float, float]
LABELS = (
    ("put -> activate run created", 1),
    ("put -> activate run start", 2),
    ("put -> product published", 3),
)
#: issue 16 must-show 3: (median, p95) limits in seconds; None = no limit
TARGETS: dict[str, tuple[float, float | None]] = {
    "put -> activate run start": (1.0, 2.0),
    "put -> product published": (4.0, None),
}
#: where the seconds go between put and published (medians of each segment; columns of a Row, 0 = put)
SEGMENTS = (
    ("put -> activate run created (bridge, event, automation)", 0, 1),
    ("created -> activate flow start (worker poll, fork)", 1, 2),
    ("activate flow start -> scene activated (index, COG, upload, register)", 2, 4),
    ("scene activated -> product published (products in the same run)", 4, 3),
    ("product published -> activate run Completed (run end)", 3, 5),
)


def measure(args: argparse.Namespace, info: dict[str, Any], *, warm: bool) -> list[Row]:
    """One pass over ``args.scenes`` scenes with a fresh moto + Prefect server + worker."""
    tmp = Path(tempfile.mkdtemp(prefix="hsi-latency-"))
    port = free_port()
    moto_log = (tmp / "moto.log").open("wb")
    moto_proc = subprocess.Popen([tool_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=moto_log,
                                 stderr=subprocess.STDOUT)  # fmt: skip
    moto = f"http://127.0.0.1:{port}"
    db = contextlib.ExitStack()
    db_url = None
    if args.prefect_db == "postgres":  # as `hsi stack up` runs Prefect
        db_url = db.enter_context(stack_prefect_db(ROOT / ".stack", f"latency_{os.getpid()}_{int(warm)}"))
    prefect = PrivatePrefect(tmp / "prefect", db_url=db_url)
    try:
        wait_for(lambda: httpx.get(f"{moto}/moto-api/", timeout=2).status_code == 200, what="moto")
        prefect.start_server()
        prefect.start_worker(warm=warm, query_seconds=args.query_seconds)
        run_id = ng_scene_id()[-6:]
        bucket = f"latency-{run_id}"
        s3, sqs, queue = landing_bucket(moto, bucket)
        path = pipeline_config(tmp / "hsi.yaml", stack=info, moto=moto, bucket=bucket, api=prefect.api,
                               products=[{"product": PRODUCT}], run_id=run_id)  # fmt: skip
        cfg = load_config(path)
        apply(cfg, config_path=path, api_url=prefect.api)
        scenes = []
        for i in range(args.scenes):
            sid = ng_scene_id()
            hdr = synthesize(tmp / sid, source="aviris-ng", level="l2", width=args.size,
                             height=int(args.size * 1.25), scene_id=sid, seed=i)  # fmt: skip
            scenes.append((sid, hdr))
        t0: dict[str, float] = {}
        with Bridge(cfg, sqs, s3, queue, prefect.api):
            for sid, hdr in scenes:
                s3.upload_file(str(hdr), bucket, f"in/{hdr.name}")
                t0[sid] = time.time()
                s3.upload_file(str(hdr.with_suffix("")), bucket, f"in/{hdr.with_suffix('').name}")
                time.sleep(args.interval)  # arrival spacing (load shape), not synchronisation

            def published(sid: str) -> float | None:
                item = f"aviris-ng-{sid}"
                rid = f"stac.item.{product_collection(PRODUCT)}.{product_item_id(item, PRODUCT)}"
                evs = events(prefect.api, PRODUCT_PUBLISHED, rid)
                return _ts(evs[0]["occurred"]) if evs else None

            done = {sid: wait_for(lambda sid=sid: published(sid), timeout=600, interval=1.0, what=f"product {sid}")
                    for sid, _ in scenes}  # fmt: skip
        uris = {f"s3://{bucket}/in/{hdr.with_suffix('').name}": sid for sid, hdr in scenes}
        act_runs = {uris[r["parameters"]["uri"]]: r for r in flow_runs(prefect.api, flow_name="activate")
                    if r["parameters"].get("uri") in uris}  # fmt: skip
        missing = sorted(set(t0) - set(act_runs))
        if missing:
            raise RuntimeError(f"no activate run found for: {', '.join(missing)}")

        def activated(sid: str) -> float:
            evs = events(prefect.api, SCENE_ACTIVATED, f"stac.item.aviris-ng-l2.aviris-ng-{sid}")
            return _ts(evs[0]["occurred"]) if evs else float("nan")  # type: ignore[return-value]

        pend = []  # the activate runs' state history: waiting for a worker, then starting
        for r in act_runs.values():
            hist = prefect_api(
                "GET", f"{prefect.api}/flow_run_states/", params={"flow_run_id": r["id"]}
            ).json()
            at = {h["type"]: _ts(h["timestamp"]) for h in hist}
            if all(at.get(k) for k in ("SCHEDULED", "PENDING", "RUNNING")):
                pend.append((at["PENDING"] - at["SCHEDULED"], at["RUNNING"] - at["PENDING"]))  # type: ignore[operator]
        if pend:
            print(f"activate runs: scheduled -> pending (worker poll) median {statistics.median(p[0] for p in pend):.2f} s, "
                  f"pending -> running (fork, engine start) median {statistics.median(p[1] for p in pend):.2f} s",
                  flush=True)  # fmt: skip
        task_breakdown(prefect.api, [r["id"] for r in act_runs.values()])
        rows = []
        for sid, _ in scenes:
            r = act_runs[sid]
            created, start, end = _ts(r["created"]), _ts(r["start_time"]), _ts(r["end_time"])
            assert created is not None and start is not None and end is not None, r
            rows.append((sid, created - t0[sid], start - t0[sid], done[sid] - t0[sid],
                         activated(sid) - t0[sid], end - t0[sid]))  # fmt: skip
        return rows
    finally:
        prefect.stop()
        stop_process(moto_proc)
        moto_log.close()
        db.close()


def task_breakdown(api: str, run_ids: list[str]) -> None:
    """Inside the activate runs: each task's median start (from the flow start) and duration, and the
    time no task was running (flow code, Prefect's task-run bookkeeping, the lease, events)."""
    body = {"flow_runs": {"id": {"any_": run_ids}}, "limit": 200, "sort": "EXPECTED_START_TIME_ASC"}
    trs = prefect_api("POST", f"{api}/task_runs/filter", json=body).json()
    runs = {r["id"]: r for r in prefect_api("POST", f"{api}/flow_runs/filter",
                                             json={"flow_runs": {"id": {"any_": run_ids}}}).json()}  # fmt: skip
    per: dict[str, list[tuple[float, float]]] = {}
    busy: dict[str, float] = {}
    for t in trs:
        fr = runs.get(t["flow_run_id"])
        s, e = _ts(t.get("start_time")), _ts(t.get("end_time"))
        if fr is None or s is None or e is None:
            continue
        f0 = _ts(fr["start_time"])
        assert f0 is not None
        per.setdefault(t["name"].rsplit("-", 1)[0], []).append((s - f0, e - s))
        busy[t["flow_run_id"]] = busy.get(t["flow_run_id"], 0.0) + (e - s)
    print("inside the activate runs (median over runs): task, start after flow start, duration")
    for name, xs in sorted(per.items(), key=lambda kv: statistics.median(x[0] for x in kv[1])):
        print(f"  {name:<40} +{statistics.median(x[0] for x in xs):6.2f} s  {statistics.median(x[1] for x in xs):6.2f} s"
              f"  (x{len(xs) / max(1, len(runs)):.0f} per run)")  # fmt: skip
    if os.environ.get("HSI_LATENCY_LOGS"):  # the last run's states and log lines, from its creation
        rid = run_ids[-1]
        t_c = _ts(runs[rid]["created"])
        assert t_c is not None
        hist = prefect_api("GET", f"{api}/flow_run_states/", params={"flow_run_id": rid}).json()
        logs = prefect_api("POST", f"{api}/logs/filter",
                           json={"logs": {"flow_run_id": {"any_": [rid]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}).json()  # fmt: skip
        lines = [(_ts(h["timestamp"]), f"state {h['type']} {h['name']}") for h in hist]
        lines += [(_ts(g["timestamp"]), f"log {g['message'][:110]}") for g in logs]
        for t, msg in sorted((t, m) for t, m in lines if t is not None):
            print(f"    +{t - t_c:6.3f} s  {msg}")
    idle = []
    for rid, fr in runs.items():
        s, e = _ts(fr.get("start_time")), _ts(fr.get("end_time"))
        if s is not None and e is not None:
            idle.append((e - s) - busy.get(rid, 0.0))
    if idle:
        print(f"  no task running (flow code, bookkeeping, lease, events): median {statistics.median(idle):.2f} s "
              f"of the run")  # fmt: skip


def report(title: str, rows: list[Row]) -> dict[str, float]:
    print(f"\n{title}")
    print(f"{'scene':<22}{'run created':>13}{'activate start':>16}{'product published':>19}")
    for sid, a, b, c, *_ in rows:
        print(f"{sid:<22}{a:>12.2f}s{b:>15.2f}s{c:>18.2f}s")
    medians = {}
    for label, col in LABELS:
        xs = [r[col] for r in rows]
        medians[label] = statistics.median(xs)
        p95 = _pct(xs, 0.95)
        line = f"{label:<28} median {medians[label]:6.2f} s   p95 {p95:6.2f} s   (n={len(xs)})"
        if label in TARGETS:
            tm, tp = TARGETS[label]
            line += f"   / target: median {medians[label] / tm:.2f}x of {tm:g} s"
            if tp is not None:
                line += f", p95 {p95 / tp:.2f}x of {tp:g} s"
            ok = medians[label] <= tm and (tp is None or p95 <= tp)
            line += "  ok" if ok else "  MISSED"
        print(line)
    print("where the time goes (median of each segment):")
    for label, a, b in SEGMENTS:
        xs = [(r[b] if b else 0.0) - (r[a] if a else 0.0) for r in rows]
        xs = [x for x in xs if x == x]  # a run the API did not list is left out
        if xs:
            print(f"  {label:<58} {statistics.median(xs):6.2f} s")
    return medians


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between scene arrivals")
    ap.add_argument("--size", type=int, default=48, help="scene width (height = 1.25 x)")
    ap.add_argument("--prefect-db", choices=["postgres", "sqlite"], default="postgres",
                    help="the private Prefect server's database (postgres: in the stack's PostgreSQL, as `hsi stack up`)")  # fmt: skip
    ap.add_argument("--query-seconds", type=float, default=WORKER_QUERY_SECONDS,
                    help=f"worker poll interval (default {WORKER_QUERY_SECONDS}, as `hsi stack up`)")  # fmt: skip
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the baseline pass (Prefect's default cold process start)")  # fmt: skip
    args = ap.parse_args()
    info = status(Layout.default(ROOT / ".stack"))
    if not info["up"]:
        print("the local stack is not running: `hsi stack up` first", file=sys.stderr)
        return 2
    warm = report(
        "warm starts (flow-starter, as `hsi stack up` runs the pool)", measure(args, info, warm=True)
    )
    if args.no_baseline:
        return 0
    cold = report("baseline: Prefect's default process start (cold)", measure(args, info, warm=False))
    print("\nwarm / cold (medians)")
    for label, _ in LABELS[1:]:
        print(f"{label:<28} {warm[label]:6.2f} s / {cold[label]:6.2f} s = {warm[label] / cold[label]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
