"""Batch publishing (hsi.batch) on the static catalog: real COGs, real files, no Prefect."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import pytest
import rasterio

from hsi import production
from hsi.activation import index_scene
from hsi.batch import publish_batch
from hsi.demo import activate
from hsi.product_compute import Computed, compute, compute_many
from hsi.production import find_activated_item, plan_product
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.provenance import RunInfo
from hsi.storage.base import file_checksum

RUN = RunInfo(
    flow_run_id="00000000-0000-0000-0000-0000000000b1", flow_run_name="batch-test", flow_name="products-batch"
)


def _scenes(svc: Services, tmp_path: Path, n: int) -> list[pystac.Item]:
    out = []
    for k in range(n):
        hdr = synthesize(
            tmp_path / "raw" / str(k), width=12, height=16, seed=k, scene_id=f"ang2021060{k + 1}t120000"
        )
        raw = index_scene(svc, str(hdr))
        assert activate(svc, raw.id) == "activated"
        out.append(find_activated_item(svc, raw.id))
    return out


def test_batch_publishes_every_pair_once_with_provenance_and_isolates_a_bad_one(
    config_file: Path, tmp_path: Path
) -> None:
    svc = Services.from_config(config_file)
    scenes = _scenes(svc, tmp_path, 2)
    products = [("index:NDVI", None), ("index:PRI", None), ("index:NDVI", {"no_such_param": 1})]

    res = publish_batch(svc, scenes, products, RUN, tmp_path / "work")

    assert [(o.scene, o.product, o.status) for o in res.outcomes] == [
        (s.id, p, st)
        for s in scenes
        for p, st in (("index:NDVI", "published"), ("index:PRI", "published"), ("index:NDVI", "failed"))
    ]
    bad = [o for o in res.outcomes if o.status == "failed"]
    assert all(o.reason.startswith("plan: ") and "no_such_param" in o.reason for o in bad)
    assert set(res.seconds) >= {"plan", "check", "compute", "upload", "build", "register"}
    for o in res.outcomes:
        if o.status != "published":
            continue
        item = svc.catalog.get_item(o.collection, o.item_id)
        assert item is not None and item.properties["hsi:product_key"] == o.product_key
        prov = item.properties
        assert prov["hsi:flow_run"]["id"] == RUN.flow_run_id
        assert prov["hsi:inputs"][0]["id"] == o.scene
        assert prov["hsi:algorithm"]["name"] == o.product and prov["hsi:algorithm"]["version"]
        assert prov["hsi:parameters"] is not None
        with rasterio.open(item.assets["data"].get_absolute_href() or "") as ds:  # the asset is there
            assert ds.count == 1 and (ds.width, ds.height) == (12, 16)
    # the collections list their items once (one grouped write per collection)
    for cid in ("hsi-index-ndvi", "hsi-index-pri"):
        col = svc.catalog._read_json(svc.catalog._collection_uri(cid))  # type: ignore[attr-defined]
        links = sorted(lk["href"] for lk in col["links"] if lk["rel"] == "item")
        assert links == sorted({f"./{s.id}-{cid[4:]}/{s.id}-{cid[4:]}.json" for s in scenes})

    again = publish_batch(svc, scenes, products[:2], RUN, tmp_path / "work2")
    assert [o.status for o in again.outcomes] == ["skipped"] * 4


def test_cached_schema_validation_still_refuses_an_invalid_item_and_names_the_schema() -> None:
    import pytest
    from pystac.errors import STACValidationError

    from hsi.stac.validation import validate_item

    def item(epsg: object) -> pystac.Item:
        it = pystac.Item("v", {"type": "Point", "coordinates": [1.0, 2.0]}, [1.0, 2.0, 1.0, 2.0],
                         datetime(2021, 6, 1, tzinfo=UTC), {"proj:code": epsg})  # fmt: skip
        it.stac_extensions.append("https://stac-extensions.github.io/projection/v2.0.0/schema.json")
        it.add_link(pystac.Link("collection", "../collection.json", media_type="application/json"))
        it.collection_id = "c"
        return it

    validate_item(item("EPSG:4326"))
    for _ in range(2):  # the compiled validator is reused: the second time must fail the same way
        with pytest.raises(STACValidationError, match="projection/v2.0.0/schema.json"):
            validate_item(item(4326))  # proj:code must be a string
    validate_item(item("EPSG:32611"))


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``rasterio.open`` is called with from now on (until ``monkeypatch.undo``)."""
    opened: list[str] = []
    real_open = rasterio.open

    def counting_open(path: Any, *a: Any, **kw: Any) -> Any:
        opened.append(str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(production.rasterio, "open", counting_open)
    return opened


def test_compute_many_opens_each_cube_once_and_writes_what_compute_writes(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Services.from_config(config_file)
    scenes = _scenes(svc, tmp_path, 2)
    plans = [plan_product(svc, s, p) for s in scenes for p in ("index:NDVI", "index:PRI", "index:EVI")]
    gone = dataclasses.replace(plans[0], cube_href=str(tmp_path / "no-such-cube.tif"))
    one_by_one = [compute(svc, pl, tmp_path / "single" / str(k)) for k, pl in enumerate(plans)]

    real_open = rasterio.open
    opened = _count_opens(monkeypatch)
    many = compute_many(svc, [*plans, gone], [tmp_path / "many" / str(k) for k in range(len(plans) + 1)])

    cubes = {pl.cube_href for pl in plans}
    assert sorted(p for p in opened if any(p.endswith(Path(c).name) for c in cubes)) == sorted(
        svc.store_for(c).gdal_path(c) for c in cubes
    )  # one open per cube, for its three products
    assert isinstance(many[-1], Exception) and "no-such-cube" in str(many[-1])  # in its place, not raised
    for a, b in zip(one_by_one, many[:-1], strict=True):
        assert isinstance(b, Computed)
        assert file_checksum(a.files["data"]) == file_checksum(b.files["data"])  # the same COG, byte for byte
        assert a.proj == b.proj and a.result.stats == b.result.stats
        with real_open(b.files["thumbnail"]) as png:
            assert png.driver == "PNG" and png.count == 3


def test_compute_many_with_a_dask_target_computes_small_cubes_here(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``engine.dask_address`` set (a chunk task on a Dask worker of the stack): a cube of one window
    is opened once for its products and computed in this process; nothing is shipped to the cluster."""
    import distributed

    plain = Services.from_config(config_file)
    scene = _scenes(plain, tmp_path, 1)[0]
    names = ("index:NDVI", "index:PRI", "index:EVI")
    ref = compute_many(
        plain, [plan_product(plain, scene, p) for p in names], [tmp_path / "ref" / p for p in names]
    )
    with (
        distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        eng = plain.config.engine.model_copy(update={"dask_address": cluster.scheduler_address})
        svc = Services.from_config(plain.config.model_copy(update={"engine": eng}))
        assert production.dask_target(svc) == cluster.scheduler_address
        plans = [plan_product(svc, scene, p) for p in names]
        opened = _count_opens(monkeypatch)
        with distributed.get_task_stream(client) as ts:
            got = compute_many(svc, plans, [tmp_path / "d" / p for p in names])
        monkeypatch.undo()
        assert ts.data == []
        cube = scene.assets["cube"].href
        assert [p for p in opened if p.endswith(Path(cube).name)] == [svc.store_for(cube).gdal_path(cube)]
    for a, b in zip(ref, got, strict=True):
        assert isinstance(a, Computed) and isinstance(b, Computed)
        assert file_checksum(a.files["data"]) == file_checksum(b.files["data"])
