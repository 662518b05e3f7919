"""Bytes read from S3 to index one scene (headers only) vs the scene's size, for an ENVI pair, a
.tar.gz, a .zip and an EMIT netCDF4 granule, against a local moto server (started here).

    .venv/bin/python benchmarks/index_s3.py [--width 96 --height 256] [--emit 320x400]

Counts the Content-Length of every GetObject response the landing bucket's client receives. For
EMIT the size is the granule object's (its MASK companion is only HEADed), ``--emit`` its
cross-track x down-track pixels (a real granule is 1242x1280, 1.88 GB: 0.89 MB read in 4 GETs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

from hsi import activation as act
from hsi.config import PipelineConfig
from hsi.services import Services
from hsi.sources.emit_synth import synthesize_emit
from hsi.sources.synthetic import synthesize

BUCKET = "bench-landing"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--port", type=int, default=35997)
    ap.add_argument("--emit", default="320x400", help="EMIT granule crosstrack x downtrack")
    ns = ap.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    url = f"http://127.0.0.1:{ns.port}"
    tmp = Path(tempfile.mkdtemp(prefix="hsi-bench-index-"))
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                             str(ns.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/moto-api/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        cfg = PipelineConfig.model_validate({
            "storage": {"root": str(tmp / "assets")}, "catalog": {"url": str(tmp / "catalog")},
            "work_dir": str(tmp / "work"),
            "inputs": [{"prefix": f"s3://{BUCKET}", "endpoint_url": url, "region": "us-east-1"}],
        })  # fmt: skip
        svc = Services.from_config(cfg)
        got: list[int] = []

        def count(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
            got.append(int((parsed or {}).get("ContentLength") or 0))

        svc.store_for(f"s3://{BUCKET}/x").client.meta.events.register("after-call.s3.GetObject", count)  # type: ignore[attr-defined]
        print(
            f"scene {ns.width}x{ns.height}x425 float32; machine shared with other jobs (figures are indicative)"
        )
        print(f"{'input':<10} {'scene bytes':>12} {'GETs':>5} {'bytes read':>11} {'share':>8} {'time s':>7}")
        for fmt in ("envi", "tar.gz", "zip"):
            d = tmp / fmt
            out = synthesize(d, source="aviris-ng", level="l2", width=ns.width, height=ns.height, seed=1,
                             archive=False if fmt == "envi" else fmt)  # type: ignore[arg-type]  # fmt: skip
            files = sorted(p for p in d.iterdir() if p.is_file())
            for p in files:
                s3.upload_file(str(p), BUCKET, f"{fmt}/{p.name}")
            size = sum(p.stat().st_size for p in files)
            key = out.with_suffix("").name if fmt == "envi" else out.name
            got.clear()
            t0 = time.perf_counter()
            act.index_scene(svc, f"s3://{BUCKET}/{fmt}/{key}")
            dt = time.perf_counter() - t0
            print(f"{fmt:<10} {size:>12} {len(got):>5} {sum(got):>11} {sum(got) / size:>8.2%} {dt:>7.2f}")
        ct, dt_ = (int(v) for v in ns.emit.split("x"))
        nc = synthesize_emit(tmp / "emit", level="l2a", crosstrack=ct, downtrack=dt_, seed=1)
        for p in sorted(q for q in nc.parent.iterdir() if q.is_file()):
            s3.upload_file(str(p), BUCKET, f"emit/{p.name}")
        size = nc.stat().st_size
        got.clear()
        t0 = time.perf_counter()
        act.index_scene(svc, f"s3://{BUCKET}/emit/{nc.name}")
        dt = time.perf_counter() - t0
        print(f"{'emit':<10} {size:>12} {len(got):>5} {sum(got):>11} {sum(got) / size:>8.2%} {dt:>7.2f}"
              f"   ({ct}x{dt_}x285 float32 granule)")  # fmt: skip
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
