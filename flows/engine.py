"""Task-runner selection from the pipeline configuration (``engine`` section).

The same flow code runs on every engine; only the task runner differs:

* ``task_runner: threads`` (default): :class:`~prefect.task_runners.ThreadPoolTaskRunner` with
  ``max_workers`` threads.
* ``task_runner: dask`` with ``dask_address``: :class:`~prefect_dask.DaskTaskRunner` connected to an
  existing ``distributed`` scheduler (e.g. ``tcp://scheduler:8786``; ``hsi stack up --dask-workers N``
  runs one and writes its address into ``hsi.stack.yaml``). Products computed under such a
  configuration also map their windows over it (:mod:`hsi.products.dask_engine`).
* ``task_runner: dask`` without an address: a temporary ``distributed.LocalCluster`` of
  ``dask_workers`` worker *processes* with ``dask_threads_per_worker`` threads each, created when the
  flow starts and closed when it ends.

Flows apply the runner at call time, never at decoration, so one deployment honours whatever the
configuration says::

    with_engine(index_scenes, cfg)(hrefs=[...], config=path)

Tasks submitted under any runner exchange small picklable values (paths, URIs, item dicts), so a
Dask worker process never receives pixel data through the scheduler.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from hsi.config import EngineConfig, PipelineConfig

__all__ = ["describe_engine", "task_runner_for", "with_engine"]

F = TypeVar("F")


def _engine(cfg: PipelineConfig | EngineConfig) -> EngineConfig:
    return cfg.engine if isinstance(cfg, PipelineConfig) else cfg


def task_runner_for(cfg: PipelineConfig | EngineConfig) -> TaskRunner[Any]:
    """The task runner the configuration asks for (a fresh, unstarted instance)."""
    eng = _engine(cfg)
    if eng.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=eng.max_workers)
    from prefect_dask import DaskTaskRunner

    if eng.dask_address:
        return DaskTaskRunner(address=eng.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": eng.dask_workers,
            "threads_per_worker": eng.dask_threads_per_worker,
            "processes": True,
            "dashboard_address": None,  # no fixed port: several runs may share a host
        },
    )


def with_engine(flow_obj: F, cfg: PipelineConfig | EngineConfig) -> F:
    """``flow_obj.with_options(task_runner=task_runner_for(cfg))``."""
    return flow_obj.with_options(task_runner=task_runner_for(cfg))  # type: ignore[attr-defined]


def describe_engine(cfg: PipelineConfig | EngineConfig) -> str:
    """A one-line human description (logs, artifacts)."""
    eng = _engine(cfg)
    if eng.task_runner == "threads":
        return f"threads (max_workers={eng.max_workers})"
    if eng.dask_address:
        return f"dask (scheduler {eng.dask_address})"
    return f"dask (LocalCluster: {eng.dask_workers} worker processes x {eng.dask_threads_per_worker} threads)"
