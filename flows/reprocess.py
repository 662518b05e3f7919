"""Reprocessing and replay: run the jobs :func:`hsi.operations.select_jobs` chose (``hsi reprocess``,
``hsi replay --failed``).

Two ways, same result (items replaced, never duplicated: ids and keys are deterministic):

* **deployments** (when ``activate/activate`` and ``product/run-product`` are applied on the configured
  Prefect API): :func:`submit_jobs` starts ``activate/activate`` for a scene, waits for it, then one
  ``product/run-product`` run per product; at most ``limit`` scenes are in flight at once (a bounded
  pool of waiting submitters, so the work pool never gets more than ``limit`` scenes of one
  reprocessing). The runs use the configuration the deployments were applied with.
* **direct** (no deployments, or ``--direct``): the ``reprocess`` flow runs the same flows as subflows
  in this process, one scene after the other.

Each job activates first (forced) when asked, then redoes each product (forced); a failed
activation marks the scene's products failed without running them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from prefect import flow, get_run_logger

from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.product import run_product

__all__ = ["ACTIVATE_DEPLOYMENT", "PRODUCT_DEPLOYMENT", "deployments_available", "reprocess", "submit_jobs"]

ACTIVATE_DEPLOYMENT = "activate/activate"
PRODUCT_DEPLOYMENT = "product/run-product"
REPROCESS_TAG = "hsi-reprocess"


def _reason(state: Any) -> str:
    exc = state.result(raise_on_failure=False) if state is not None else None
    text = (
        f"{type(exc).__name__}: {exc}"
        if isinstance(exc, BaseException)
        else (getattr(state, "message", "") or "")
    )
    return " ".join(str(text).split())[:500]


def _row(
    job: dict[str, Any], stage: str, target: str, status: str, reason: str = "", run: str = ""
) -> dict[str, Any]:
    return {"scene": job["scene"], "stage": stage, "target": target, "status": status, "reason": reason,
            "flow_run": run}  # fmt: skip


@flow(name="reprocess", validate_parameters=False)
def reprocess(jobs: list[dict[str, Any]], config: str | None = None) -> list[dict[str, Any]]:
    """Run every job in this process: forced activation (when asked), then forced products."""
    log = get_run_logger()
    rows: list[dict[str, Any]] = []
    for job in jobs:
        if job["activate"]:
            st = activate_scene(item_id=job["scene"], collection=job["raw_collection"] or None, force=True,
                                config=config, return_state=True)  # fmt: skip
            if not st.is_completed():
                why = f"activation failed: {_reason(st)}"
                rows.append(_row(job, "activate", job["scene"], "failed", why))
                rows += [_row(job, "product", p["product"], "failed", why) for p in job["products"]]
                continue
            rows.append(_row(job, "activate", job["scene"], st.result()["status"]))
        for p in job["products"]:
            st = run_product(item_id=job["scene"], product=p["product"], params=p.get("params") or None,
                             force=True, config=config, collection=job["activated_collection"] or None,
                             return_state=True)  # fmt: skip
            ok = st.is_completed()
            rows.append(_row(job, "product", p["product"], st.result()["status"] if ok else "failed",
                             "" if ok else _reason(st)))  # fmt: skip
    for r in rows:
        log.info("%s\t%s %s\t%s", r["status"], r["scene"], r["target"], r["reason"])
    return rows


# --------------------------------------------------------------------------------- deployments
def _api(api_url: str | None) -> str | None:
    return api_url or os.environ.get("PREFECT_API_URL") or None


def deployments_available(api_url: str | None = None) -> bool:
    """Whether ``activate/activate`` and ``product/run-product`` exist on the Prefect API."""
    api = _api(api_url)
    if not api:
        return False
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            for name in (ACTIVATE_DEPLOYMENT, PRODUCT_DEPLOYMENT):
                client.read_deployment_by_name(name)
    except ObjectNotFound:  # not applied there: the flows run in this process
        return False
    return True


def _run(name: str, parameters: dict[str, Any], api: str | None = None) -> tuple[str, str, str]:
    """Start a deployment run on ``api`` and wait for its end: (status, reason, flow run id).

    The API is set per call: submitter threads do not inherit the caller's settings context."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api} if api else {}):
        fr: Any = run_deployment(name, parameters=parameters, timeout=None, poll_interval=1, as_subflow=False,
                                 tags=[REPROCESS_TAG])  # fmt: skip
    state = fr.state
    if state is not None and state.is_completed():
        return "done", "", str(fr.id)
    return (
        "failed",
        f"{name} run {fr.name} ended {state.name if state else '?'}: {state.message if state else ''}",
        str(fr.id),
    )


