"""Whole-process latency of the ``hsi`` command line: mistakes and a second (up-to-date) ``hsi activate``.

Median and p95 over ``--runs`` runs each (default 10), on the machine as it is ("quiet") and with a
CPU hog on every core, side by side with ``rio cogeo validate`` on a small COG as the anchor (ratio
column). Targets: a mistake is answered in <= 1 s; the up-to-date activate in <= 2 s after the first
pipeline command of the day (which starts the shared local Prefect server; it is measured once).

    .venv/bin/python benchmarks/cli_latency.py                # 10 runs each, quiet and hog
    .venv/bin/python benchmarks/cli_latency.py --runs 20 --no-hog

The server state dir is private to the run (``HSI_SERVER_DIR`` in a temporary directory) and the
server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HSI, RIO = str(BIN / "hsi"), str(BIN / "rio")


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0, p.returncode, (p.stdout + p.stderr).strip().splitlines()[-1:]


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def hog_on() -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]


def hog_off(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--no-hog", action="store_true", help="skip the CPU-hog round")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="hsi-cli-latency-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "HSI_CONFIG"}
        env["HSI_SERVER_DIR"] = str(root / "server")
        cfg = root / "hsi.yaml"
        cfg.write_text(
            f"storage: {{root: {root / 'assets'}}}\ncatalog: {{url: {root / 'catalog'}}}\nwork_dir: {root / 'work'}\n"
        )
        out = subprocess.run(
            [HSI, "synth", str(root / "raw"), "--width", "16", "--height", "32"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        hdr = out.strip().splitlines()[-1]
        item = "aviris-ng-" + Path(hdr).name.split("_")[0]
        first = {}
        for name, cmd in (("index", [HSI, "index", hdr, "-c", str(cfg)]),
                          ("activate", [HSI, "activate", item, "-c", str(cfg)])):  # fmt: skip
            t, rc, last = run(cmd, env, root)
            if rc != 0:
                sys.exit(f"setup failed: {cmd}: {last}")
            first[name] = t
        cog = next((root / "assets").rglob(f"{item}_rgb.tif"), None) or next((root / "assets").rglob("*.tif"))
        cases = [
            ("rio cogeo validate (anchor)", [RIO, "cogeo", "validate", str(cog)], None),
            ("hsi products show oil-spil", [HSI, "products", "show", "oil-spil"], 1.0),
            ("hsi activate no-such-id", [HSI, "activate", "no-such-id", "-c", str(cfg)], 1.0),
            ("hsi index missing.hdr", [HSI, "index", "missing.hdr", "-c", str(cfg)], 1.0),
            ("hsi activate <up-to-date>", [HSI, "activate", item, "-c", str(cfg)], 2.0),
        ]
        print(f"first commands of the day (cold): index {first['index']:.1f} s (starts the server), "
              f"activate {first['activate']:.1f} s; {args.runs} runs each; cpus {os.cpu_count()}")  # fmt: skip
        try:
            for label in ("quiet", "hog") if not args.no_hog else ("quiet",):
                hog = hog_on() if label == "hog" else []
                try:
                    rows = []
                    for name, cmd, target in cases:
                        times, codes, last = [], set(), [""]
                        for _ in range(args.runs):
                            t, rc, last = run(cmd, env, root)
                            times.append(t)
                            codes.add(rc)
                        rows.append((name, statistics.median(times), p95(times), codes, target, last))
                finally:
                    hog_off(hog)
                anchor = rows[0][1]
                print(f"\n[{label}]")
                print(
                    f"{'command':32} {'median s':>9} {'p95 s':>7} {'x anchor':>9} {'target':>7} {'exit':>5}  last line"
                )
                for name, med, q95, codes, target, last in rows:
                    tgt = f"<={target:g}" if target else "-"
                    flag = "" if target is None or q95 <= target else " MISSED"
                    print(f"{name:32} {med:9.2f} {q95:7.2f} {med / anchor:9.1f} {tgt:>7} "
                          f"{','.join(map(str, sorted(codes))):>5}  {(last or [''])[0][:70]}{flag}")  # fmt: skip
        finally:
            subprocess.run([HSI, "server", "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
