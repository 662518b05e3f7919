"""``hsi stack up`` from a state dir the ``postgres`` user cannot traverse (a 0700 home, a ``mktemp -d``).

Only PostgreSQL is started, from a private state dir on its own port (never the shared stack's); the
pgstac migration uses the shared stack's STAC venv (read only).
"""

from __future__ import annotations

import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hsi_pipeline.deployments.local.common import DEFAULT_PORTS, Layout, _is_root, _run
from hsi_pipeline.deployments.local.services import _pg_user, psql, stop_postgres, up_postgres
from tests.integration.moto_server import free_port


@pytest.fixture
def closed_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hsi-closed-"))  # 0700, like a private home
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_postgres_comes_up_from_a_state_dir_closed_to_the_postgres_user(
    closed_dir: Path, stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stat.S_IMODE(closed_dir.stat().st_mode) == 0o700 and _is_root()  # initdb runs as 'postgres'
    user = _pg_user()
    assert user == "postgres"
    assert _run(["test", "-x", str(closed_dir)], user=user, check=False).returncode != 0  # really closed
    monkeypatch.chdir(closed_dir)  # `hsi stack up` run from inside the closed directory
    layout = Layout(closed_dir / "stack", {**DEFAULT_PORTS, "postgres": free_port()})
    layout.root.mkdir()
    (layout.root / "stac-venv").symlink_to(Layout.default(stack["state_dir"]).venv)
    sec = {"pg_password": secrets.token_urlsafe(16)}
    try:
        assert up_postgres(layout, sec) == "started"
        assert (
            psql(layout, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgstac'", db="hsi_stac") == "1"
        )
        assert up_postgres(layout, sec) == "running"  # idempotent; the same cluster is found again
        assert (layout.pgdata / "PG_VERSION").read_text().strip() == "15"
    finally:
        stop_postgres(layout)
        if (layout.root / "pg").is_symlink():
            shutil.rmtree(layout.pg, ignore_errors=True)
