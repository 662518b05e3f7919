"""Product flows under a real Prefect API: publish, skip, replace, provenance, precise band errors.

One synthetic AVIRIS-NG L2 scene (rotated grid: nodata corners after activation, ground truth
written) and one VNIR-only ENVI cube cut from it are indexed and activated once per module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from prefect.testing.fixtures import asserting_and_emitting_events_worker  # noqa: F401  (Prefect's fixture)
from rio_cogeo.cogeo import cog_validate

from hsi.config import load_config
from hsi.products import compute_array, get_product
from hsi.scene import bands_from_dataset
from hsi.services import Services
from hsi.sources.envi import format_header, parse_header_text
from hsi.sources.synthetic import CLASSES, TRUTH_FILL, synthesize
from hsi.stac.validation import validate_item
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.index import index_scenes
from hsi_pipeline.flows.product import ProductRunsFailed, run_product, run_products

pytestmark = pytest.mark.usefixtures("prefect_harness")

SCENE = "aviris-ng-ang20240101t000300"


def _config(root: Path) -> str:
    path = root / "hsi.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "storage": {"root": str(root / "assets")},
                "catalog": {"url": str(root / "catalog")},
                "work_dir": str(root / "work"),
            }
        )
    )
    return str(path)


def _vnir_cube(hdr: Path, out_dir: Path) -> Path:
    """A generic ENVI cube holding only the 400-1000 nm bands of a synthetic AVIRIS-NG scene."""
    fields = parse_header_text(hdr.read_text())
    wl = np.array([float(v) for v in fields["wavelength"].strip("{}").split(",")])
    sel = np.flatnonzero((wl >= 400) & (wl <= 1000))
    lines, samples, bands = (int(fields[k]) for k in ("lines", "samples", "bands"))
    cube = np.fromfile(hdr.with_suffix(""), dtype="<f4").reshape(lines, bands, samples)  # BIL
    out_dir.mkdir(parents=True)
    np.ascontiguousarray(cube[:, sel, :]).tofile(out_dir / "vnir_demo.img")

    def subset(key: str) -> str:
        vals = fields[key].strip("{}").split(",")
        return "{" + ", ".join(vals[i].strip() for i in sel) + "}"

    fields.update(
        {
            "bands": str(sel.size),
            "wavelength": subset("wavelength"),
            "fwhm": subset("fwhm"),
            "bbl": subset("bbl"),
            "description": "{VNIR-only surface reflectance cut (test)}",
            "acquisition time": "2024-01-01T00:03:00",
        }
    )
    out = out_dir / "vnir_demo.hdr"
    out.write_text(format_header(fields))
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("products")
    cfg = _config(root)
    hdr = synthesize(
        root / "raw", source="aviris-ng", level="l2", width=72, height=96, rotation_deg=25, seed=3, truth=True
    )
    vnir = _vnir_cube(hdr, root / "vnir")
    assert [r["status"] for r in index_scenes(hrefs=[str(hdr)], config=cfg)] == ["indexed"]
    vnir_id = index_scenes(hrefs=[str(vnir)], source="envi", config=cfg)[0]["item_id"]
    assert activate_scene(item_id=SCENE, config=cfg)["status"] == "activated"
    assert activate_scene(item_id=vnir_id, config=cfg)["status"] == "activated"
    svc = Services.from_config(load_config(cfg))
    truth = np.load(next((root / "raw").glob("*_truth.npy")))
    return {
        "root": root,
        "config": cfg,
        "svc": svc,
        "truth": truth,
        "vnir_id": vnir_id,
        "activated": svc.catalog.get_item("aviris-ng-l2", SCENE),
    }


def _stored(env: dict[str, Any], res: dict[str, Any]):
    item = env["svc"].catalog.get_item(res["collection"], res["item_id"])
    assert item is not None
    validate_item(item)  # what the catalog holds, read back
    return item


def _items(env: dict[str, Any], collection: str) -> list:
    return list(env["svc"].catalog.search(collections=[collection]))


def test_ndvi_published_with_provenance_valid_cog_and_independent_values(env) -> None:
    res = run_product(item_id=SCENE, product="index:NDVI", config=env["config"])
    assert res["status"] == "published"
    assert (res["collection"], res["item_id"]) == ("hsi-index-ndvi", f"{SCENE}-index-ndvi")
    item = _stored(env, res)
    act = env["activated"]
    p = item.properties
    assert p["hsi:product_key"] == res["product_key"] and p["hsi:product"] == "index:NDVI"
    assert p["processing:level"] == "L3" and "index:NDVI" in p["processing:lineage"]
    assert p["hsi:inputs"][0]["checksums"]["cube"] == act.assets["cube"].extra_fields["file:checksum"]
    assert [lk.href for lk in item.links if lk.rel == "derived_from"] == [
        env["svc"].catalog.item_href("aviris-ng-l2", SCENE)
    ]
    assert p["hsi:flow_run"]["id"] and p["hsi:flow_run"]["name"] == f"product-index:NDVI-{SCENE}"
    assert item.geometry == act.geometry and item.datetime == act.datetime

    # bands used: the actual centres of the cube bands, next to the requested ones
    cube_bands = act.assets["cube"].extra_fields["bands"]
    used = {b["input"]: b for b in p["hsi:bands_used"]}
    assert set(used) == {"N", "R"}
    for b in used.values():
        assert b["wavelength_nm"] == pytest.approx(
            cube_bands[b["index"] - 1]["eo:center_wavelength"] * 1000, abs=1e-3
        )
        assert abs(b["wavelength_nm"] - b["requested_nm"]) < 30

    data = item.assets["data"]
    assert Path(data.href).stat().st_size == data.extra_fields["file:size"]
    assert data.extra_fields["bands"][0]["name"] == "NDVI"
    assert "thumbnail" in item.assets and Path(item.assets["thumbnail"].href).read_bytes()[:4] == b"\x89PNG"
    valid, errors, _ = cog_validate(data.href, quiet=True)
    assert valid, errors

    idx = sorted(b["index"] for b in used.values())
    with rasterio.open(act.assets["cube"].href) as src, rasterio.open(data.href) as out:
        assert out.overviews(1), "product COG carries overviews"
        assert (out.width, out.height, out.transform) == (src.width, src.height, src.transform)
        ndvi = out.read(1)
        raw = src.read(idx)
        full = np.zeros((src.count, src.height, src.width), dtype=raw.dtype)
        full[[i - 1 for i in idx]] = raw
        expected = compute_array(get_product("index:NDVI"), full, bands_from_dataset(src), nodata=src.nodata)[
            0
        ]
        cube_nodata = (raw == src.nodata).any(axis=0)
    assert cube_nodata.any() and cube_nodata[0, 0] and cube_nodata[-1, -1]  # rotated corners
    assert np.array_equal(ndvi == out.nodata, cube_nodata)
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(~cube_nodata)
    pick = rng.choice(ys.size, 200, replace=False)
    np.testing.assert_allclose(ndvi[ys[pick], xs[pick]], expected[ys[pick], xs[pick]], rtol=1e-6)
    assert ndvi[~cube_nodata].min() >= -1 and ndvi[~cube_nodata].max() <= 1


def test_rerun_skips_param_change_replaces_one_item_force_recomputes(env) -> None:
    cfg = env["config"]
    first = run_product(item_id=SCENE, product="tree-mortality", config=cfg)
    assert first["status"] == "published"
    before = _stored(env, first).to_dict()

    again = run_product(item_id=SCENE, product="tree-mortality", config=cfg)
    assert again["status"] == "skipped" and "up to date" in again["reason"]
    assert again["product_key"] == first["product_key"] and again["asset"] == first["asset"]
    assert _stored(env, again).to_dict() == before  # untouched

    changed = run_product(item_id=SCENE, product="tree-mortality", params={"ndwi_healthy": 0.09}, config=cfg)
    assert changed["status"] == "published" and changed["product_key"] != first["product_key"]
    item = _stored(env, changed)
    assert item.properties["hsi:parameters"]["ndwi_healthy"] == 0.09
    assert item.properties["hsi:product_key"] == changed["product_key"]
    assert [i.id for i in _items(env, "hsi-tree-mortality")] == [f"{SCENE}-tree-mortality"]
    files = sorted(p.name for p in (env["root"] / "assets" / "hsi-tree-mortality").rglob("*") if p.is_file())
    assert files == [f"{SCENE}-tree-mortality.tif", f"{SCENE}-tree-mortality_preview.png"]

    forced = run_product(
        item_id=SCENE, product="tree-mortality", params={"ndwi_healthy": 0.09}, force=True, config=cfg
    )
    assert forced["status"] == "published" and forced["product_key"] == changed["product_key"]
    assert _stored(env, forced).properties["processing:datetime"] > item.properties["processing:datetime"]


def test_tree_mortality_fractions_match_the_truth_map(env) -> None:
    res = run_product(
        item_id=SCENE, product="tree-mortality", params={"ndwi_healthy": 0.02}, config=env["config"]
    )
    fr = _stored(env, res).properties["hsi:class_fractions"]
    assert sum(fr.values()) == pytest.approx(1.0)
    truth = env["truth"][env["truth"] != TRUTH_FILL]
    share = {c: float((truth == k).mean()) for k, c in enumerate(CLASSES)}
    expected = {
        "healthy": share["healthy_vegetation"],
        "stressed": share["stressed_vegetation"],
        "dead": share["dead_vegetation"],
        "non-vegetation": share["soil"] + share["water"] + share["oil_on_water"],
    }
    for name, want in expected.items():
        assert fr[name] == pytest.approx(want, abs=0.05), (name, fr, expected)


def test_oil_spill_detects_the_slicks(env) -> None:
    res = run_product(item_id=SCENE, product="oil-spill", config=env["config"])
    fr = _stored(env, res).properties["hsi:class_fractions"]
    truth = env["truth"][env["truth"] != TRUTH_FILL]
    assert fr["oil"] == pytest.approx(float((truth == CLASSES.index("oil_on_water")).mean()), abs=0.04)


def _events(worker: Any) -> list[Any]:
    worker.drain()
    return [e for e in worker._client.events if e.event.startswith("hsi.product.")]


def test_events_published_and_skipped(env, asserting_and_emitting_events_worker) -> None:  # noqa: F811
    pub = run_product(item_id=SCENE, product="index:NDVI", force=True, config=env["config"])
    skip = run_product(item_id=SCENE, product="index:NDVI", config=env["config"])
    assert skip["status"] == "skipped"
    published, skipped = _events(asserting_and_emitting_events_worker)
    assert published.event == "hsi.product.published" and skipped.event == "hsi.product.skipped"
    assert published.resource.id == f"stac.item.hsi-index-ndvi.{SCENE}-index-ndvi"
    assert (
        published.resource["hsi.product"] == "index:NDVI" and published.resource["hsi.source"] == "aviris-ng"
    )
    assert published.payload["product_key"] == pub["product_key"]
    assert published.payload["item_href"] == pub["item_href"] and published.payload["uri"] == pub["asset"]
    assert published.payload["catalog_href"] == env["svc"].catalog.href
    assert [r.id for r in published.related if r.id.startswith("stac.")] == [
        f"stac.item.aviris-ng-l2.{SCENE}"
    ]
    assert any(r.id.startswith("prefect.flow-run.") for r in published.related)  # Prefect links the run
    assert "up to date" in skipped.payload["reason"]


def test_swir_product_on_vnir_scene_fails_precisely_and_publishes_nothing(
    env,
    asserting_and_emitting_events_worker,  # noqa: F811
) -> None:
    vnir_id, svc = env["vnir_id"], env["svc"]
    pid = f"{vnir_id}-oil-spill"
    with pytest.raises(
        Exception, match=rf"product 'oil-spill' needs input 'A' at 1705 nm.*scene '{vnir_id}'"
    ):
        run_product(item_id=vnir_id, product="oil-spill", config=env["config"])
    assert svc.catalog.get_item("hsi-oil-spill", pid) is None
    assert not list(svc.store.list(svc.store.uri("hsi-oil-spill", pid) + "/"))
    assert not (env["root"] / "work" / "products" / pid).exists()
    (failed,) = _events(asserting_and_emitting_events_worker)
    assert failed.event == "hsi.product.failed" and failed.resource.id == f"stac.item.hsi-oil-spill.{pid}"
    assert failed.payload["reason"].startswith("BandSelectionError: product 'oil-spill' needs input")

    state = run_products(
        item_id=vnir_id,
        products=[{"product": "oil-spill"}, {"product": "index:NDVI"}],
        config=env["config"],
        return_state=True,
    )
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, ProductRunsFailed)
    rows = {r["product"]: r for r in exc.rows}
    assert rows["oil-spill"]["status"] == "failed"
    assert "BandSelectionError" in rows["oil-spill"]["reason"] and "1705 nm" in rows["oil-spill"]["reason"]
    assert rows["index:NDVI"]["status"] == "published"
    assert svc.catalog.get_item("hsi-index-ndvi", f"{vnir_id}-index-ndvi") is not None
    assert svc.catalog.get_item("hsi-oil-spill", pid) is None
    assert json.dumps(exc.rows)  # rows are plain JSON


def _write_refs(path: Path, water_level: float) -> None:
    wl = np.arange(400.0, 2501.0, 10.0)
    veg = 0.05 + 0.4 / (1 + np.exp(-(wl - 715) / 12)) - 0.2 * (wl > 1400)
    water = np.full(wl.size, water_level)
    rows = ["wavelength_nm,vegetation,water"] + [
        f"{w:.1f},{v:.6f},{x:.6f}" for w, v, x in zip(wl, veg, water, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")


def test_sam_reference_file_changed_at_the_same_path_is_recomputed(env) -> None:
    cfg, refs = env["config"], env["root"] / "refs.csv"
    _write_refs(refs, 0.02)
    first = run_product(item_id=SCENE, product="sam", params={"references": str(refs)}, config=cfg)
    assert first["status"] == "published"
    again = run_product(item_id=SCENE, product="sam", params={"references": str(refs)}, config=cfg)
    assert again["status"] == "skipped" and again["product_key"] == first["product_key"]
    _write_refs(refs, 0.05)  # same path, other spectra: the stored angles would be stale
    changed = run_product(item_id=SCENE, product="sam", params={"references": str(refs)}, config=cfg)
    assert changed["status"] == "published" and changed["product_key"] != first["product_key"]
    inputs = _stored(env, changed).properties["hsi:inputs"]
    (f,) = [i for i in inputs if i["collection"] == "file"]
    from hsi.storage.base import file_checksum

    assert f["id"] == f"references:{refs}" and f["checksums"] == {"file": file_checksum(refs)}


def test_pca_item_keeps_its_fitted_model(env) -> None:
    res = run_product(item_id=SCENE, product="pca", params={"n_components": 2}, config=env["config"])
    item = _stored(env, res)
    fit = item.properties["hsi:fit"]
    assert fit["method"] == "pca" and len(fit["eigenvalues"]) == 2 and fit["nsamples"] > 1000
    assert 0 < fit["explained_variance_ratio"][1] <= fit["explained_variance_ratio"][0] < 1
    asset = item.assets["fit"]
    assert asset.media_type == "application/json" and asset.roles == ["metadata"]
    body = Path(asset.href).read_bytes()
    assert len(body) == asset.extra_fields["file:size"]
    d = json.loads(body)
    k = fit["n_bands"]
    assert len(d["mean"]) == k and np.array(d["loadings"]).shape == (k, 2) and len(d["bands"]) == k


def test_ch4_mf_refuses_a_reflectance_item_and_publishes_nothing(env) -> None:
    svc = env["svc"]
    with pytest.raises(
        Exception,
        match=rf"product 'ch4-mf' needs radiance, but item aviris-ng-l2/{SCENE} holds 'reflectance'",
    ):
        run_product(item_id=SCENE, product="ch4-mf", config=env["config"])
    assert svc.catalog.get_item("hsi-ch4-mf", f"{SCENE}-ch4-mf") is None
