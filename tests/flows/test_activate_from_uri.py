"""``activate_scene(uri=...)``: what the ``activate/new-scene`` deployment runs on ``hsi.raw.available``.

The raw object is indexed inline (a task of the activation run, no subflow) and activated in the same
run; on the embedded default (static catalog, local store) with an in-process Prefect API.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    FlowRunFilterParentTaskRunId,
)

from hsi.config import load_config
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi_pipeline.flows.activate import activate_scene

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _catalog(config_file: Path) -> Services:
    return Services.from_config(load_config(config_file))


def _run_and_children(run_name: str) -> tuple[list, list, list]:
    """Flow runs named ``run_name``, the task runs of the (single) one, and flow runs nested in it."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])))
        if len(runs) != 1:
            return runs, [], []
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])))
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in tasks])))  # fmt: skip
        return runs, tasks, children


def test_uri_is_indexed_inline_then_activated_and_a_second_call_skips(
    tmp_path: Path, config_file: Path
) -> None:
    hdr = synthesize(tmp_path / "raw", source="aviris-ng", level="l2", width=24, height=32, seed=41)
    item_id = f"aviris-ng-{hdr.name.split('_')[0]}"
    assert item_id == "aviris-ng-ang20240101t004100"

    res = activate_scene(uri=str(hdr), source="none", config=str(config_file))  # "none": detect the source
    assert res["status"] == "activated"
    assert res["uri"] == str(hdr)
    assert res["raw"] == {"collection": "aviris-ng-raw", "item_id": item_id}
    assert res["collection"] == "aviris-ng-l2" and res["item_id"] == item_id
    svc = _catalog(config_file)
    raw = svc.catalog.get_item("aviris-ng-raw", item_id)
    act = svc.catalog.get_item("aviris-ng-l2", item_id)
    assert raw is not None and act is not None
    assert act.properties["hsi:inputs"][0]["id"] == item_id
    # one run, named after the object, indexing as a task of that run (no index subflow)
    run = act.properties["hsi:flow_run"]
    assert run["flow_name"] == "activate" and run["name"] == f"activate-{hdr.name}"
    runs, tasks, children = _run_and_children(f"activate-{hdr.name}")
    assert len(runs) == 1 and str(runs[0].id) == run["id"]
    assert {"index-raw-scene", "convert-to-cog"} <= {t.name.rsplit("-", 1)[0] for t in tasks}
    assert children == []

    again = activate_scene(uri=str(hdr), source="aviris-ng", config=str(config_file))
    assert again["status"] == "skipped" and "up to date" in again["reason"]
    assert again["raw"] == {"collection": "aviris-ng-raw", "item_id": item_id}
    assert [i.id for i in svc.catalog.search(collections=["aviris-ng-l2"])] == [item_id]
    assert [i.id for i in svc.catalog.search(collections=["aviris-ng-raw"])] == [item_id]


@pytest.mark.parametrize(
    "kwargs", [{"item_id": "aviris-ng-x", "uri": "/nowhere.hdr"}, {}], ids=["both", "neither"]
)
def test_exactly_one_of_item_id_and_uri(config_file: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="exactly one of item_id .* or uri") as exc_info:
        activate_scene(config=str(config_file), **kwargs)
    assert ("both" if kwargs else "neither") in str(exc_info.value)


def test_uri_with_more_than_one_scene_is_refused_naming_it(tmp_path: Path, config_file: Path) -> None:
    synthesize(tmp_path / "two", source="aviris-ng", level="l2", width=8, height=8, seed=1)
    synthesize(tmp_path / "two", source="aviris-ng", level="l2", width=8, height=8, seed=2)
    with pytest.raises(ValueError, match="expected exactly one raw scene, found 2") as exc_info:
        activate_scene(uri=str(tmp_path / "two"), config=str(config_file))
    assert str(tmp_path / "two") in str(exc_info.value)
    assert list(_catalog(config_file).catalog.search()) == []


