"""Each user mistake through the real ``hsi`` entry point (a subprocess): one line naming the thing and
what to do, the documented exit code, no traceback, close matches where they exist.

The catalog is built with the hsi library (no Prefect): these answers come before any orchestration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hsi.activation import index_scene
from hsi.config import load_config
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi_pipeline.cli.common import EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE

HSI = str(Path(sys.executable).parent / "hsi")
ITEM = "aviris-ng-ang20240101t000000"  # synthesize(seed=0)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ./hsi.yaml and one indexed (not activated) tiny scene."""
    tmp = tmp_path_factory.mktemp("mistakes")
    (tmp / "hsi.yaml").write_text(yaml.safe_dump({"storage": {"root": "data/assets"},
                                                  "catalog": {"url": "data/catalog"}, "work_dir": "data/work"}))  # fmt: skip
    hdr = synthesize(tmp / "raw", width=16, height=16, seed=0)
    svc = Services.from_config(load_config(tmp / "hsi.yaml"))
    assert index_scene(svc, str(hdr)).id == ITEM
    return tmp


def hsi(cwd: Path, *args: str, api: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HSI_"))}
    if api:
        env["PREFECT_API_URL"] = api
    env["HSI_CONFIG"] = str(cwd / "hsi.yaml") if (cwd / "hsi.yaml").exists() else ""
    return subprocess.run([HSI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def one_line(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_product_name_typos_suggest_case_insensitively(work: Path) -> None:
    one_line(hsi(work, "products", "show", "ndvi"), EXIT_NOT_FOUND, "'ndvi'", "did you mean: index:NDVI")
    one_line(hsi(work, "products", "show", "oil-spil"), EXIT_NOT_FOUND, "did you mean: oil-spill")
    one_line(hsi(work, "product", "Tree_Mortality", ITEM), EXIT_NOT_FOUND, "did you mean: tree-mortality")
    line = one_line(hsi(work, "run", "index:NDVX", "--bbox=-180,-90,180,90"), EXIT_NOT_FOUND, "index:NDVI")
    assert "'index:NDVX'" in line


def test_unknown_item_suggests_close_ids_and_hsi_index(work: Path) -> None:
    typo = ITEM[:-1]
    line = one_line(hsi(work, "activate", typo), EXIT_NOT_FOUND, f"'{typo}'", f"did you mean: {ITEM}")
    assert "run `hsi index PATH` first" in line
    one_line(
        hsi(work, "activate", "no-such-id"), EXIT_NOT_FOUND, "'no-such-id'", "run `hsi index PATH` first"
    )
    one_line(hsi(work, "info", typo), EXIT_NOT_FOUND, f"did you mean: {ITEM}")


def test_product_on_a_scene_not_activated_says_activate_first(work: Path) -> None:
    one_line(hsi(work, "product", "index:NDVI", ITEM), EXIT_NOT_FOUND, f"run `hsi activate {ITEM}` first")


def test_bad_product_parameter_names_it(work: Path) -> None:
    one_line(hsi(work, "product", "oil-spill", ITEM, "--param", "no_such=1"), EXIT_USAGE, "no_such",
             "hsi products show oil-spill")  # fmt: skip
    one_line(hsi(work, "product", "oil-spill", ITEM, "--param", "oops"), EXIT_USAGE, "key=value", "'oops'")
    # the pipeline's options (radiance=, mask=, geometry=) are accepted next to the product's own ...
    one_line(hsi(work, "product", "index:NDVI", ITEM, "--param", "geometry=sensor", "--param", "mask=false"),
             EXIT_NOT_FOUND, f"run `hsi activate {ITEM}` first")  # fmt: skip
    # ... and checked
    one_line(hsi(work, "product", "index:NDVI", ITEM, "--param", "geometry=raw"), EXIT_USAGE,
             "geometry must be 'ortho' or 'sensor', got 'raw'")  # fmt: skip


def test_missing_files_are_named(work: Path) -> None:
    one_line(hsi(work, "index", "missing.hdr"), EXIT_NOT_FOUND, "missing.hdr: no such file or directory")
    (work / "empty").mkdir(exist_ok=True)
    one_line(hsi(work, "index", "empty"), EXIT_NOT_FOUND, "empty: no scenes found")
    one_line(hsi(work, "activate", ITEM, "-c", "nope.yaml"), EXIT_NOT_FOUND, "nope.yaml does not exist")
    one_line(hsi(work, "config", "validate", "--config", "nope.yaml"), EXIT_NOT_FOUND, "nope.yaml")
    one_line(
        hsi(work, "index", "raw", "--source", "aviris"), EXIT_USAGE, "unknown source 'aviris'", "aviris-ng"
    )


def test_config_validate_takes_config_option(work: Path) -> None:
    ok = hsi(work, "config", "validate", "--config", "hsi.yaml")
    assert ok.returncode == 0 and "hsi.yaml: OK" in ok.stdout, ok.stderr
    (work / "bad.yaml").write_text("catalog:\n  url: htp:/x\n")
    bad = hsi(work, "config", "validate", "-c", "bad.yaml")
    assert bad.returncode == EXIT_USAGE and "catalog.url" in bad.stderr and "Traceback" not in bad.stderr


def test_unreachable_catalog_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "hsi.yaml").write_text(yaml.safe_dump({"catalog": {"url": "http://127.0.0.1:9/", "retries": 0,
                                                                   "timeout_s": 2}}))  # fmt: skip
    one_line(hsi(tmp_path, "activate", ITEM), EXIT_UNAVAILABLE, "http://127.0.0.1:9")
    dbg = hsi(tmp_path, "--debug", "activate", ITEM)
    assert dbg.returncode == EXIT_UNAVAILABLE and "Traceback" in dbg.stderr
    assert dbg.stderr.count("connection error") == 2  # the traceback's last line + the one line


@pytest.mark.usefixtures("prefect_harness")
def test_index_summary_says_why_each_scene_failed(work: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    (work / "bad").mkdir(exist_ok=True)
    (work / "bad" / "broken_img.hdr").write_text("ENVI\nsamples = 10\nlines = x\n")
    p = hsi(work, "index", "bad/broken_img.hdr", "raw", api=str(PREFECT_API_URL.value()))  # one bad, one good
    assert p.stdout.startswith(f"indexed\taviris-ng-raw/{ITEM}")
    line = one_line(p, 3, "1 of 2 scenes could not be indexed", "bad/broken_img.hdr: field 'bands'")
    assert line.count("broken_img.hdr") == 1


def test_source_names_include_emit(work: Path) -> None:
    # emit is a known source for index/synth/demo; typos are refused before Prefect with the close name
    one_line(hsi(work, "index", "missing.nc", "--source", "emit"), EXIT_NOT_FOUND, "missing.nc: no such file")
    one_line(
        hsi(work, "synth", "x", "--source", "emitt"), EXIT_USAGE, "--source", "'emitt'", "did you mean: emit"
    )
    one_line(hsi(work, "demo", "--source", "emitt"), EXIT_USAGE, "--source", "did you mean: emit")
    one_line(hsi(work, "synth", "x", "--source", "emit", "--level", "l3"), EXIT_USAGE, "l1b or l2a", "'l3'")
    ok = hsi(
        work, "synth", "emit-raw", "--source", "emit", "--level", "l2a", "--width", "12", "--height", "16"
    )
    assert ok.returncode == 0, ok.stderr
    nc = Path(ok.stdout.strip())
    assert nc.name.startswith("EMIT_L2A_RFL_") and nc.suffix == ".nc"
    assert (work / nc).is_file() or nc.is_file()
