"""New-scene flow: one raw object arrived (``hsi.raw.available``) -> index it -> activate it.

Deployed as ``ingest/new-scene`` with a trigger on ``hsi.raw.available`` (see deployments/generate.py);
index and activate run as subflows so each has its own run, logs and provenance. Both are
idempotent, so a redelivered event or a manual re-run never duplicates an item.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.activate import activate_scene
from flows.index import index_scenes
from hsi.events import NONE
from tasks.runtime import get_config


@flow(name="ingest", flow_run_name="ingest-{uri}", validate_parameters=True)
def ingest(
    uri: str,
    source: str | None = None,
    config: str | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Index the raw object at ``uri`` (s3://, http(s) or a local path), then activate it.

    ``source`` forces the source (``None``/``"none"``: detect it). Activation is skipped when the
    configuration says ``sources.<source>.activate: false``. ``trigger`` is the triggering event and
    automation (templated by the deployment trigger) and is recorded in the activated item's
    provenance.
    """
    log = get_run_logger()
    cfg = get_config(config)
    forced = None if source in (None, "", NONE) else source
    rows = index_scenes(hrefs=[uri], source=forced, config=config)
    if len(rows) != 1:
        raise ValueError(f"{uri}: expected exactly one scene, found {len(rows)}")
    raw = rows[0]
    out: dict[str, Any] = {"uri": uri, "raw": {"collection": raw["collection"], "item_id": raw["item_id"]}}
    src = raw["collection"].removesuffix("-raw")
    sc = cfg.sources.get(src)
    if sc is not None and not sc.activate:
        log.info("%s: indexed; not activated (sources.%s.activate is false)", raw["item_id"], src)
        return {**out, "status": "indexed", "activated": None}
    act = activate_scene(item_id=raw["item_id"], collection=raw["collection"], config=config, trigger=trigger)
    log.info("%s: %s", raw["item_id"], act["status"])
    return {**out, "status": act["status"], "activated": act}
