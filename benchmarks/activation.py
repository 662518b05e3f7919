"""Activation benchmark: our COG writer against its floor and against `rio cogeo create`, and peak memory.

For scenes of at least 2 GB (and one twice as large) it prints, in one run:

* our wall time (each run is a child process, started with the input's page cache dropped);
* the **floor**: a cold read of the same bytes (``cat``) plus ``zstd -<level> -T<cores>`` of them
  (warm), i.e. reading and compressing the bytes once on every core, nothing else;
* the wall time of `rio cogeo create` on the same ENVI input with the same creation profile
  (band-interleaved, tiled, ZSTD, predictor, no overviews);
* the **floor on the predicted bytes**: the same ``zstd`` over the bytes our writer (and GDAL)
  actually compress, the 256 x 256 band tiles after TIFF predictor 3 (written to a scratch file
  first, not timed). At ZSTD 9 they cost several times the CPU of the raw floats;
* ours / floor, ours / predicted floor, ours / rio-cogeo, and the peak RSS of each. Peak RSS must
  not grow with scene size.

    .venv/bin/python benchmarks/activation.py                 # 2 GB and 4 GB AVIRIS-NG radiance
    .venv/bin/python benchmarks/activation.py --lines 600 1200 --keep
    .venv/bin/python benchmarks/activation.py --rotation 42   # rotated grid (north-up resampling)
    .venv/bin/python benchmarks/activation.py --lines 1900 19000 --ours-only   # peak RSS, 2 and 20.9 GB
    .venv/bin/python benchmarks/activation.py --emit          # EMIT granule (1x, 2x): GLT path vs map path

``--emit`` synthesizes EMIT L1B granules (1242 cross-track x 1280 down-track x 285 bands, 1.8 GB, and
twice as long), orthorectifies each through its GLT into the COG (:mod:`hsi.glt`), and compares with
the map-projected path on the same bytes (the same radiance written as a north-up ENVI BIP cube).
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
    """Drop the input's pages, after writing back what earlier steps left dirty (a previous step's
    1.7 GB output flushing to disk during the next measurement moved single runs by +-20%)."""
    os.sync()
    for p in path.parent.glob(path.name.split("_img")[0] + "*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def floor_seconds(data: Path, level: int = 9) -> tuple[float, float]:
    """(cold read, zstd of the same bytes on every core): the physical floor of an activation."""
    import time

    if shutil.which("zstd") is None:
        raise SystemExit("benchmarks/activation.py: the floor needs the zstd command (apt-get install zstd)")
    drop_cache(data)
    t0 = time.perf_counter()
    subprocess.run(["cat", str(data)], stdout=subprocess.DEVNULL, check=True)
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    cores = os.cpu_count() or 1
    subprocess.run(
        ["zstd", f"-{level}", f"-T{cores}", "-c", "-q", str(data)], stdout=subprocess.DEVNULL, check=True
    )
    return read, time.perf_counter() - t0


def predicted_floor_seconds(data: Path, work: Path, level: int = 9, block: int = 256) -> float:
    """ZSTD at ``level`` of the tiles our writer actually compresses, on every core: the cube's
    256 x 256 band tiles after TIFF predictor 3, each compressed on its own as a TIFF stores it (warm,
    from memory; building them is not timed). The floor above compresses the *raw* floats, on which
    zstd finds few matches: the predictor's byte planes compress ~9% smaller and take several times
    the CPU at the same level, for us and for GDAL alike."""
    import time

    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from hsi.tile_codec import predict

    stream = work / "predicted.bin"
    with rasterio.open(data) as ds, stream.open("wb") as out:
        for r0 in range(0, ds.height, block):
            h = min(block, ds.height - r0)
            win = ds.read(window=Window(0, r0, ds.width, h))
            for b in range(ds.count):
                for c0 in range(0, ds.width, block):
                    tile = np.zeros((block, block), win.dtype)
                    part = win[b, :, c0 : c0 + block]
                    tile[: part.shape[0], : part.shape[1]] = part
                    out.write(predict(tile, 3).tobytes())
    # each tile compressed on its own, as a TIFF stores it, on every core (zstandard frees the GIL)
    from concurrent.futures import ThreadPoolExecutor

    from hsi.tile_codec import compressor

    tile_bytes = block * block * 4

    def compress(chunk: bytes) -> int:
        return len(compressor("ZSTD", level)(chunk))  # the writer's own (per-thread) compressor

    raw = stream.read_bytes()  # warm, as the floor's zstd reads a cached file
    t0 = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        sum(
            pool.map(
                compress, (raw[i : i + tile_bytes] for i in range(0, len(raw), tile_bytes)), chunksize=64
            )
        )
    took = time.perf_counter() - t0
    stream.unlink()
    return took


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


EMIT_GLT = (
    "import sys; from hsi.sources import read_scene; from hsi.cog import write_cog, CogProfile;"
    "write_cog(read_scene(sys.argv[1]), sys.argv[2], CogProfile(blocksize=256, compress='ZSTD', level=9))"
)


def _emit_as_envi(nc: Path, out: Path) -> Path:
    """The granule's radiance (downtrack, crosstrack, bands) as a north-up ENVI BIP cube, streamed."""
    import h5netcdf

    from hsi.sources.envi import format_header

    with h5netcdf.File(nc, "r") as f:
        var = f.variables["radiance"]
        lines, samples, bands = var.shape
        wl = f.groups["sensor_band_parameters"].variables["wavelengths"][...]
        with open(out, "wb") as fh:
            for r0 in range(0, lines, 64):
                var[r0 : r0 + 64].astype("<f4").tofile(fh)
    hdr = out.with_name(out.name + ".hdr")
    hdr.write_text(
        format_header(
            {
                "samples": samples,
                "lines": lines,
                "bands": bands,
                "header offset": 0,
                "file type": "ENVI Standard",
                "data type": 4,
                "interleave": "bip",
                "byte order": 0,
                "map info": "{UTM, 1, 1, 400000.0, 4100000.0, 60.0, 60.0, 12, North, WGS-84}",
                "wavelength units": "Nanometers",
                "wavelength": [f"{w:.6f}" for w in wl],
                "data ignore value": -9999,
            }
        )
    )
    return hdr


