"""The stack's Prefect server keeps its state in the stack's PostgreSQL (not SQLite)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from hsi_pipeline.deployments.local.common import Layout
from hsi_pipeline.deployments.local.prefect_services import PREFECT_DB
from hsi_pipeline.deployments.local.services import psql


def test_prefect_server_writes_to_the_stacks_postgresql(stack: dict[str, Any]) -> None:
    layout = Layout.default(Path(stack["state_dir"]))
    name = f"hsi-pg-probe-{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{stack['prefect_api']}/flows/", json={"name": name}, timeout=30)
    r.raise_for_status()
    flow_id = r.json()["id"]
    # the row the API just wrote is in PostgreSQL's `prefect` database
    assert psql(layout, f"SELECT id FROM flow WHERE name = '{name}'", db=PREFECT_DB) == flow_id
    httpx.delete(f"{stack['prefect_api']}/flows/{flow_id}", timeout=30)
