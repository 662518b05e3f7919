"""Methane matched filter benchmark: our `ch4-mf` vs mag1c 1.2.0's classic matched filter (CPU).

For synthetic AVIRIS-NG radiance scenes with an injected plume (`hsi.products.testing.MethaneScene`,
Beer-Lambert with the mag1c absorption table) of growing length, it prints:

* our wall time and peak RSS (`run_product`, COG in -> COG out, child process), single pass
  (`exclude_sigma: null`, the classic filter) and with the default robust background pass;
* mag1c 1.2.0's `acrwl1mf` on the same bands as a *classic* filter (`num_iter=0`, no albedo
  correction, no non-negativity, no sparsity, same covariance shrinkage `alpha`, one batch per
  detector column, float64, CPU) in its own interpreter, with its own `generate_template_from_bands`,
  timed from reading the window bands of the same COG to the result array;
* the difference between the two enhancement maps (max / RMS, and relative to the filter noise),
  the difference between our unit absorption and mag1c's template, and the wall-time ratio;
* whether our peak RSS stays flat as the scene grows (mag1c holds the whole window cube).

mag1c needs torch: give an interpreter that has torch (CPU) and mag1c 1.2.0, e.g.

    python3 -m venv /tmp/mag1c-venv
    /tmp/mag1c-venv/bin/pip install torch --index-url <a CPU wheel index or a local torch CPU wheel>
    /tmp/mag1c-venv/bin/pip install mag1c==1.2.0 rasterio
    .venv/bin/python benchmarks/methane.py --mag1c-python /tmp/mag1c-venv/bin/python
    .venv/bin/python benchmarks/methane.py --lines 1024 4096 --width 256 --mag1c-python ...

Without `--mag1c-python` (or when it cannot import mag1c) only our side runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PY = sys.executable

MAKE = """
import sys, numpy as np
from hsi.products.testing import MethaneScene, band_table, write_activated_cog
from hsi.sources.synthetic import sensor_table
lines, width, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
t = sensor_table("aviris-ng")
sel = (t.wavelength >= 2000) & (t.wavelength <= 2500)
wl, fw = t.wavelength[sel], t.fwhm[sel]
sc = MethaneScene(lines, width, wl, fw, peak_ppm_m=1500.0, plume_center=(lines / 2, width / 2),
                  plume_sigma_px=6.0, seed=7)
def fill(w):
    return sc.window(slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width))
write_activated_cog(path, band_table(list(wl), list(fw)), width=width, height=lines, fill=fill,
                    tags={"HSI_QUANTITY": "radiance"}, block=256)
"""

OURS = """
import json, sys
from hsi.products import get_product, run_product
src, dst, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
res = run_product(get_product("ch4-mf"), src, dst, params)
print(json.dumps({"noise": res.fit_summary["noise_ppm_m_median"], "plumes": res.fit_summary["plumes"]}))
"""

MAG1C = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np, rasterio, torch
from mag1c.mag1c import acrwl1mf, generate_template_from_bands
src, out, lo, hi, alpha = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
torch.set_num_threads(int(sys.argv[6]))
with rasterio.open(src) as ds:
    wl = np.array([float(ds.tags(i)["WAVELENGTH_NM"]) for i in range(1, ds.count + 1)])
    fw = np.array([float(ds.tags(i)["FWHM_NM"]) for i in range(1, ds.count + 1)])
    keep = np.flatnonzero((wl >= lo) & (wl <= hi))
    cube = ds.read([int(i) + 1 for i in keep]).astype(np.float64)  # (k, rows, cols)
template = generate_template_from_bands(wl[keep], fw[keep])[:, 1]
x = torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 1, 0)))  # (columns, rows, bands)
mask = torch.ones((1, x.shape[1]), dtype=torch.bool)
mf, _ = acrwl1mf(x, torch.from_numpy(template), 0, True, True, True, 1.0, alpha, mask)
res = mf[:, :, 0].numpy().T  # (rows, columns), ppm m
wall = time.perf_counter() - t0
np.save(out, res)
np.save(out.replace(".npy", "_template.npy"), template)
print(json.dumps({"wall_inner": wall}))
"""


def _measure(cmd: list[str]) -> tuple[float, float, str]:
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t0\n"
        "if p.returncode: sys.stderr.write(p.stderr[-3000:]); sys.exit(p.returncode)\n"
        "print(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else '{}')\n"
        "print(json.dumps({'wall': wall, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    proc = subprocess.run([PY, "-c", wrapper, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd[:3])} ...\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    d = json.loads(lines[-1])
    return d["wall"], d["rss"], lines[-2]


