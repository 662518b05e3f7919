"""Index + activate against the real stack: COGs in SeaweedFS S3, items in stac-fastapi-pgstac.

Covers issue 4's must-shows at the flow level: search finds the items, assets open over S3,
upserts never duplicate (sequential and concurrent), the commit point holds when the catalog
fails, catalog errors are clear and leave nothing unrecorded, and no credential leaks.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pystac_client
import pytest
import rasterio
import yaml
from rio_cogeo.cogeo import cog_validate

from hsi.config import PipelineConfig
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.stac.validation import validate_item
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.index import index_scenes
from tests.integration.e2e_harness import ng_scene_id
from tests.integration.fault_proxy import FaultProxy

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(900)]


def _write(cfg: PipelineConfig, path: Path, **catalog: Any) -> str:
    doc = cfg.model_dump(mode="json", exclude_none=True)
    doc["catalog"].update(catalog)
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _scene(tmp_path: Path, **kw: Any) -> tuple[Path, str]:
    sid = ng_scene_id()
    hdr = synthesize(tmp_path / sid, source="aviris-ng", level="l2", width=40, height=56, scene_id=sid, **kw)
    return hdr, f"aviris-ng-{sid}"


def _objects(svc: Services, item_id: str) -> list[str]:
    return sorted(svc.store.list(svc.store.uri("aviris-ng-l2", item_id)))


def test_activate_to_s3_and_stac_api_then_search(
    pipeline_config: PipelineConfig, s3_store: Any, stack: dict, tmp_path: Path
) -> None:
    cfg = _write(pipeline_config, tmp_path / "hsi.yaml")
    hdr, item_id = _scene(tmp_path, rotation_deg=25, seed=3)
    assert index_scenes(hrefs=[str(hdr)], config=cfg)[0]["item_id"] == item_id
    res = activate_scene(item_id=item_id, config=cfg)
    assert res["status"] == "activated" and res["cube"].startswith(s3_store.root + "/aviris-ng-l2/")

    client = pystac_client.Client.open(stack["stac_api"])
    svc = Services.from_config(pipeline_config)
    act = svc.catalog.get_item("aviris-ng-l2", item_id)
    assert act is not None
    when = act.datetime
    assert when is not None
    found = client.search(
        collections=["aviris-ng-l2"],
        bbox=act.bbox,
        datetime=[when - timedelta(seconds=1), when + timedelta(seconds=1)],
    ).item_collection()
    assert [i.id for i in found] == [item_id]
    raw = client.search(collections=["aviris-ng-raw"], ids=[item_id]).item_collection()
    assert [i.id for i in raw] == [item_id]
    for item in (*found, *raw):
        validate_item(item)

    cube = act.assets["cube"]
    assert cube.href.startswith("s3://")
    with s3_store.rasterio_env():
        path = s3_store.gdal_path(cube.href)
        assert cog_validate(path, quiet=True)[0]
        with rasterio.open(path) as ds:
            assert ds.count == 425 and ds.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND"
            assert ds.read(100, window=((10, 12), (10, 12))).shape == (2, 2)
    info = s3_store.stat(cube.href)
    assert info.size == cube.extra_fields["file:size"] and info.checksum == cube.extra_fields["file:checksum"]


def test_three_runs_and_four_concurrent_runs_leave_one_item(
    pipeline_config: PipelineConfig, s3_store: Any, tmp_path: Path
) -> None:
    cfg = _write(pipeline_config, tmp_path / "hsi.yaml")
    svc = Services.from_config(pipeline_config)
    hdr, item_id = _scene(tmp_path, seed=4)
    index_scenes(hrefs=[str(hdr)], config=cfg)
    statuses = [
        activate_scene(item_id=item_id, config=cfg)["status"],
        activate_scene(item_id=item_id, config=cfg)["status"],
        activate_scene(item_id=item_id, force=True, config=cfg)["status"],
    ]
    assert statuses == ["activated", "skipped", "activated"]
    assert [i.id for i in svc.catalog.search(collections=["aviris-ng-l2"], ids=[item_id])] == [item_id]

    hdr2, item2 = _scene(tmp_path, seed=5)
    index_scenes(hrefs=[str(hdr2)], config=cfg)
    errors: list[BaseException] = []
    results: list[dict] = []

    def run() -> None:
        try:
            results.append(activate_scene(item_id=item2, config=cfg))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not errors, errors
    assert len(results) == 4 and {r["status"] for r in results} <= {"activated", "skipped"}
    assert [i.id for i in svc.catalog.search(collections=["aviris-ng-l2"], ids=[item2])] == [item2]
    objs = _objects(svc, item2)
    assert [o.rsplit("/", 1)[-1] for o in objs] == [
        f"{item2}.tif",
        f"{item2}_quicklook.png",
        f"{item2}_rgb.tif",
    ]
    item = svc.catalog.get_item("aviris-ng-l2", item2)
    for a in item.assets.values():  # the registered item describes the objects that are there
        assert s3_store.stat(a.href).checksum == a.extra_fields["file:checksum"]


def test_commit_point_holds_when_registration_fails(
    pipeline_config: PipelineConfig, s3_store: Any, stack: dict, tmp_path: Path
) -> None:
    proxy = FaultProxy(stack["stac_api"])
    try:
        cfg = _write(pipeline_config, tmp_path / "hsi.yaml", url=proxy.url, retries=2)
        svc = Services.from_config(pipeline_config)
        hdr, item_id = _scene(tmp_path, seed=6)
        index_scenes(hrefs=[str(hdr)], config=cfg)

        def item_write(m: str, p: str) -> bool:
            return m in ("POST", "PUT") and p.startswith("/collections/aviris-ng-l2/items")

        # 1. the catalog keeps failing at registration: the flow fails, no item is visible
        proxy.inject(100, "500", item_write)
        with pytest.raises(Exception, match="HTTP 500"):
            activate_scene(item_id=item_id, config=cfg)
        assert svc.catalog.get_item("aviris-ng-l2", item_id) is None
        assert len(_objects(svc, item_id)) == 3  # uploaded first, recorded in the failed event + log
        proxy.faults.clear()
        # 2. a rerun completes cleanly
        assert activate_scene(item_id=item_id, config=cfg)["status"] == "activated"
        assert svc.catalog.get_item("aviris-ng-l2", item_id) is not None

        # 3. 500 once, then the API recovers: retried inside the run, succeeds
        hdr2, item2 = _scene(tmp_path, seed=7)
        index_scenes(hrefs=[str(hdr2)], config=cfg)
        proxy.seen.clear()
        proxy.inject(1, "500", item_write)
        assert activate_scene(item_id=item2, config=cfg)["status"] == "activated"
        writes = [s for m, p, s in proxy.seen if item_write(m, p)]
        assert writes[0] == 500 and writes[-1] in (200, 201)
        assert svc.catalog.get_item("aviris-ng-l2", item2) is not None
    finally:
        proxy.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("failure", ["unreachable", "401", "malformed"])
def test_catalog_errors_are_clear_and_write_nothing(
    pipeline_config: PipelineConfig, s3_store: Any, stack: dict, tmp_path: Path, failure: str
) -> None:
    good = _write(pipeline_config, tmp_path / "good.yaml")
    hdr, item_id = _scene(tmp_path, seed=8)
    index_scenes(hrefs=[str(hdr)], config=good)  # the raw item is in the real catalog
    proxy = FaultProxy(stack["stac_api"])
    try:
        if failure == "unreachable":
            url, expect = f"http://127.0.0.1:{_closed_port()}", r"127\.0\.0\.1:\d+.*(unreachable|connect)"
        elif failure == "401":
            proxy.inject(1000, "401")
            url, expect = proxy.url, r"HTTP 401"
        else:
            proxy.inject(1000, "malformed")
            url, expect = proxy.url, r"malformed JSON"
        cfg = _write(pipeline_config, tmp_path / "bad.yaml", url=url, retries=1)
        with pytest.raises(Exception, match=expect) as exc_info:
            activate_scene(item_id=item_id, config=cfg)
        assert url.split("//")[1] in str(exc_info.value)
    finally:
        proxy.close()
    svc = Services.from_config(pipeline_config)
    assert _objects(svc, item_id) == []  # the catalog is checked before anything is written
    assert svc.catalog.get_item("aviris-ng-l2", item_id) is None


def test_no_credential_in_items_hrefs_or_logs(
    pipeline_config: PipelineConfig, s3_store: Any, stack: dict, stack_secret_key: str, tmp_path: Path
) -> None:
    cfg = _write(pipeline_config, tmp_path / "hsi.yaml")
    hdr, item_id = _scene(tmp_path, seed=9)
    index_scenes(hrefs=[str(hdr)], config=cfg)
    activate_scene(item_id=item_id, config=cfg)
    svc = Services.from_config(pipeline_config)
    import configparser

    cp = configparser.ConfigParser()
    cp.read(stack["shared_credentials_file"])
    access_key = cp[stack["aws_profile"]]["aws_access_key_id"]
    docs = [json.dumps(svc.catalog.get_item(c, item_id).to_dict()) for c in ("aviris-ng-raw", "aviris-ng-l2")]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp

    with get_client(sync_client=True) as client:
        since = datetime.now(UTC) - timedelta(hours=1)
        logs = client.read_logs(LogFilter(timestamp=LogFilterTimestamp(after_=since)))
    text = "\n".join(docs + [lg.message for lg in logs])
    assert item_id in text and len(logs) > 5
    for secret in (stack_secret_key, access_key):
        assert secret not in text
    for d in docs:
        for href in [a["href"] for a in json.loads(d)["assets"].values()] + [
            lk["href"] for lk in json.loads(d)["links"]
        ]:
            assert "@" not in href.split("//", 1)[-1].split("/", 1)[0]  # no user:password@host
