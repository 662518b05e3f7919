"""The products-batch flow under a real Prefect API (test harness): chunk tasks, outcomes, provenance."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hsi.activation import index_scene
from hsi.demo import activate
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi_pipeline.flows.batch import BatchFailed, publish_products_batch

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_batch_flow_publishes_with_its_run_in_provenance_and_ends_partial_on_a_bad_product(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "hsi.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"root": str(tmp_path / "assets")},
                                   "catalog": {"url": str(tmp_path / "catalog")}, "work_dir": str(tmp_path / "work")}))  # fmt: skip
    svc = Services.from_config(cfg)
    ids = []
    for k in range(3):
        hdr = synthesize(
            tmp_path / "raw" / str(k), width=12, height=16, seed=k, scene_id=f"ang2022030{k + 1}t101010"
        )
        ids.append(index_scene(svc, str(hdr)).id)
        activate(svc, ids[-1])
    products = ["index:NDVI", {"product": "index:PRI", "params": {"bogus": 1}}]
    state = publish_products_batch(item_ids=[*ids, "aviris-ng-ang20220309t000000"], products=products,
                                   collection="aviris-ng-l2", scenes_per_task=2, config=str(cfg), return_state=True)  # fmt: skip

    assert state.is_failed() and state.name == "Partial"
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, BatchFailed)
    out = exc.result
    assert out["counts"] == {"published": 3, "skipped": 0, "failed": 5}  # 3 bad PRI + 2 for the missing scene
    missing = [o for o in out["outcomes"] if o["scene"] == "aviris-ng-ang20220309t000000"]
    assert [o["reason"] for o in missing] == [
        "no activated item aviris-ng-l2/aviris-ng-ang20220309t000000"
    ] * 2
    run_id = str(state.state_details.flow_run_id)
    for o in out["outcomes"]:
        if o["status"] == "published":
            item = svc.catalog.get_item(o["collection"], o["item_id"])
            assert item is not None and item.properties["hsi:flow_run"]["id"] == run_id
            assert item.properties["hsi:inputs"][0]["id"] == o["scene"]
