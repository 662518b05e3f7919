"""Index flow: register raw STAC items for scenes given as local paths, URLs or s3:// keys."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from hsi.indexing import discover_scenes
from hsi_pipeline.tasks.activation import index_raw_scene
from hsi_pipeline.tasks.runtime import get_config

__all__ = ["ScenesNotIndexed", "index_scenes"]


class ScenesNotIndexed(RuntimeError):
    """Some scenes could not be indexed; ``rows`` holds every scene's outcome, ``failed`` the errors."""

    def __init__(self, rows: list[dict[str, Any]], failed: list[BaseException]) -> None:
        self.rows, self.failed = rows, failed
        bad = [r for r in rows if r["status"] == "failed"]
        why = "; ".join(
            r["reason"] if r["href"] in r["reason"] else f"{r['href']}: {r['reason']}" for r in bad
        )
        self.summary = f"{len(bad)} of {len(rows)} scenes could not be indexed: {why}"
        super().__init__(self.summary)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (Prefect may persist a failed state's exception)
        return (type(self), (self.rows, self.failed))


@flow(name="index", validate_parameters=True)
def index_scenes(
    hrefs: list[str], source: str | None = None, config: str | None = None
) -> list[dict[str, Any]]:
    """Index every scene found at ``hrefs`` (a directory is searched for headers and archives).

    A scene that cannot be read is reported with its reason and does not stop the others; the
    flow fails at the end when any scene failed.
    """
    log = get_run_logger()
    cfg = get_config(config)
    entries = [e for h in hrefs for e in discover_scenes(h)]
    futures = [(e, index_raw_scene.submit(e, source, cfg)) for e in entries]
    out: list[dict[str, Any]] = []
    failed: list[BaseException] = []
    for entry, fut in futures:
        try:
            item = fut.result()
            out.append(
                {"href": entry, "status": "indexed", "collection": item["collection"], "item_id": item["id"]}
            )
        except Exception as e:
            log.error("cannot index %s: %s", entry, e)
            failed.append(e)
            out.append({"href": entry, "status": "failed", "reason": str(e)})
    if failed:
        raise ScenesNotIndexed(out, failed)
    return out
