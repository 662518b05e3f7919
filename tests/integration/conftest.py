"""Integration fixtures: the real local stack (``hsi stack up``) and clients pointing at it.

``stack`` (session): makes sure the stack runs (starts it with ``python -m hsi_pipeline.cli.stack up`` when it
does not; it is left running afterwards) and yields its endpoints as a dict: ``stac_api``,
``s3_endpoint``, ``s3_bucket``, ``aws_profile``, ``shared_credentials_file``, ``prefect_api``,
``work_pool``, ``state_dir``, ``config`` (the generated hsi.stack.yaml), ``components``.

Every test gets its own S3 prefix and STAC collection ids, so runs (and other users of the same
stack) never see each other's objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK_UP_TIMEOUT_S = 900  # a cold machine installs PostGIS, a virtualenv and starts everything


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.integration)


def _state_dir() -> Path:
    return Path(os.environ.get("HSI_STACK_DIR") or ROOT / ".stack").resolve()


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, Any]]:
    """The running local stack's endpoints (started if needed, never stopped here)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from hsi_pipeline.deployments.local.stack import Layout, status

    layout = Layout.default(_state_dir())
    config_path = layout.root / "hsi.stack.yaml"
    info = status(layout)
    if not info["up"] or not config_path.exists():
        env = {**os.environ, "HSI_STACK_DIR": str(layout.root)}
        p = subprocess.run(
            [sys.executable, "-m", "hsi_pipeline.cli.stack", "up", "--config-out", str(config_path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=STACK_UP_TIMEOUT_S,
        )
        if p.returncode != 0:
            pytest.fail(f"`hsi stack up` failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        info = status(layout)
        if not info["up"]:
            bad = [n for n, c in info["components"].items() if not c["healthy"]]
            pytest.fail(f"stack started but not healthy: {bad}; logs in {layout.logs}")
    info["config"] = str(config_path)
    info["root"] = str(layout.root)
    yield info


@pytest.fixture(scope="session")
def stack_config(stack: dict[str, Any]):  # noqa: ANN201 - hsi.config.PipelineConfig
    """The PipelineConfig written by ``hsi stack up`` (shared; do not write below its storage root)."""
    from hsi.config import load_config

    return load_config(stack["config"])


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def pipeline_config(stack: dict[str, Any], stack_config, run_id: str, tmp_path: Path):  # noqa: ANN001, ANN201
    """A PipelineConfig pointing at the stack, with a storage root private to this test."""
    return stack_config.model_copy(
        update={
            "storage": stack_config.storage.model_copy(
                update={"root": f"s3://{stack['s3_bucket']}/test/{run_id}"}
            ),
            "work_dir": str(tmp_path / "work"),
        }
    )


@pytest.fixture
def s3_store(pipeline_config) -> Iterator[Any]:  # noqa: ANN001
    """A ready S3Store on the stack's SeaweedFS, rooted at a private prefix (emptied afterwards)."""
    from hsi.storage.s3 import S3Store

    store = S3Store.from_config(pipeline_config.storage)
    yield store
    for uri in list(store.list(store.root)):
        store.delete(uri)


@pytest.fixture
def stac_catalog(pipeline_config) -> Any:  # noqa: ANN001
    """A StacApiCatalog on the stack's stac-fastapi-pgstac."""
    from hsi.catalog.stacapi import StacApiCatalog

    return StacApiCatalog.from_config(pipeline_config.catalog)


@pytest.fixture
def stack_secret_key(stack: dict[str, Any]) -> str:
    """The stack's S3 secret key (only to assert that it never leaks)."""
    import configparser

    cp = configparser.ConfigParser()
    cp.read(stack["shared_credentials_file"])
    return cp[stack["aws_profile"]]["aws_secret_access_key"]