def emit_case(work: Path, downtracks: list[int], keep: bool) -> None:
    from hsi.sources.emit_synth import synthesize_emit

    rows = []
    for i, lines in enumerate(downtracks):
        d = work / f"emit{i}"
        shutil.rmtree(d, ignore_errors=True)
        nc = synthesize_emit(d, level="l1b", crosstrack=1242, downtrack=lines, seed=200 + i, companions=False)
        hdr = _emit_as_envi(nc, d / "emit_map_img")
        glt_out, map_out = d / "glt.tif", d / "map.tif"
        drop_cache(nc)
        w_glt, m_glt = _measure([PY, "-c", EMIT_GLT, str(nc), str(glt_out)])
        drop_cache(hdr.with_suffix(""))
        w_map, m_map = _measure([PY, "-c", OURS, str(hdr), str(map_out)])
        rows.append(
            {
                "granule": f"1242x{lines}x285 float32",
                "GB": round(nc.stat().st_size / 1e9, 2),
                "glt_s": round(w_glt, 1),
                "map_s": round(w_map, 1),
                "ratio": round(w_glt / w_map, 2),
                "glt_peak_MB": round(m_glt),
                "map_peak_MB": round(m_map),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if not keep:
            shutil.rmtree(d, ignore_errors=True)
    if len(rows) > 1:
        print(
            f"\nGLT path peak RSS, largest / smallest granule: {rows[-1]['glt_peak_MB'] / rows[0]['glt_peak_MB']:.2f}x "
            f"for {rows[-1]['GB'] / rows[0]['GB']:.1f}x the data (limit: <= 1024 MB, flat)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/hsi-bench-activation")
    ap.add_argument("--width", type=int, default=648, help="samples (AVIRIS-NG swath is ~600-700)")
    ap.add_argument("--lines", type=int, nargs="+", default=[1900, 3800], help="lines per scene size")
    ap.add_argument("--rotation", type=float, default=0.0)
    ap.add_argument("--keep", action="store_true", help="keep the generated scenes")
    ap.add_argument(
        "--ours-only",
        action="store_true",
        help="only our writer's time and peak RSS (no floor, no rio-cogeo): the memory check on a 20 GB scene",
    )
    ap.add_argument("--emit", action="store_true", help="EMIT granules: GLT path vs map-projected path")
    ap.add_argument(
        "--emit-downtrack", type=int, nargs="+", default=[1280, 2560], help="EMIT down-track lines"
    )
    args = ap.parse_args()
    if args.emit:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        emit_case(work, args.emit_downtrack, args.keep)
        return
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
        if args.ours_only:
            drop_cache(data)
            w_ours, m_ours = _measure([PY, "-c", OURS, str(hdr), str(ours_out)])
            rows.append({"scene": f"{args.width}x{lines}x425 float32", "GB": round(size_gb, 2),
                         "ours_s": round(w_ours, 1), "ours_peak_MB": round(m_ours),
                         "ours_out_GB": round(ours_out.stat().st_size / 1e9, 2)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            if not args.keep:
                shutil.rmtree(d, ignore_errors=True)
            continue
        f_read, f_zstd = floor_seconds(data)
        f_pred = predicted_floor_seconds(data, d)
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
                "floor_s": f"{f_read:.1f}+{f_zstd:.1f}",
                "ours/floor": round(w_ours / (f_read + f_zstd), 2),
                "pred_floor_s": f"{f_read:.1f}+{f_pred:.1f}",
                "ours/pred_floor": round(w_ours / (f_read + f_pred), 2),
                "rio_cogeo_s": round(w_rio, 1),
                "ours/rio": round(w_ours / w_rio, 2),
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
