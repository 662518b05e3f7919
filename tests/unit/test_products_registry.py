"""Entry-point extensibility: a toy product registered from OUTSIDE the package shows up everywhere."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from hsi.errors import ProductError
from hsi.products import list_products, reset_default_registry
from hsi.products.registry import ProductRegistry, get_product
from hsi_pipeline.cli.products import app

PLUGIN = textwrap.dedent('''
    """A third-party product package, known to hsi only through its entry point."""
    from hsi.products import BandRequest, OutputBand, OutputSpec, Params, Product


    class ToyParams(Params):
        gain: float = 2.0


    def _compute(bands, params, ctx):
        return (params.gain * bands["NIR"] / bands["RED"])[None]


    def register(registry):
        registry.register(Product(
            name="toy-ratio", version="0.1.0", title="Toy NIR/red ratio",
            inputs=(BandRequest("NIR", 850.0, 20.0), BandRequest("RED", 660.0, 20.0)),
            output=OutputSpec(bands=(OutputBand("ratio", "gain * NIR / RED"),)),
            compute=_compute, params_model=ToyParams))
''')


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    (tmp_path / "toy_hsi_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "toy_hsi_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-hsi-plugin\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[hsi.products]\ntoy = toy_hsi_plugin:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_default_registry()
    yield
    reset_default_registry()
    sys.modules.pop("toy_hsi_plugin", None)


def test_toy_product_via_entry_point(toy_plugin) -> None:
    assert "toy-ratio" in list_products()
    assert "oil-spill" in list_products() and "index:NDVI" in list_products()  # built-ins still there
    p = get_product("toy-ratio")
    from hsi.products import compute_array
    from hsi.products.testing import band_table

    cube = np.array([[[0.1]], [[0.5]]], dtype=np.float32)  # 660, 850 nm
    out = compute_array(p, cube, band_table([660.0, 850.0], 10.0), {"gain": 3.0})
    assert out[0, 0, 0] == pytest.approx(15.0)

    runner = CliRunner()
    res = runner.invoke(app, ["list", "--no-indices"])
    assert res.exit_code == 0, res.output
    assert "toy-ratio\t0.1.0\tToy NIR/red ratio" in res.output
    assert "index:SAVI" not in res.output
    res = runner.invoke(app, ["show", "toy-ratio"])
    assert res.exit_code == 0
    assert "gain: float = 2.0" in res.output and "NIR: 850 nm" in res.output and "ratio" in res.output


def test_toy_product_absent_without_plugin() -> None:
    reset_default_registry()
    assert "toy-ratio" not in list_products()
    with pytest.raises(ProductError, match="unknown product 'toy-ratio'"):
        get_product("toy-ratio")


def test_cli_show_and_errors() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["show", "index:SAVI"])
    assert res.exit_code == 0 and "L: float = 0.5" in res.output and "(1.0+L)*(N-R)/(N+R+L)" in res.output
    assert "Huete (1988) recommends 0.5" in res.output
    res = runner.invoke(app, ["show", "tree-mortality"])
    assert "classes: 0=non-vegetation, 1=healthy, 2=stressed, 3=dead" in res.output
    res = runner.invoke(app, ["show", "oil-spil"])
    assert res.exit_code == 4 and "did you mean: oil-spill" in res.output  # 4: not found
    res = runner.invoke(app, ["list", "--family", "index:"])
    assert res.exit_code == 0 and res.output.count("\n") > 200


def test_duplicate_registration_and_broken_plugin() -> None:
    reg = ProductRegistry()
    reg.load_entry_points()
    with pytest.raises(ProductError, match="already registered"):
        reg.register(get_product("oil-spill"))

    def broken(registry):
        raise RuntimeError("boom")

    with pytest.raises(ProductError, match="entry point 'bad' failed to register: boom"):
        reg._call("bad", broken)


def test_cli_module_does_not_import_prefect() -> None:
    import subprocess

    code = "import sys, hsi_pipeline.cli.products, hsi.products; assert 'prefect' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
