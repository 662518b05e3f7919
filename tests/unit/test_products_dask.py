"""Chunk-parallel products: windows on the workers of a real Dask cluster (2 worker processes on
free ports) give the same COG, metadata and statistics as the windowed engine in one process."""

from __future__ import annotations

import hashlib

import distributed
import numpy as np
import pytest
import rasterio

from hsi.products import get_product, run_product
from hsi.products.testing import band_table, write_activated_cog

WL = np.arange(400.0, 2501.0, 10.0)


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
        ) as c,
        distributed.Client(c) as client,
    ):
        yield c, client


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    rng = np.random.default_rng(7)
    h, w = 330, 290  # not a multiple of the block: ragged last windows
    data = np.round(rng.uniform(0.05, 0.6, (WL.size, h, w)) * 1e4).astype("int16")
    data[:, :20, :30] = -9999
    good = [not (1340 <= x <= 1445 or 1790 <= x <= 1955) for x in WL]
    path = tmp_path_factory.mktemp("scene") / "ang_dask_rfl.tif"
    write_activated_cog(
        path, band_table(WL, 10.0, good=good, scale=1e-4), data, dtype="int16", nodata=-9999, block=64
    )
    return path


def _sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _same_cog(a: str, b: str) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert x.profile == y.profile
        assert x.tags() == y.tags() and x.descriptions == y.descriptions
        assert [x.tags(i) for i in x.indexes] == [y.tags(i) for i in y.indexes]
        assert np.array_equal(x.read(), y.read())
        assert x.overviews(1) == y.overviews(1)
        assert np.array_equal(x.read(out_shape=(x.count, 41, 36)), y.read(out_shape=(y.count, 41, 36)))
    assert _sha(a) == _sha(b)  # same bytes: blocks written in window order


def test_dask_windows_identical_to_windowed_engine(cluster, scene, tmp_path) -> None:
    """oil-spill: 4 output bands (float and a class band), band ranges, class counts and fractions."""
    _, client = cluster
    prod = get_product("oil-spill")
    ref = run_product(prod, str(scene), str(tmp_path / "ref.tif"), window_size=64)
    seen: list[tuple[int, int]] = []
    with distributed.get_task_stream(client) as ts:
        par = run_product(
            prod, str(scene), str(tmp_path / "dask.tif"), window_size=64, dask=client,
            progress=lambda k, n: seen.append((k, n)),
        )  # fmt: skip
    assert ref.windows == par.windows == 30 and seen[-1] == (30, 30)
    a, b = ref.to_dict(), par.to_dict()
    a.pop("output_path"), b.pop("output_path")
    assert a == b  # statistics, class counts and fractions bit for bit
    _same_cog(ref.output_path, par.output_path)
    # every window ran as its own task, on both worker processes
    windows = [t for t in ts.data if str(t["key"]).startswith("hsi-window-")]
    assert len(windows) == 30 and len({t["worker"] for t in windows}) == 2


def test_dask_by_scheduler_address(cluster, scene, tmp_path) -> None:
    """An address string (what ``engine.dask_address`` holds) connects a client for the run."""
    c, _ = cluster
    prod = get_product("index:NDVI")
    ref = run_product(prod, str(scene), str(tmp_path / "ref.tif"), window_size=128)
    par = run_product(prod, str(scene), str(tmp_path / "dask.tif"), window_size=128, dask=c.scheduler_address)
    assert ref.stats == par.stats
    _same_cog(ref.output_path, par.output_path)


def test_a_product_of_one_window_is_computed_here(cluster, scene, tmp_path) -> None:
    """A small scene (one window) is cheaper computed than shipped: no task reaches the cluster, and
    the output is the windowed engine's. What lets a batch's chunk task on a Dask worker compute
    its small scenes in its own process."""
    _, client = cluster
    prod = get_product("index:NDVI")
    ref = run_product(prod, str(scene), str(tmp_path / "ref.tif"))
    with distributed.get_task_stream(client) as ts:
        par = run_product(prod, str(scene), str(tmp_path / "dask.tif"), dask=client)
    assert ref.windows == par.windows == 1
    assert not [t for t in ts.data if str(t["key"]).startswith("hsi-window-")]
    assert ref.stats == par.stats
    _same_cog(ref.output_path, par.output_path)
