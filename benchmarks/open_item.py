"""Benchmark: ``hsi.open_item(...).sel(wavelength=[660, 860], method="nearest")`` vs a bare rasterio read.

Builds (or takes via --path) an activated-like 425-band, band-interleaved, tiled int16 COG
(``benchmarks/products.py``'s scene: default 1536 x 1536 = 2.0 GB of pixels) and runs, each in its
own child process with a cold page cache for the scene file:

* ``open_item`` -- ``hsi.open_item(path).sel(wavelength=[660, 860], method="nearest").values``
  (header + band table, a dask graph of one-band chunks, scale/offset and nodata -> NaN applied);
* ``bare2``     -- ``rasterio`` ``ds.read([i, j])`` of the same two band planes, nothing else.

Printed: wall time, bytes read (``/proc/self/io`` ``rchar``) as a fraction of the cube's bytes
(target <= 2/N = 2/425) and of the compressed file (two band planes need not compress like the
average one, so a bare read can exceed 2/N of the file), and the time ratio open_item / bare2
(target <= 2). No assertions: numbers only.

    .venv/bin/python benchmarks/open_item.py                       # 1536 px (2.0 GB) in a temp dir
    .venv/bin/python benchmarks/open_item.py --size 512            # quick run
    .venv/bin/python benchmarks/open_item.py --path scene.tif
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from products import N_BANDS, _drop_cache, _io, _peak_rss_mb, make_scene  # noqa: E402

WAVELENGTHS = [660.0, 860.0]


def child(mode: str, src: str) -> dict[str, object]:
    import dask.array  # noqa: F401  (imports are not part of the measurement: rchar counts .pyc reads)
    import numpy as np
    import rasterio
    import rioxarray  # noqa: F401
    import xarray  # noqa: F401

    import hsi
    import hsi.arrays  # noqa: F401
    from hsi.scene import bands_from_dataset

    # warm-up: dask imports its scheduler modules and starts its thread pool on the first compute
    xarray.DataArray(dask.array.ones((2, 2), chunks=1)).rio.write_crs(4326).values  # noqa: B018
    _drop_cache(Path(src))
    io0, t0 = _io(), time.perf_counter()
    if mode == "open_item":
        out = hsi.open_item(src).sel(wavelength=WAVELENGTHS, method="nearest")
        data = out.values
        bands = out.band_index.values.tolist()
    else:
        with rasterio.open(src) as ds:
            wl = np.array([b.center_wavelength for b in bands_from_dataset(ds)])
            bands = [int(np.argmin(abs(wl - w))) + 1 for w in WAVELENGTHS]
            data = ds.read(bands)
    wall = time.perf_counter() - t0
    io1 = _io()
    return {
        "mode": mode,
        "wall_s": wall,
        "rchar": io1.get("rchar", 0) - io0.get("rchar", 0),
        "bands": bands,
        "shape": list(data.shape),
        "maxrss_mb": _peak_rss_mb(),
    }


def _run(mode: str, src: Path) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", mode, "--path", str(src)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", help="an existing activated COG instead of a generated one")
    ap.add_argument("--size", type=int, default=1536, help="generated scene size (px); 1536 -> 2.0 GB")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode (the median is printed)")
    ap.add_argument("--child", choices=["open_item", "bare2"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.path)))
        return
    if a.path:
        src = Path(a.path)
    else:
        work = a.workdir or Path(tempfile.mkdtemp(prefix="hsi-bench-open-"))
        work.mkdir(parents=True, exist_ok=True)
        src = work / f"scene_{a.size}.tif"
        if not src.exists():
            t = time.perf_counter()
            make_scene(src, a.size)
            print(f"built {src.name} in {time.perf_counter() - t:.1f} s", flush=True)
    import rasterio

    with rasterio.open(src) as ds:
        pixels = ds.width * ds.height * ds.count * 2
        label = f"{ds.width}x{ds.height}x{ds.count} int16"
    size = src.stat().st_size
    print(f"scene {label}: {pixels / 1e9:.2f} GB of pixels, file {size / 2**20:.0f} MB; N = {N_BANDS}")
    res = {}
    for mode in ("bare2", "open_item"):
        runs = sorted((_run(mode, src) for _ in range(a.repeat)), key=lambda r: float(r["wall_s"]))  # type: ignore[arg-type]
        res[mode] = runs[len(runs) // 2]
    for mode, r in res.items():
        got = float(r["rchar"])  # type: ignore[arg-type]
        print(
            f"{mode:>10}: wall {float(r['wall_s']):7.3f} s  read {got / 2**20:8.1f} MB "  # type: ignore[arg-type]
            f"= {got / pixels:.5f} of the cube's {pixels / 1e9:.2f} GB (target <= 2/N = {2 / N_BANDS:.5f}), "
            f"{got / size:.5f} of the compressed file  bands {r['bands']}  peak RSS {float(r['maxrss_mb']):.0f} MB"  # type: ignore[arg-type]
        )
    ratio = float(res["open_item"]["wall_s"]) / max(float(res["bare2"]["wall_s"]), 1e-9)  # type: ignore[arg-type]
    print(f"open_item / bare rasterio time: {ratio:.2f}x (target <= 2)")


if __name__ == "__main__":
    main()
