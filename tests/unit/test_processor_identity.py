"""External processors without a flow: product key identity, name clashes, configuration, deployments."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hsi.config import load_config
from hsi.config.models import ProcessorConfig
from hsi.errors import ProductError
from hsi.processors import processor_product, register_processors
from hsi.products.registry import ProductRegistry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "processors"
NDVI_INPUTS = [
    {"name": "R", "wavelength": 655, "tolerance": 35},
    {"name": "N", "wavelength": 830, "tolerance": 70},
]


def test_product_key_follows_command_image_and_tool_version(tmp_path: Path) -> None:
    base = {"inputs": NDVI_INPUTS, "command": ["tool", "{input}"]}
    v = lambda **kw: processor_product("p", ProcessorConfig.model_validate({**base, **kw})).version  # noqa: E731
    assert v() == v()
    assert v(command=["tool", "--fast", "{input}"]) != v()
    pinned_a = v(image="ghcr.io/x/ndvi@sha256:" + "a" * 64)
    pinned_b = v(image="ghcr.io/x/ndvi@sha256:" + "b" * 64)
    assert pinned_a != pinned_b != v()
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho 'mytool 2.1'\n")
    tool.chmod(0o755)
    assert v(version_command=[str(tool)]) != v()
    proc = processor_product("p", ProcessorConfig.model_validate({**base, "version_command": [str(tool)]}))
    assert proc.extra["processor"]["tool_version"] == "mytool 2.1"


def test_processor_may_not_shadow_a_builtin(tmp_path: Path) -> None:
    reg = ProductRegistry()
    reg.load_entry_points()
    cfg = ProcessorConfig.model_validate({"inputs": NDVI_INPUTS, "command": ["tool"]})
    with pytest.raises(ProductError, match="oil-spill.*rename the processor"):
        register_processors({"oil-spill": cfg}, reg)
    path = tmp_path / "hsi.yaml"
    path.write_text(yaml.safe_dump({"processors": {"oil-spill": {"inputs": NDVI_INPUTS, "command": ["t"]}}}))
    with pytest.raises(Exception, match="processors.oil-spill.*give the processor another name"):
        load_config(path)


def test_config_rejects_a_processor_without_command_or_image(tmp_path: Path) -> None:
    path = tmp_path / "hsi.yaml"
    path.write_text(yaml.safe_dump({"processors": {"x": {"inputs": NDVI_INPUTS}}}))
    with pytest.raises(Exception, match="needs a command, an image, or both"):
        load_config(path)


def test_shipped_example_config_validates() -> None:
    cfg = load_config(EXAMPLES / "hsi.processors.yaml")
    assert set(cfg.processors) == {"ndvi-rio", "ndvi-c"}
    assert cfg.processors["ndvi-rio"].base_dir == str(EXAMPLES)
    assert shutil.which("sh")


def test_container_processor_gets_its_own_deployment_in_its_image(tmp_path: Path) -> None:
    from hsi_pipeline.deployments.generate import automation_names, generate

    image = "ghcr.io/x/ndvi@sha256:" + "c" * 64
    path = tmp_path / "hsi.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "processors": {
                    "ndvi-img": {"inputs": NDVI_INPUTS, "image": image, "command": ["ndvi", "{input}"]}
                },
                "sources": {"aviris-ng": {"products": [{"product": "index:NDVI"}, {"product": "ndvi-img"}]}},
            }
        )
    )
    spec = generate(load_config(path))
    by_name = {d["name"]: d for d in spec["deployments"]}
    plain, boxed = by_name["aviris-ng"], by_name["aviris-ng-ndvi-img"]
    assert [p["product"] for p in plain["parameters"]["products"]] == ["index:NDVI"]
    assert "image" not in plain["work_pool"]["job_variables"]
    assert [p["product"] for p in boxed["parameters"]["products"]] == ["ndvi-img"]
    assert boxed["work_pool"]["job_variables"]["image"] == image
    assert "hsi-products-aviris-ng-ndvi-img" in automation_names(spec)
