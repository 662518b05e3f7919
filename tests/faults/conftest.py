"""The standing fault matrix: backends, scenes and the invariants checked after every rerun.

A cell kills (``HSI_FAULT=<point>``, :mod:`hsi.faults`) a real ``hsi activate`` process at one point,
reruns it without the fault, and asserts: the rerun succeeded; exactly one activated item whose assets
exist with their recorded size and checksum (static catalogs: linked from the collection); no object
below the item's key prefix that the item does not name; no unfinished upload (S3 multipart / local
partial file) below the storage root; no scratch left in the work directory.

Backends: ``static`` (static catalog + local storage) and ``pgstac-s3`` (the shared stack's
stac-fastapi-pgstac and SeaweedFS). Both use the stack's Prefect server as the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import stack, stack_config  # noqa: F401 - fixtures
from tests.integration.e2e_harness import ng_scene_id

ROOT = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 600


@dataclass
class Backend:
    name: str
    config: Path
    prefect_api: str
    work_dir: Path

    def services(self) -> Any:
        from hsi.services import Services

        return Services.from_config(str(self.config))

    def run(
        self, *args: str, fault: str | None = None, mode: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``hsi <args> -c <config>`` in a new process (the fault, if any, in its environment)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HSI_", "PREFECT_API"))}
        env.update({"PREFECT_API_URL": self.prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING"})
        if fault:
            env["HSI_FAULT"] = fault
        if mode:
            env["HSI_FAULT_MODE"] = mode
        return subprocess.run(
            [sys.executable, "-m", "hsi_pipeline.cli.main", *args, "-c", str(self.config)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )


@pytest.fixture(params=["static", "pgstac-s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    info = request.getfixturevalue("stack")
    path = tmp_path / "hsi.yaml"
    if request.param == "static":
        doc: dict[str, Any] = {
            "storage": {"root": str(tmp_path / "assets")},
            "catalog": {"url": str(tmp_path / "catalog")},
            "work_dir": str(tmp_path / "work"),
        }
    else:
        cfg = request.getfixturevalue("stack_config")
        doc = cfg.model_dump(mode="json", exclude_none=True)
        doc["storage"]["root"] = f"s3://{info['s3_bucket']}/faults/{tmp_path.name}-{os.getpid()}"
        doc["storage"]["part_size_mib"] = 5  # the S3 minimum: a 128 x 128 scene's cube goes multipart
        doc["work_dir"] = str(tmp_path / "work")
    path.write_text(yaml.safe_dump(doc))
    b = Backend(request.param, path, info["prefect_api"], tmp_path / "work")
    yield b
    if request.param == "pgstac-s3":
        store = b.services().store
        for uri in list(store.list(store.root)):
            store.delete(uri)


def new_scene(tmp_path: Path, backend: Backend, width: int = 48, height: int = 64) -> str:
    """A tiny AVIRIS-NG L2 scene, indexed (raw item registered); returns its item id."""
    from hsi.activation import index_scene
    from hsi.sources.synthetic import synthesize

    sid = ng_scene_id()
    hdr = synthesize(
        tmp_path / "raw" / sid, source="aviris-ng", level="l2", width=width, height=height, scene_id=sid
    )
    item = index_scene(backend.services(), str(hdr))
    return item.id


def assert_clean(backend: Backend, item_id: str) -> None:
    """The invariants of a finished (re)run: one complete item, no orphans, no uploads, no scratch."""
    svc = backend.services()
    coll = "aviris-ng-l2"
    item = svc.catalog.get_item(coll, item_id)
    assert item is not None, f"{coll}/{item_id} missing after the rerun"
    hrefs = {a.href for a in item.assets.values()}
    for name, asset in item.assets.items():
        info = svc.store.stat(asset.href, checksum=True)
        assert info is not None, f"asset {name} missing: {asset.href}"
        assert info.size == asset.extra_fields["file:size"]
        assert info.checksum == asset.extra_fields["file:checksum"]
    assert set(svc.store.list(svc.store.uri(coll, item_id))) == hrefs  # no orphan objects
    assert svc.store.incomplete_uploads(svc.store.root) == []  # type: ignore[attr-defined]
    if backend.name == "static":
        col = svc.catalog.href.rsplit("/", 1)[0] + f"/{coll}/collection.json"
        links = yaml.safe_load(Path(col).read_text())["links"]
        assert {"rel": "item", "href": f"./{item_id}/{item_id}.json", "type": "application/geo+json"} in links
        assert [p for p in Path(svc.store.root).rglob("*.part")] == []
    runs = backend.work_dir / "runs"
    assert not runs.exists() or [p.name for p in runs.iterdir()] == [], "scratch left"
    # the killed run's lease record was released by the rerun (hsi.lease.dead_holders)
    assert sorted(p.name for p in (backend.work_dir / "leases").glob("*.held")) == []
    assert not (backend.work_dir / "out").exists()
