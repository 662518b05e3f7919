"""Shared test fixtures: offline STAC validation, a Prefect test server, small scene factories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hsi.stac.validation import use_offline_schemas

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _offline_stac_schemas() -> None:
    """item.validate() never reaches the network: the vendored schemas answer."""
    use_offline_schemas()


@pytest.fixture(autouse=True, scope="session")
def _own_cli_server_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """CLI commands run in-process by tests share one local Prefect server in a directory of this
    session (not the user's ``~/.local/state/hsi/server``); it is stopped when the session ends."""
    from hsi_pipeline.cli import runtime

    if os.environ.get(runtime.SERVER_DIR_ENV):
        yield
        return
    os.environ[runtime.SERVER_DIR_ENV] = str(tmp_path_factory.mktemp("hsi-server"))
    try:
        yield
    finally:
        runtime.stop_server()
        del os.environ[runtime.SERVER_DIR_ENV]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API (SQLite) for flow tests; use with pytest.mark.usefixtures."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "hsi")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """An hsi.yaml with storage, catalog and work dir under tmp_path (the embedded default, isolated)."""
    cfg = {
        "storage": {"root": str(tmp_path / "assets")},
        "catalog": {"url": str(tmp_path / "catalog")},
        "work_dir": str(tmp_path / "work"),
    }
    path = tmp_path / "hsi.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
