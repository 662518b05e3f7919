"""On-demand flow under a real Prefect API: partial failure, idempotent repeat, clips, artifacts, engines.

Three synthetic AVIRIS-NG scenes (48x64) overlap one AOI: one already activated, one not yet
activated, one whose data file is truncated after indexing.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import rasterio
import yaml

from hsi.activation import index_scene
from hsi.planning import aoi_from
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.storage import file_checksum
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.on_demand import OnDemandFailed, on_demand

pytestmark = pytest.mark.usefixtures("prefect_harness")

PRODUCTS = ["index:NDVI"]


def _config(root: Path, engine: dict | None = None) -> Path:
    cfg = {
        "storage": {"root": str(root / "assets")},
        "catalog": {"url": str(root / "catalog")},
        "work_dir": str(root / "work"),
    }
    if engine:
        cfg["engine"] = engine
    path = root / "hsi.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _three_scenes(root: Path, config: Path) -> dict:
    """Index 3 scenes, activate the first, truncate the third's data file; return ids, bbox, corrupt file."""
    svc = Services.from_config(str(config))
    raw = []
    for seed in (0, 1, 2):
        hdr = synthesize(
            root / "raw" / f"s{seed}", source="aviris-ng", level="l2", width=48, height=64, seed=seed
        )
        raw.append((index_scene(svc, str(hdr)), hdr))
    ids = [item.id for item, _ in raw]
    activate_scene(item_id=ids[0], config=str(config))
    data = raw[2][1].with_suffix("")  # the ENVI data file next to its header
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    boxes = [item.bbox for item, _ in raw]
    bbox = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    return {"ids": ids, "bbox": bbox, "corrupt": data}


def _run(**kw):
    state = on_demand(return_state=True, **kw)
    res = state.result(raise_on_failure=False)
    return state, (res.result if isinstance(res, OnDemandFailed) else res)


def _by_scene(result):
    return {o["scene"]: o for o in result["outcomes"]}


async def _artifacts(flow_run_id):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in arts}


def test_partial_failure_repeat_and_clip(tmp_path):
    config = _config(tmp_path)
    s = _three_scenes(tmp_path, config)
    ok1, ok2, bad = s["ids"]

    state, result = _run(
        products=PRODUCTS, bbox=s["bbox"], start="2024-01-01", end="2024-01-01", config=str(config)
    )
    assert state.is_failed() and state.name == "Partial", (state.name, state.message)
    assert result["counts"] == {"published": 2, "skipped": 0, "failed": 1, "total": 3}
    rows = _by_scene(result)
    assert rows[ok1]["status"] == rows[ok2]["status"] == "published"
    assert rows[ok1]["activation"] == "skipped" and rows[ok2]["activation"] == "activated"
    assert rows[bad]["status"] == "failed" and rows[bad]["activation"] == "failed"
    assert str(s["corrupt"]) in rows[bad]["reason"] and "truncated" in rows[bad]["reason"]
    assert str(s["corrupt"]) in state.message  # the failure is named in the run's final state too
    svc = Services.from_config(str(config))
    for sid in (ok1, ok2):
        item = svc.catalog.get_item("hsi-index-ndvi", f"{sid}-index-ndvi")
        assert item is not None and Path(item.assets["data"].href).is_file()
        assert rows[sid]["thumbnail"] == item.assets["thumbnail"].href

    # UI artifacts: outcome table, markdown summary with quicklooks, progress at 100 %
    arts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    assert {"on-demand-outcomes", "on-demand-summary", "on-demand-progress"} <= set(arts)
    table = arts["on-demand-outcomes"].data
    assert "failed" in str(table) and f"{ok2}-index-ndvi" in str(table)
    md = arts["on-demand-summary"].data
    assert "PARTIAL" in md and "Quicklooks" in md and rows[ok1]["thumbnail"] in md
    assert float(arts["on-demand-progress"].data) == 100.0

    # repeat: everything done is a skip; the corrupt scene still fails clearly (failures are not cached)
    state2, result2 = _run(products=PRODUCTS, bbox=s["bbox"], config=str(config))
    assert state2.name == "Partial"
    assert result2["counts"] == {"published": 0, "skipped": 2, "failed": 1, "total": 3}
    assert "truncated" in _by_scene(result2)[bad]["reason"]

    # a notebook calling the flow plainly gets the exception carrying the same result
    with pytest.raises(OnDemandFailed) as ei:
        on_demand(products=PRODUCTS, bbox=s["bbox"], sources=["aviris-ng"], config=str(config))
    assert ei.value.result["counts"]["skipped"] == 2

    # clip: a small AOI inside the scenes -> clip items derived from the product items
    w, so, e, n = s["bbox"]
    small = [w + (e - w) * 0.45, so + (n - so) * 0.3, w + (e - w) * 0.55, so + (n - so) * 0.5]
    state3, result3 = _run(products=PRODUCTS, bbox=small, clip=True, config=str(config))
    assert state3.name == "Partial"
    short = aoi_from(bbox=small).short
    for sid in (ok1, ok2):
        pid = f"{sid}-index-ndvi"
        clip = svc.catalog.get_item("hsi-index-ndvi-clips", f"{pid}-{short}")
        assert clip is not None, _by_scene(result3)[sid]
        assert _by_scene(result3)[sid]["clip_href"].endswith(f"{pid}-{short}.json")
        assert any(lk.rel == "derived_from" and lk.href.endswith(f"{pid}.json") for lk in clip.links)
        product = svc.catalog.get_item("hsi-index-ndvi", pid)
        with rasterio.open(product.assets["data"].href) as full, rasterio.open(clip.assets["data"].href) as c:
            assert c.width < full.width and c.height < full.height and c.count == full.count
            assert c.crs == full.crs and c.nodata == full.nodata
    # same AOI again: clips are skips
    _, result4 = _run(products=PRODUCTS, bbox=small, clip=True, config=str(config))
    assert result4["counts"]["skipped"] == 2


