"""Activate and product runs publish their results to the Prefect UI (issue 12, must-show 6):
a link artifact to the STAC item, a markdown card with the preview image, band table and
statistics, and the run tags ``scene:<id>`` / ``source:<name>``. The flows run in this process against the
stack's Prefect server; everything is read back through its API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from hsi import activation as act
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.product import run_product
from tests.integration.test_open_item_stack import _scene_id


@pytest.fixture
def prefect_api(stack: dict) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack["prefect_api"]}):
        yield stack["prefect_api"]


def _artifacts(flow_run_id):  # noqa: ANN001, ANN202
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        run = client.read_flow_run(flow_run_id)
    # a link artifact is stored as a markdown link: tell the two apart by their keys
    return {("link" if a.key.endswith("-item") else "markdown"): a for a in arts if a.key}, run.tags


@pytest.mark.usefixtures("prefect_api")
def test_activate_and_product_runs_publish_link_card_and_tags(config_file: Path, tmp_path: Path) -> None:
    svc = Services.from_config(config_file)
    hdr = synthesize(
        tmp_path / "raw", width=32, height=40, rotation_deg=15, scene_id=_scene_id(uuid.uuid4().hex[:10])
    )
    raw = act.index_scene(svc, str(hdr))
    scene = raw.properties["hsi:scene_id"]

    state = activate_scene(item_id=raw.id, config=str(config_file), return_state=True)
    assert state.is_completed()
    arts, tags = _artifacts(state.state_details.flow_run_id)
    assert {f"scene:{scene}", "source:aviris-ng"} <= set(tags)
    item_path = svc.catalog.item_href("aviris-ng-l2", raw.id)
    assert f"(file://{item_path})" in arts["link"].data and Path(item_path).is_file()
    card = arts["markdown"].data
    assert f"aviris-ng-l2/{raw.id}" in card
    assert "![" in card and "data:image/png;base64," in card  # the quicklook, inline
    assert "| 425 |" in card and "376.7 - 2500.7" in card  # band table summary: count, spectral range

    state = run_product(item_id=raw.id, product="index:NDVI", config=str(config_file), return_state=True)
    assert state.is_completed()
    arts, tags = _artifacts(state.state_details.flow_run_id)
    assert {f"scene:{scene}", "source:aviris-ng"} <= set(tags)
    assert arts["link"].data.endswith(f"{raw.id}-index-ndvi.json)")
    card = arts["markdown"].data
    assert "data:image/png;base64," in card and "## Statistics" in card and "| NDVI |" in card


def test_deployment_parameters_have_descriptions() -> None:
    from prefect.utilities.callables import parameter_schema

    for fl in (activate_scene, run_product):
        props = parameter_schema(fl.fn).model_dump()["properties"]
        missing = [k for k, v in props.items() if not v.get("description")]
        assert not missing, f"{fl.name}: parameters without a description: {missing}"
