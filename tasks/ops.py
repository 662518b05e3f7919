"""Edge helpers of the operations commands: failure records written by the flows (not tasks: they
must run in the flow's ``except`` path and never mask the original error)."""

from __future__ import annotations

import logging
from typing import Any

from hsi.config import PipelineConfig
from hsi.failures import FailureRecord, Stage, clear_failure, record_failure
from hsi_pipeline.tasks.runtime import services

__all__ = ["note_done", "note_failure"]

log = logging.getLogger(__name__)


def note_failure(cfg: PipelineConfig, stage: Stage, collection: str, item_id: str, reason: str,
                 params: dict[str, Any]) -> None:  # fmt: skip
    """Record the failure of ``stage`` on ``collection/item_id`` (read by ``hsi plan`` / ``hsi replay``)."""
    from prefect.runtime import flow_run

    rec = FailureRecord(stage=stage, collection=collection, item_id=item_id, reason=reason[:2000],
                        params=params, flow_run_id=flow_run.get_id() or "")  # fmt: skip
    try:
        record_failure(services(cfg), rec)
    except Exception as e:  # the run fails with its own error; this one is only logged
        log.warning("could not record the failure of %s/%s: %s", collection, item_id, e)


def note_done(cfg: PipelineConfig, collection: str, item_id: str) -> None:
    """The item is published or up to date: drop its failure record, if any."""
    try:
        clear_failure(services(cfg), collection, item_id)
    except Exception as e:
        log.warning("could not clear the failure record of %s/%s: %s", collection, item_id, e)