def _catalog_snapshot(config: Path) -> dict:
    """item id -> (product key, {asset key: checksum}) over every collection of the static catalog."""
    svc = Services.from_config(str(config))
    out = {}
    for item in svc.catalog.search():
        if item.collection_id.endswith("-raw"):
            sums = {k: a.extra_fields.get("file:checksum") for k, a in item.assets.items()}
        else:
            sums = {k: file_checksum(a.href) for k, a in item.assets.items()}
        out[f"{item.collection_id}/{item.id}"] = (item.properties.get("hsi:product_key"), sums)
    return out


def test_dask_and_threads_give_identical_catalogs(tmp_path, capsys):
    """The same run on threads and on an existing Dask cluster (``engine.dask_address``: what
    ``hsi stack up --dask-workers`` writes): scenes as tasks on the workers, the same catalog. Each
    product here is one window: computed by its scene's task on the worker, not shipped again (a
    product of many windows maps them over the workers: tests/unit/test_products_dask.py)."""
    import distributed

    results, times = {}, {}
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        for name, engine in (
            ("threads", {"task_runner": "threads", "max_workers": 4}),
            ("dask", {"task_runner": "dask", "dask_address": cluster.scheduler_address}),
        ):
            root = tmp_path / name
            root.mkdir()
            config = _config(root, engine)
            s = _three_scenes(root, config)
            t0 = time.perf_counter()
            with distributed.get_task_stream(client) as ts:
                state, result = _run(products=PRODUCTS + ["oil-spill"], bbox=s["bbox"], config=str(config))
            times[name] = time.perf_counter() - t0
            assert state.name == "Partial" and result["counts"]["published"] == 4, result["outcomes"]
            assert result["engine"].startswith(name)
            results[name] = _catalog_snapshot(config)
            keys = [str(t["key"]) for t in ts.data]
            if name == "threads":
                assert keys == []
            else:  # 3 scenes as tasks; their 4 products (1 window each) computed inside them
                assert sum(k.startswith("process_scene-") for k in keys) == 3, keys
                assert not [k for k in keys if k.startswith("hsi-window-")], keys
    assert set(results["threads"]) == set(results["dask"])
    assert len([k for k in results["threads"] if k.startswith("hsi-")]) == 4
    assert results["threads"] == results["dask"]
    with capsys.disabled():
        print(
            f"\non-demand wall time: threads {times['threads']:.1f} s, dask (2 worker processes, "
            f"dask_address) {times['dask']:.1f} s"
        )


def test_hsi_run_cli_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from hsi_pipeline.cli.main import app

    config = _config(tmp_path)
    s = _three_scenes(tmp_path, config)
    bbox = "--bbox=" + ",".join(str(v) for v in s["bbox"])
    runner = CliRunner()
    api_before = os.environ.get("PREFECT_API_URL")
    partial = runner.invoke(app, ["run", "index:NDVI", bbox, "--start", "2024-01-01", "-c", str(config)])
    # the command's API does not stick to this process (later work here must not post to it)
    assert os.environ.get("PREFECT_API_URL") == api_before
    assert partial.exit_code == 3, partial.output
    assert "2 published, 0 skipped, 1 failed" in " ".join(partial.output.split())
    # only the corrupt scene in the time range: all failed
    bad = runner.invoke(
        app,
        [
            "run",
            "index:NDVI",
            bbox,
            "--start",
            "2024-01-01T00:01:30",
            "--end",
            "2024-01-01T00:03:00",
            "--json",
            "-c",
            str(config),
        ],
    )
    assert bad.exit_code == 1, bad.output
    assert '"status": "failed"' in bad.output and "truncated" in bad.output
    # invalid requests stop before any flow run
    assert (
        runner.invoke(app, ["run", "index:NDVX", bbox, "-c", str(config)]).exit_code == 4
    )  # unknown product
    assert runner.invoke(app, ["run", "index:NDVI", "-c", str(config)]).exit_code == 2
    assert runner.invoke(app, ["run", "index:NDVI", "--bbox", "1,2,3", "-c", str(config)]).exit_code == 2
