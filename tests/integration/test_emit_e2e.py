"""An EMIT granule end to end, with nothing but events (issue 17 must-show 5).

OBS companion then L1B RAD granule put into a moto bucket (S3 -> SQS) -> the bridge (EMIT rule: a
single-file scene) -> hsi.raw.available -> ``activate/new-scene`` (index inline: cube + OBS as raw
assets; GLT orthorectification; OBS orthorectified as the ``obs`` asset) -> hsi.scene.activated, then in the
same run NDVI on TOA reflectance (per-pixel solar zenith from OBS), recorded in the
product item in the stack's STAC API. A private Prefect server and worker run this repository's code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from hsi.config import load_config
from hsi.events import RAW_AVAILABLE
from hsi.services import Services
from hsi.sources.emit_synth import synthesize_emit
from hsi.stac.product import product_collection, product_item_id
from tests.integration.e2e_harness import (
    Bridge,
    PrivatePrefect,
    events,
    landing_bucket,
    pipeline_config,
    prefect_api,
    wait_for,
)  # fmt: skip
from tests.integration.moto_server import aws_env, moto_endpoint

__all__ = ["aws_env", "moto_endpoint"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PRODUCT = "index:NDVI"
DONE_S = 420


@pytest.fixture(scope="module")
def pipeline(stack: dict[str, Any], moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[dict[str, Any]]:  # fmt: skip
    from hsi_pipeline.deployments.generate import apply

    tmp = tmp_path_factory.mktemp("emit-e2e")
    run_id = uuid.uuid4().hex[:6]
    bucket = f"emit-{run_id}"
    prefect = PrivatePrefect(tmp / "prefect")
    prefect.start_server()
    try:
        prefect.start_worker()
        s3, sqs, queue = landing_bucket(moto_endpoint, bucket)
        path = pipeline_config(tmp / "hsi.yaml", stack=stack, moto=moto_endpoint, bucket=bucket, api=prefect.api,
                               products=[{"product": PRODUCT}], run_id=run_id)  # fmt: skip
        doc = yaml.safe_load(path.read_text())
        doc["sources"] = {"emit": {"products": [{"product": PRODUCT}]}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        cfg = load_config(path)
        apply(cfg, config_path=path, api_url=prefect.api)
        autos = {
            a["name"]: a for a in prefect_api("POST", f"{prefect.api}/automations/filter", json={}).json()
        }
        assert "hsi-new-scene" in autos and "hsi-products-emit" not in autos  # products: in the run
        yield {"api": prefect.api, "s3": s3, "sqs": sqs, "queue": queue, "bucket": bucket, "cfg": cfg, "tmp": tmp,
               "autos": autos, "catalog": Services.from_config(cfg).catalog, "seed": int(run_id, 16) % 5000}  # fmt: skip
    finally:
        prefect.stop()


def test_emit_granule_in_bucket_ends_as_activated_and_toa_product(pipeline: dict[str, Any]) -> None:
    p = pipeline
    nc = synthesize_emit(p["tmp"] / "raw", level="l1b", crosstrack=24, downtrack=30, seed=p["seed"])
    obs = nc.with_name(nc.name.replace("_RAD_", "_OBS_"))
    item_id = f"emit-{nc.stem}"
    with Bridge(p["cfg"], p["sqs"], p["s3"], p["queue"], p["api"]):
        p["s3"].upload_file(str(obs), p["bucket"], f"emit/{obs.name}")  # the companion first
        p["s3"].upload_file(str(nc), p["bucket"], f"emit/{nc.name}")

        def done() -> tuple[Any, Any] | None:
            act = p["catalog"].get_item("emit-l1b", item_id)
            prod = p["catalog"].get_item(product_collection(PRODUCT), product_item_id(item_id, PRODUCT))
            return (act, prod) if act is not None and prod is not None else None

        act, prod = wait_for(done, timeout=DONE_S, interval=1.0, what=f"items of {item_id}")
    assert len(events(p["api"], RAW_AVAILABLE, f"stac.item.emit-raw.{item_id}")) == 1
    assert {"cube", "obs", "sensor", "rgb", "thumbnail"} <= set(act.assets)
    assert act.properties["hsi:flow_run"]["trigger"]["automation"] == "hsi-new-scene"
    params = prod.properties["hsi:parameters"]
    assert params["input_quantity"] == "toa-reflectance"
    assert params["toa_reflectance"]["solar_zenith"].startswith("per pixel: asset 'obs' band 5")
    assert prod.properties["hsi:flow_run"]["trigger"]["automation"] == "hsi-new-scene"
    assert prod.properties["hsi:flow_run"]["id"] == act.properties["hsi:flow_run"]["id"]