def test_activate_false_for_the_source_leaves_only_the_raw_item(tmp_path: Path, config_file: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import hsi_pipeline.flows.activate

    emitted: list[dict] = []
    monkeypatch.setattr(hsi_pipeline.flows.activate, "emit", emitted.append)
    cfg = yaml.safe_load(config_file.read_text())
    cfg["sources"] = {"aviris-ng": {"activate": False}}
    config_file.write_text(yaml.safe_dump(cfg))
    arc = synthesize(
        tmp_path / "raw", source="aviris-ng", level="l2", width=16, height=16, seed=43, archive=True
    )
    res = activate_scene(uri=str(arc), config=str(config_file))
    item_id = res["raw"]["item_id"]
    assert item_id == "aviris-ng-ang20240101t004300"
    assert res["status"] == "indexed" and "activate is false" in res["reason"]
    svc = _catalog(config_file)
    assert [i.id for i in svc.catalog.search(collections=["aviris-ng-raw"])] == [item_id]
    assert svc.catalog.get_item("aviris-ng-l2", item_id) is None
    assert list(svc.catalog.search(collections=["aviris-ng-l2"])) == []
    # the module says why it did not process the event: hsi.activate.skipped on the raw item
    (ev,) = emitted
    assert ev["event"] == "hsi.activate.skipped"
    assert ev["resource"]["prefect.resource.id"] == f"stac.item.aviris-ng-raw.{item_id}"
    assert ev["payload"]["reason"] == "sources.aviris-ng.activate is false"


def test_run_products_computes_the_configured_products_in_the_same_run(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``activate/new-scene`` does (``run_products: true``): the source's products right after
    the activated item is registered, in the activation run (no subflow, no second run), with that
    run's provenance; a failing product does not stop the others and fails the run, naming it."""
    import hsi_pipeline.flows.activate
    import hsi_pipeline.flows.product

    emitted: list[dict] = []
    monkeypatch.setattr(hsi_pipeline.flows.activate, "emit", emitted.append)
    monkeypatch.setattr(hsi_pipeline.flows.product, "emit", emitted.append)
    cfg = yaml.safe_load(config_file.read_text())
    cfg["sources"] = {"aviris-ng": {"products": [
        {"product": "sam", "params": {"references": str(tmp_path / "nowhere.csv")}},
        {"product": "index:NDVI"}]}}  # fmt: skip
    config_file.write_text(yaml.safe_dump(cfg))
    hdr = synthesize(tmp_path / "raw", source="aviris-ng", level="l2", width=16, height=20, seed=44)
    item_id = f"aviris-ng-{hdr.name.split('_')[0]}"
    state = activate_scene(uri=str(hdr), config=str(config_file), run_products=True, return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, hsi_pipeline.flows.product.ProductRunsFailed)
    assert "1 of 2 products failed" in str(exc) and "sam:" in str(exc)
    svc = _catalog(config_file)
    act = svc.catalog.get_item("aviris-ng-l2", item_id)
    prod = svc.catalog.get_item("hsi-index-ndvi", f"{item_id}-index-ndvi")
    assert act is not None and prod is not None and svc.catalog.get_item("hsi-sam", f"{item_id}-sam") is None
    run = act.properties["hsi:flow_run"]
    assert prod.properties["hsi:flow_run"]["id"] == run["id"] and run["flow_name"] == "activate"
    assert [(i["collection"], i["id"]) for i in prod.properties["hsi:inputs"]] == [("aviris-ng-l2", item_id)]
    runs, tasks, children = _run_and_children(f"activate-{hdr.name}")
    assert len(runs) == 1 and children == []  # no products run, no subflow per product
    assert {"convert-to-cog", "compute-product"} <= {t.name.rsplit("-", 1)[0] for t in tasks}
    assert [e["event"] for e in emitted] == [
        "hsi.scene.activated",
        "hsi.product.failed",
        "hsi.product.published",
    ]
    assert emitted[2]["payload"]["product_key"] == prod.properties["hsi:product_key"]
