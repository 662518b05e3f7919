"""Interoperability: odc-stac loads the cube as one variable with a wavelength coordinate (issue 12, must-show 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import odc.stac
import pytest
import yaml

import hsi
from hsi.arrays import odc_stac_config
from hsi.demo import build_demo
from hsi.services import Services


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("interop")
    cfg = {
        "storage": {"root": str(root / "a")},
        "catalog": {"url": str(root / "c")},
        "work_dir": str(root / "w"),
    }
    (root / "hsi.yaml").write_text(yaml.safe_dump(cfg))
    svc = Services.from_config(root / "hsi.yaml")
    out = build_demo(svc, width=32, height=40, products=())
    item = next(it for it in svc.catalog.search(ids=[out["item_id"]]) if "cube" in it.assets)
    return {"svc": svc, "item": item}


def test_odc_stac_recipe_gives_one_variable_with_wavelengths(scene) -> None:
    item = scene["item"]
    ds = odc.stac.load([item], bands=["cube"], stac_cfg=odc_stac_config([item]), chunks={})
    assert list(ds.data_vars) == ["cube"]
    cube = ds.cube.isel(time=0).transpose("wavelength", "y", "x")
    bands = item.assets["cube"].extra_fields["bands"]
    np.testing.assert_allclose(
        cube.wavelength.values, [b["eo:center_wavelength"] * 1000 for b in bands], atol=1e-3
    )
    ours = hsi.open_item(item)
    assert cube.shape == ours.shape
    a = cube.sel(wavelength=[660, 860], method="nearest").values.astype("float64")
    a[a == bands[0]["nodata"]] = np.nan
    np.testing.assert_array_equal(a, ours.sel(wavelength=[660, 860], method="nearest").values)


def test_without_the_recipe_odc_stac_splits_the_cube_into_band_variables(scene) -> None:
    ds = odc.stac.load([scene["item"]], chunks={})
    assert "cube.1" in ds.data_vars and "wavelength" not in ds.dims  # what the recipe fixes
