"""Activation benchmark: our COG writer vs `rio cogeo create` with the same profile, and peak memory.

For scenes of at least 2 GB (and one twice as large) it prints our wall time, the wall time of
`rio cogeo create` on the same ENVI input with the same creation profile (band-interleaved, tiled,
ZSTD, predictor, no overviews), their ratio, and the peak RSS of each (each run is a child
process, started with the input's page cache dropped). Peak RSS must not grow with scene size.

    .venv/bin/python benchmarks/activation.py                 # 2 GB and 4 GB AVIRIS-NG radiance
    .venv/bin/python benchmarks/activation.py --lines 600 1200 --keep
    .venv/bin/python benchmarks/activation.py --rotation 42   # rotated grid (north-up resampling)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PY = sys.executable
RIO = str(Path(sys.executable).with_name("rio"))


def drop_cache(path: Path) -> None:
    for p in path.parent.glob(path.name.split("_img")[0] + "*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _measure(cmd: list[str]) -> tuple[float, float]:
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t0\n"
        "if p.returncode: sys.stderr.write(p.stderr[-3000:]); sys.exit(p.returncode)\n"
        "print(json.dumps({'wall': wall, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    proc = subprocess.run([PY, "-c", wrapper, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    return d["wall"], d["rss"]


OURS = (
    "import sys; from hsi.sources import read_scene; from hsi.cog import write_cog, CogProfile;"
    "write_cog(read_scene(sys.argv[1]), sys.argv[2], CogProfile(blocksize=256, compress='ZSTD', level=9))"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/hsi-bench-activation")
    ap.add_argument("--width", type=int, default=648, help="samples (AVIRIS-NG swath is ~600-700)")
    ap.add_argument("--lines", type=int, nargs="+", default=[1900, 3800], help="lines per scene size")
    ap.add_argument("--rotation", type=float, default=0.0)
    ap.add_argument("--keep", action="store_true", help="keep the generated scenes")
    args = ap.parse_args()
    from hsi.sources.synthetic import synthesize

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, lines in enumerate(args.lines):
        d = work / f"scene{i}"
        shutil.rmtree(d, ignore_errors=True)
        hdr = synthesize(
            d,
            source="aviris-ng",
            level="l1b",
            width=args.width,
            height=lines,
            rotation_deg=args.rotation,
            seed=100 + i,
        )
        data = hdr.with_suffix("")
        size_gb = data.stat().st_size / 1e9
        ours_out, rio_out = d / "ours.tif", d / "rio.tif"
        drop_cache(data)
        w_ours, m_ours = _measure([PY, "-c", OURS, str(hdr), str(ours_out)])
        drop_cache(data)
        # the same profile through rio-cogeo's CLI (GDAL reads the ENVI file itself)
        w_rio, m_rio = _measure(
            [
                RIO,
                "cogeo",
                "create",
                str(data),
                str(rio_out),
                "--cog-profile",
                "zstd",
                "--overview-level",
                "0",
                "--blocksize",
                "256",
                "--co",
                "INTERLEAVE=BAND",
                "--co",
                "PREDICTOR=3",
                "--co",
                "ZSTD_LEVEL=9",
                "--co",
                "NUM_THREADS=ALL_CPUS",
                "--co",
                "BIGTIFF=IF_SAFER",
                "--config",
                "GDAL_NUM_THREADS=ALL_CPUS",
                "--no-in-memory",
                "--quiet",
            ]
        )
        rows.append(
            {
                "scene": f"{args.width}x{lines}x425 float32",
                "GB": round(size_gb, 2),
                "ours_s": round(w_ours, 1),
                "rio_cogeo_s": round(w_rio, 1),
                "ratio": round(w_ours / w_rio, 2),
                "ours_peak_MB": round(m_ours),
                "rio_peak_MB": round(m_rio),
                "ours_out_GB": round(ours_out.stat().st_size / 1e9, 2),
                "rio_out_GB": round(rio_out.stat().st_size / 1e9, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print()
    hdrs = list(rows[0].keys())
    print("  ".join(f"{h:>14}" for h in hdrs))
    for r in rows:
        print("  ".join(f"{r[h]!s:>14}" for h in hdrs))
    if len(rows) > 1:
        print(
            f"\npeak RSS, largest / smallest scene: ours {rows[-1]['ours_peak_MB'] / rows[0]['ours_peak_MB']:.2f}x "
            f"for {rows[-1]['GB'] / rows[0]['GB']:.1f}x the data"
        )


if __name__ == "__main__":
    main()
