"""Shared test fixtures: offline STAC validation, a Prefect test server, small scene factories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hsi.stac.validation import use_offline_schemas

DATA = Path(__file__).parent / "data"
TESTS = Path(__file__).resolve().parent
# Under pytest-xdist (`-n 2`, see pyproject.toml) these run one after another on one
# worker: they share the local stack (its Prefect deployments, work pool and automations) or load
# every core on purpose (tests/cli's CPU hog), and their bounded waits assume nothing else competes
# with them but the rest of the suite. Every other file is a group of its own (module fixtures once).
SERIAL_DIRS = ("integration", "faults", "cli")
# a private Prefect server and only reads the stack; the stack's S3 and STAC API only (own prefixes
# and collections); nothing that waits on a deadline
OWN_GROUP = ("integration/test_help_examples.py", "integration/test_storage_s3.py",
             "integration/test_catalog_stacapi.py", "integration/test_open_item_stack.py",
             "integration/test_raw_staging_s3.py", "integration/test_quickstart_notebook.py")  # fmt: skip


def xdist_group_of(path: Path) -> str:
    rel = path.resolve().relative_to(TESTS).as_posix()
    if rel.split("/", 1)[0] in SERIAL_DIRS and rel not in OWN_GROUP:
        return "serial"
    return rel


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Work units = :func:`xdist_group_of` each test's file (pytest-xdist's ``xdist_group`` marks are
    not applied to node ids under pytest 9, so the grouping is done here, in the scheduler)."""
    from xdist.scheduler import LoadScopeScheduling

    root = Path(str(config.rootpath))

    class FileGroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(root / nodeid.split("::", 1)[0])

    return FileGroupScheduling(config, log)


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