def _submit_one(job: dict[str, Any], api: str | None = None) -> list[dict[str, Any]]:
    rows = []
    if job["activate"]:
        status, why, run = _run(ACTIVATE_DEPLOYMENT, api=api, parameters={"item_id": job["scene"], "collection": job["raw_collection"] or None,
                                                      "force": True})  # fmt: skip
        rows.append(_row(job, "activate", job["scene"], status, why, run))
        if status == "failed":
            return rows + [
                _row(job, "product", p["product"], "failed", f"activation failed: {why}")
                for p in job["products"]
            ]
    for p in job["products"]:
        status, why, run = _run(PRODUCT_DEPLOYMENT, api=api, parameters={"item_id": job["scene"], "product": p["product"],
                                                     "params": p.get("params") or None, "force": True,
                                                     "collection": job["activated_collection"] or None})  # fmt: skip
        rows.append(_row(job, "product", p["product"], status, why, run))
    return rows


def submit_jobs(jobs: Sequence[dict[str, Any]], *, limit: int = 4, api: str | None = None,
                on_done: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Run the jobs through the deployments, at most ``limit`` scenes at once; one row per run."""
    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix="hsi-reprocess") as pool:
        futures = {pool.submit(_submit_one, dict(j), api): j for j in jobs}
        for fut in as_completed(futures):
            try:
                got = fut.result()
            except Exception as e:  # the API refused a submission: that scene fails with the reason
                j = futures[fut]
                got = [_row(j, "submit", j["scene"], "failed", f"{type(e).__name__}: {e}")]
            rows += got
            if on_done is not None:
                on_done(got)
    return rows


# ------------------------------------------------------------------------------ replay --failed
def _record_call(rec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(deployment, parameters) that redo the work of a failure record."""
    params = {k: v for k, v in dict(rec.get("params") or {}).items() if v is not None}
    return (ACTIVATE_DEPLOYMENT if rec["stage"] == "activate" else PRODUCT_DEPLOYMENT), params


def _record_row(rec: dict[str, Any], status: str, reason: str = "", run: str = "") -> dict[str, Any]:
    return {"stage": rec["stage"], "target": f"{rec['collection']}/{rec['item_id']}", "status": status,
            "reason": reason, "flow_run": run, "failed_at": rec.get("failed_at", "")}  # fmt: skip


@flow(name="replay-failed", validate_parameters=False)
def replay_failed(records: list[dict[str, Any]], config: str | None = None) -> list[dict[str, Any]]:
    """Run the work of each failure record again in this process: one subflow run per record."""
    rows = []
    for rec in records:
        _, params = _record_call(rec)
        fn: Any = activate_scene if rec["stage"] == "activate" else run_product
        st = fn(**params, config=config, return_state=True)
        ok = st.is_completed()
        rows.append(_record_row(rec, st.result()["status"] if ok else "failed", "" if ok else _reason(st),
                                str(st.state_details.flow_run_id or "")))  # fmt: skip
    return rows


def submit_records(
    records: Sequence[dict[str, Any]], *, limit: int = 4, api: str | None = None
) -> list[dict[str, Any]]:
    """Run the work of each failure record through its deployment (at most ``limit`` at once)."""

    def one(rec: dict[str, Any]) -> dict[str, Any]:
        name, params = _record_call(rec)
        status, why, run = _run(name, params, api)
        return _record_row(rec, status, why, run)

    with ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix="hsi-replay") as pool:
        return list(pool.map(one, records))
