"""Benchmark: a 3-band index through the product engine vs bare rasterio vs a full-cube read.

Builds (or takes via --path) activated-like 425-band, band-interleaved, tiled int16 COGs and, for
each scene size, runs three measurements, each in its own child process with a cold page cache
for the scene file (``posix_fadvise(POSIX_FADV_DONTNEED)``):

* ``engine``  -- ``run_product(index:EVI)`` (3 bands: N, R, B) -> product COG with overviews;
* ``bare3``   -- rasterio reads of the same 3 band indexes, window by window, nothing written (the
  anchor of issue 16: rasterio's defaults, GDAL decoding on one thread);
* ``bare3t``  -- the same, the dataset opened with ``GDAL_NUM_THREADS=ALL_CPUS`` as the engine opens
  it (GDAL decodes the blocks of a read on every core): the read alone, with the engine's threads;
* ``full``    -- rasterio reads of all 425 bands, window by window (what a pixel-interleaved
  layout or a naive product would cost).

Printed per run: wall time, bytes read (``/proc/self/io``: ``rchar`` = bytes through read
syscalls, ``read_bytes`` = bytes from the block device), peak RSS of the child
(``VmHWM``), and the ratios. No assertions: numbers only.

    .venv/bin/python benchmarks/products.py                 # sizes 512 and 1024 in a temp dir
    .venv/bin/python benchmarks/products.py --sizes 768 1536 --workdir /tmp/hsi-bench --keep
    .venv/bin/python benchmarks/products.py --path scene.tif
    .venv/bin/python benchmarks/products.py --emit           # EMIT L2A 1x/2x: geometry=sensor vs ortho

``--emit`` synthesizes EMIT L2A granules (1242 x 1280 x 285 float32, 1.8 GB, and twice as long),
activates each (GLT COG), then runs NDVI on the orthorectified COG (``ortho``: 2 bands read) and on the
raw granule's lines and samples then through the GLT (``sensor``: whole-line strips of every band),
and checks that the two outputs are equal pixel for pixel.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_BANDS = 425
PRODUCT = "index:EVI"


def _io() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            k, v = line.split(":")
            out[k.strip()] = int(v)
    except OSError:
        pass
    return out


def _peak_rss_mb() -> float:
    """VmHWM of this process (reset by exec, unlike ru_maxrss which survives fork+exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def make_scene(path: Path, size: int) -> Path:
    """Smooth vegetation/soil-like spectra + noise, int16 reflectance x 1e4, 5 nm, 380-2500 nm."""
    import numpy as np

    from hsi.products.testing import band_table, write_activated_cog

    wl = np.linspace(380.0, 2500.0, N_BANDS)
    good = [not (1340 <= x <= 1445 or 1790 <= x <= 1955) for x in wl]
    veg = np.where(wl < 700, 0.05, 0.45) - 0.1 * np.exp(-0.5 * ((wl - 1450) / 60) ** 2)
    soil = 0.1 + 0.25 * (wl - 380) / 2120

    def fill(w):
        rng = np.random.default_rng(w.row_off * 7919 + w.col_off)
        yy, xx = np.mgrid[0 : w.height, 0 : w.width]
        f = (0.5 + 0.5 * np.sin((xx + w.col_off) / 37.0) * np.cos((yy + w.row_off) / 53.0)).astype(np.float32)
        cube = f[None] * veg[:, None, None] + (1 - f[None]) * soil[:, None, None]
        cube += rng.normal(0, 0.002, cube.shape)
        return np.round(cube * 1e4).astype("int16")

    return write_activated_cog(
        path,
        band_table(wl, 5.0, good=good, scale=1e-4),
        width=size,
        height=size,
        fill=fill,
        dtype="int16",
        nodata=-9999,
        block=256,
    )


def child(mode: str, src: str, out: str) -> dict[str, object]:
    import rasterio

    from hsi.products import get_product, run_product
    from hsi.products.bands import select_bands
    from hsi.products.engine import iter_windows
    from hsi.scene import bands_from_dataset

    _drop_cache(Path(src))
    io0, t0 = _io(), time.perf_counter()
    extra: dict[str, object] = {}
    if mode == "engine":
        res = run_product(get_product(PRODUCT), src, out)
        extra = {"bands_read": res.bands_read, "windows": res.windows}
    else:
        env = rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS") if mode == "bare3t" else rasterio.Env()
        with env, rasterio.open(src) as ds:
            if mode in ("bare3", "bare3t"):
                sel = select_bands(get_product(PRODUCT), bands_from_dataset(ds), "bench")
                idx = sorted({s.index for s in sel})
            else:
                idx = list(range(1, ds.count + 1))
            nwin = 0
            for w in iter_windows(ds.width, ds.height, ds.block_shapes[0], 512):
                ds.read(indexes=idx, window=w)
                nwin += 1
            extra = {"bands_read": idx if len(idx) < 10 else f"{len(idx)} bands", "windows": nwin}
    wall = time.perf_counter() - t0
    io1 = _io()
    return {
        "mode": mode,
        "wall_s": wall,
        "rchar": io1.get("rchar", 0) - io0.get("rchar", 0),
        "read_bytes": io1.get("read_bytes", 0) - io0.get("read_bytes", 0),
        "maxrss_mb": _peak_rss_mb(),
        **extra,
    }


def emit_child(mode: str, src: str, out: str) -> dict[str, object]:
    """NDVI on an activated EMIT COG (``ortho``) or on its raw granule then the GLT (``sensor``)."""
    from hsi.products import get_product, run_product
    from hsi.products.sensor import run_product_sensor
    from hsi.sources import read_scene

    prod = get_product("index:NDVI")
    _drop_cache(Path(src))
    io0, t0 = _io(), time.perf_counter()
    if mode == "ortho":
        run_product(prod, src, out)
    else:
        run_product_sensor(prod, read_scene(src), out)
    wall = time.perf_counter() - t0
    io1 = _io()
    return {"mode": mode, "wall_s": wall, "rchar": io1.get("rchar", 0) - io0.get("rchar", 0),
            "read_bytes": io1.get("read_bytes", 0) - io0.get("read_bytes", 0), "maxrss_mb": _peak_rss_mb()}  # fmt: skip


def emit_case(work: Path, downtracks: list[int], keep: bool) -> None:
    import numpy as np
    import rasterio

    from hsi.activation import convert
    from hsi.sources.emit_synth import synthesize_emit

    print("NDVI on EMIT L2A granules: geometry=sensor (raw lines, then the GLT) vs ortho (activated COG)")
    rows = []
    for i, lines in enumerate(downtracks):
        d = work / f"emit{i}"
        shutil.rmtree(d, ignore_errors=True)
        nc = synthesize_emit(d, level="l2a", crosstrack=1242, downtrack=lines, seed=300 + i, companions=False)
        cog = convert(nc, d / "out").files["cube"]
        runs = {m: _run_child(m, nc if m == "sensor" else cog, d / f"ndvi_{m}.tif", emit=True)
                for m in ("ortho", "sensor")}  # fmt: skip
        with rasterio.open(d / "ndvi_ortho.tif") as a, rasterio.open(d / "ndvi_sensor.tif") as b:
            same = a.transform == b.transform and np.array_equal(a.read(1), b.read(1))
        o, s_ = runs["ortho"], runs["sensor"]
        rows.append({"granule": f"1242x{lines}x285 float32", "GB": round(nc.stat().st_size / 1e9, 2),
                     "ortho_s": round(float(o["wall_s"]), 2), "sensor_s": round(float(s_["wall_s"]), 2),
                     "ratio": round(float(s_["wall_s"]) / float(o["wall_s"]), 2),
                     "ortho_read_MB": round(float(o["rchar"]) / 2**20), "sensor_read_MB": round(float(s_["rchar"]) / 2**20),
                     "ortho_peak_MB": round(float(o["maxrss_mb"])), "sensor_peak_MB": round(float(s_["maxrss_mb"])),
                     "identical": same})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
    if len(rows) > 1:
        print(f"\nsensor path peak RSS, largest / smallest granule: "
              f"{rows[-1]['sensor_peak_MB'] / rows[0]['sensor_peak_MB']:.2f}x for {rows[-1]['GB'] / rows[0]['GB']:.1f}x "
              "the data")  # fmt: skip


def _run_child(mode: str, src: Path, out: Path, emit: bool = False) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", mode, "--path", str(src), "--out", str(out)]
    cmd += ["--emit"] if emit else []
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median_runs(src: Path, work: Path, repeat: int) -> dict[str, dict[str, object]]:
    """Each mode ``repeat`` times, interleaved (engine, bare3, bare3t, engine, ...); the run of median
    wall time per mode (the full-cube read once: it is the slow reference, not a ratio's anchor)."""
    modes = ("engine", "bare3", "bare3t")
    got: dict[str, list[dict[str, object]]] = {m: [] for m in modes}
    for _ in range(max(1, repeat)):
        for m in modes:
            got[m].append(_run_child(m, src, work / f"{src.stem}_{m}.tif"))
    runs = {m: sorted(rs, key=lambda r: float(r["wall_s"]))[len(rs) // 2] for m, rs in got.items()}  # type: ignore[arg-type]
    runs["full"] = _run_child("full", src, work / f"{src.stem}_full.tif")
    return runs


def _mb(x: object) -> str:
    return f"{float(x) / 2**20:9.1f}"  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", action="append", help="existing activated COG(s) instead of generated ones")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="generated scene sizes (px)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep generated scenes")
    ap.add_argument("--repeat", type=int, default=5, help="runs per mode; the median run is printed")
    ap.add_argument("--emit", action="store_true", help="EMIT granules: geometry=sensor vs ortho")
    ap.add_argument(
        "--emit-downtrack", type=int, nargs="+", default=[1280, 2560], help="EMIT down-track lines"
    )
    ap.add_argument(
        "--child", choices=["engine", "bare3", "bare3t", "full", "ortho", "sensor"], help=argparse.SUPPRESS
    )
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps((emit_child if a.emit else child)(a.child, a.path[0], a.out)))
        return
    if a.emit:
        work = a.workdir or Path(tempfile.mkdtemp(prefix="hsi-bench-"))
        try:
            emit_case(work, a.emit_downtrack, a.keep)
        finally:
            if not a.keep and a.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
        return

    import rasterio

    work = a.workdir or Path(tempfile.mkdtemp(prefix="hsi-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    scenes: list[Path] = []
    if a.path:
        scenes = [Path(p) for p in a.path]
    else:
        for s in a.sizes:
            p = work / f"scene_{s}.tif"
            if not p.exists():
                t = time.perf_counter()
                make_scene(p, s)
                print(
                    f"built {p.name}: {s}x{s}x{N_BANDS} int16 band-interleaved COG, "
                    f"{p.stat().st_size / 2**20:.0f} MB in {time.perf_counter() - t:.1f} s",
                    flush=True,
                )
            scenes.append(p)
    try:
        print(
            f"\nproduct {PRODUCT} (3 bands) - cold page cache per run, one child process per run, "
            f"median of {a.repeat} runs"
        )
        print(
            f"{'scene':>18} {'run':>7} {'wall s':>8} {'rchar MB':>9} {'disk MB':>9} {'peak RSS MB':>11}"
            f"  ratios"
        )
        for src in scenes:
            with rasterio.open(src) as ds:
                label = f"{ds.width}x{ds.height}x{ds.count}"
                interleave = ds.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE")
            runs = _median_runs(src, work, a.repeat)
            for m, r in runs.items():
                ratio = ""
                if m == "engine":
                    f = runs["full"]
                    ratio = (
                        f"bytes vs full {r['rchar'] / max(f['rchar'], 1):.4f}, "
                        f"time vs full {r['wall_s'] / f['wall_s']:.3f}, "
                        f"time vs bare3 {r['wall_s'] / runs['bare3']['wall_s']:.2f} (target <= 1.3), "
                        f"bytes vs bare3 {r['rchar'] / max(runs['bare3']['rchar'], 1):.2f} (target <= 1.1), "
                        f"time vs bare3t {r['wall_s'] / runs['bare3t']['wall_s']:.2f}"
                    )
                elif m in ("bare3", "bare3t"):
                    ratio = f"bytes vs full {r['rchar'] / max(runs['full']['rchar'], 1):.4f}"
                print(
                    f"{label:>18} {m:>7} {r['wall_s']:8.2f} {_mb(r['rchar'])} {_mb(r['read_bytes'])} "
                    f"{float(r['maxrss_mb']):11.1f}  {ratio}"
                )
            print(
                f"{'':>18} (interleave={interleave}, engine bands read {runs['engine']['bands_read']}, "
                f"windows {runs['engine']['windows']})"
            )
    finally:
        if not a.keep and not a.path and a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
