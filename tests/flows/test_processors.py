"""External processors (docs/PROCESSORS.md) under a real Prefect API.

The two example processors (shell + rio calc, and C with raw band-sequential I/O) must equal the
built-in ``index:NDVI`` bit for bit; a failing, a hanging and a contract-breaking tool fail cleanly
with nothing published and no scratch left; the product key follows the command and the image.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml

from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.product import product_collection, product_item_id
from hsi.stac.validation import validate_item
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.index import index_scenes
from hsi_pipeline.flows.product import run_product

pytestmark = pytest.mark.usefixtures("prefect_harness")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "processors"
NDVI_INPUTS = [
    {"name": "R", "wavelength": 655, "tolerance": 35},
    {"name": "N", "wavelength": 830, "tolerance": 70},
]


def _processors(tmp: Path, ndvi_c: Path) -> dict[str, Any]:
    common = {"inputs": NDVI_INPUTS, "outputs": [{"name": "ndvi"}]}
    return {
        "ndvi-rio": {**common, "command": ["sh", str(EXAMPLES / "ndvi_rio.sh"), "{input}", "{output_dir}"]},
        "ndvi-c": {
            **common,
            "io": "envi",
            "command": [str(ndvi_c), "{input}", "{output_dir}/output.img", "{width}", "{height}"],
        },
        "fails": {**common, "command": ["sh", "-c", "echo 'cannot read band 7' >&2; exit 3"]},
        "hangs": {**common, "command": ["sleep", "600"], "timeout_s": 2},
        "wrong-grid": {
            **common,
            "command": [
                "rio",
                "calc",
                "--dtype",
                "float32",
                "(read 1 1)",
                "--name",
                "x={input}",
                "{input}",
                "{output_dir}/output.tif",
            ],  # fmt: skip
            "dtype": "int16",  # declared int16, writes float32: a contract violation
        },
        "missing-tool": {**common, "command": ["no-such-hsi-tool", "{input}"]},
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("processors")
    ndvi_c = root / "ndvi"
    subprocess.run(["cc", "-O2", "-o", str(ndvi_c), str(EXAMPLES / "c" / "ndvi.c")], check=True)
    cfg_path = root / "hsi.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "storage": {"root": str(root / "assets")},
                "catalog": {"url": str(root / "catalog")},
                "work_dir": str(root / "work"),
                "processors": _processors(root, ndvi_c),
            }
        )
    )
    scene = synthesize(
        root / "raw", source="aviris-ng", level="l2", width=40, height=56, seed=3, rotation_deg=20
    )
    [raw] = index_scenes(hrefs=[str(scene)], config=str(cfg_path))
    act = activate_scene(item_id=raw["item_id"], config=str(cfg_path))
    assert act["status"] == "activated"
    return {
        "config": str(cfg_path),
        "item_id": raw["item_id"],
        "root": root,
        "svc": Services.from_config(cfg_path),
    }


def _pixels(svc: Services, product: str, item_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    item = svc.catalog.get_item(product_collection(product), product_item_id(item_id, product))
    assert item is not None, product
    validate_item(item)
    with rasterio.open(item.assets["data"].href) as ds:
        return ds.read(), {"nodata": ds.nodata, "dtype": ds.dtypes[0], "item": item}


@pytest.mark.parametrize("name", ["ndvi-rio", "ndvi-c"])
def test_example_processor_equals_builtin_ndvi_bit_for_bit(env: dict[str, Any], name: str) -> None:
    ref = run_product(item_id=env["item_id"], product="index:NDVI", config=env["config"])
    res = run_product(item_id=env["item_id"], product=name, config=env["config"])
    assert ref["status"] in ("published", "skipped") and res["status"] == "published"
    a, ameta = _pixels(env["svc"], "index:NDVI", env["item_id"])
    b, bmeta = _pixels(env["svc"], name, env["item_id"])
    assert a.dtype == b.dtype == np.float32 and ameta["nodata"] == bmeta["nodata"]
    valid = a != ameta["nodata"]
    assert valid.sum() > 100 and (~valid).sum() > 0  # rotated grid: real pixels and nodata corners
    assert a.tobytes() == b.tobytes()  # bit for bit, nodata included
    props = bmeta["item"].properties
    proc = props["hsi:processor"]
    assert proc["exit_code"] == 0 and proc["name"] == name and proc["input_bands"] == ["R", "N"]
    assert proc["command"][0] in ("sh",) or proc["command"][0].endswith("ndvi")
    assert [b["input"] for b in props["hsi:bands_used"]] == ["R", "N"]
    ref_bands = {b["input"]: b["index"] for b in ameta["item"].properties["hsi:bands_used"]}
    assert {b["input"]: b["index"] for b in props["hsi:bands_used"]} == ref_bands
    if name == "ndvi-rio":
        assert proc["properties"]["tool"] == "rio calc"
    # a rerun is skipped (same key), and no processor scratch is left in the work dir
    again = run_product(item_id=env["item_id"], product=name, config=env["config"])
    assert again["status"] == "skipped"
    assert not list((env["root"] / "work").rglob(".processor-*"))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fails", "failed with exit code 3; stderr: cannot read band 7"),
        ("hangs", "timed out after 2 s and was killed"),
        ("wrong-grid", "does not match its contract: dtype float32, declared int16"),
        ("missing-tool", "command not found: 'no-such-hsi-tool'"),
    ],
)
def test_broken_processor_fails_cleanly_and_publishes_nothing(
    env: dict[str, Any], name: str, message: str
) -> None:
    with pytest.raises(Exception) as exc:
        run_product(item_id=env["item_id"], product=name, config=env["config"])
    assert message in str(exc.value)
    svc = env["svc"]
    assert svc.catalog.get_item(product_collection(name), product_item_id(env["item_id"], name)) is None
    assets = env["root"] / "assets"
    published = [p for p in assets.rglob(f"*{name}*") if "_failures" not in p.relative_to(assets).parts]
    assert published == []
    # the failure is recorded for `hsi plan` / replay (docs/OPERATIONS.md), with the processor's reason
    records = list((assets / "_failures").rglob(f"*{name}.json"))
    assert len(records) == 1 and message in records[0].read_text(), records
    assert not list((env["root"] / "work").rglob(".processor-*"))
    assert not [p for p in (env["root"] / "work").rglob("sleep*")]
    if name == "hangs":  # the whole process group is gone
        out = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True)
        assert out.stdout.strip() == ""