def _has_mag1c(python: str) -> bool:
    probe = subprocess.run(
        [python, "-c", "import torch, mag1c.mag1c, rasterio"], capture_output=True, text=True
    )
    if probe.returncode:
        print(f"mag1c not usable with {python}: {probe.stderr.strip().splitlines()[-1:]}")
    return probe.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--width", type=int, default=256, help="cross-track columns")
    ap.add_argument("--shrinkage", type=float, default=0.001, help="same covariance shrinkage for both")
    ap.add_argument("--mag1c-python", default=None, help="interpreter with torch (CPU) + mag1c 1.2.0")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for mag1c")
    ap.add_argument("--work", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="hsi-ch4-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    mag = a.mag1c_python if a.mag1c_python and _has_mag1c(a.mag1c_python) else None
    rows = []
    try:
        for lines in a.lines:
            src = work / f"rdn_{lines}.tif"
            subprocess.run([PY, "-c", MAKE, str(lines), str(a.width), str(src)], check=True)
            gb = src.stat().st_size / 2**30
            single = {"exclude_sigma": None, "shrinkage": a.shrinkage}
            w1, r1, info1 = _measure(
                [PY, "-c", OURS, str(src), str(work / f"ours_{lines}.tif"), json.dumps(single)]
            )
            robust = {"shrinkage": a.shrinkage}
            w2, r2, _ = _measure(
                [PY, "-c", OURS, str(src), str(work / f"robust_{lines}.tif"), json.dumps(robust)]
            )
            row = {"lines": lines, "cog_gb": round(gb, 3), "ours_s": w1, "ours_rss_mb": r1, "robust_s": w2,
                   "robust_rss_mb": r2, "noise": json.loads(info1)["noise"]}  # fmt: skip
            if mag:
                out = str(work / f"mag1c_{lines}.npy")
                wm, rm, infom = _measure(
                    [mag, "-c", MAG1C, str(src), out, "2100", "2450", str(a.shrinkage), str(a.threads)]
                )
                import rasterio

                from hsi.products.methane import ch4_unit_absorption

                with rasterio.open(work / f"ours_{lines}.tif") as ds:
                    ours = ds.read(1).astype(np.float64)
                with rasterio.open(src) as ds:
                    wl = np.array([float(ds.tags(i)["WAVELENGTH_NM"]) for i in range(1, ds.count + 1)])
                    fw = np.array([float(ds.tags(i)["FWHM_NM"]) for i in range(1, ds.count + 1)])
                keep = (wl >= 2100) & (wl <= 2450)
                theirs = np.load(out)
                tmpl = np.load(out.replace(".npy", "_template.npy"))
                k = ch4_unit_absorption(wl[keep], fw[keep])
                d = ours - theirs
                row.update(
                    mag1c_s=wm,
                    mag1c_rss_mb=rm,
                    mag1c_inner_s=json.loads(infom)["wall_inner"],
                    ratio_ours_over_mag1c=w1 / wm,
                    max_abs_diff_ppm_m=float(np.abs(d).max()),
                    rms_diff_ppm_m=float(np.sqrt((d**2).mean())),
                    template_max_rel_diff=float(np.max(np.abs(-k * 1e5 - tmpl) / np.abs(tmpl).max())),
                )
            rows.append(row)
            print(json.dumps(row))
        print(
            "\nlines  COG GB  ours s  RSS MB  robust s  RSS MB"
            + ("  mag1c s  RSS MB  ours/mag1c  max|d|  rms d" if mag else "")
        )
        for r in rows:
            s = f"{r['lines']:5d}  {r['cog_gb']:6.3f}  {r['ours_s']:6.1f}  {r['ours_rss_mb']:6.0f}  {r['robust_s']:8.1f}  {r['robust_rss_mb']:6.0f}"
            if mag:
                s += (f"  {r['mag1c_s']:7.1f}  {r['mag1c_rss_mb']:6.0f}  {r['ratio_ours_over_mag1c']:10.2f}"
                      f"  {r['max_abs_diff_ppm_m']:6.2f}  {r['rms_diff_ppm_m']:5.3f}")  # fmt: skip
            print(s)
        rss = [r["ours_rss_mb"] for r in rows]
        print(f"our peak RSS {min(rss):.0f}-{max(rss):.0f} MB over {a.lines[0]}-{a.lines[-1]} lines "
              f"({'flat' if max(rss) < 1.25 * min(rss) + 50 else 'GROWS'}); filter noise ~{rows[-1]['noise']:.0f} ppm m")  # fmt: skip
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
