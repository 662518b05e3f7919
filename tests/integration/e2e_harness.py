"""A private, event-driven pipeline for end-to-end tests and the latency benchmark.

Real processes only: a Prefect server (own PREFECT_HOME, free port; restartable on the same port
to simulate an outage), a process worker polling every second from the repository directory, a
moto server (S3 + SQS with bucket notifications), the generated deployments applied with
``hsi deploy --apply`` machinery, and the bridge consumer in a thread. Outputs go to the shared
stack's SeaweedFS (private prefix) and STAC API. No sleeps as synchronisation: callers poll with
deadlines (:func:`wait_for`).
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from hsi_pipeline.deployments.local.warm import worker_command

try:
    from tests.integration.moto_server import free_port, stop_process, tool_bin, wait_for
except ImportError:  # pragma: no cover
    from moto_server import free_port, stop_process, tool_bin, wait_for  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[2]
MOTO_PROFILE = "moto"
POOL = "hsi-process"


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_", "HSI_"))}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", **extra}


@dataclass
class PrivatePrefect:
    """A Prefect server + one process worker of pool ``hsi-process`` (worker polls every 1 s)."""

    home: Path
    port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    starter: subprocess.Popen[bytes] | None = None
    db_url: str | None = None  # PostgreSQL (as `hsi stack up` runs it); None: SQLite under ``home``

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _env(self) -> dict[str, str]:
        db = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": self.db_url} if self.db_url else {}
        return clean_env({"PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api,
                           "PREFECT_SERVER_API_PORT": str(self.port), "PREFECT_UI_ENABLED": "false",
                           "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
                           # SQLite under many concurrent flow runs: wait for the lock instead of a 503
                           "PREFECT_SERVER_DATABASE_TIMEOUT": "60", **db})  # fmt: skip

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_server(self, timeout: float = 120.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        server = subprocess.Popen([tool_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(self.port)], env=self._env(), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        self.server = server
        wait_for(lambda: server.poll() is None and self.healthy(), timeout=timeout, interval=0.5,
                 what=f"prefect server on {self.port}")  # fmt: skip

    def stop_server(self) -> None:
        if self.server is not None:
            stop_process(self.server, twice=True)

    def worker_online(self) -> bool:
        r = httpx.post(f"{self.api}/work_pools/{POOL}/workers/filter", json={}, timeout=5)
        return r.status_code == 200 and any(w.get("status") == "ONLINE" for w in r.json())

    @property
    def starter_socket(self) -> Path:
        return self.home / "flow-starter.sock"

    def start_worker(self, warm: bool = True, query_seconds: float | None = None) -> None:
        """The pool's worker; with ``warm``, runs start through a warm flow-run starter
        (deployments/local/warm.py) that configures the pool first, as ``hsi stack up`` does.
        ``query_seconds``: the worker's poll interval (default 1 s; ``hsi stack up`` polls faster, on
        PostgreSQL)."""
        poll = str(query_seconds if query_seconds is not None else 1)
        env = {**self._env(), "PREFECT_WORKER_QUERY_SECONDS": poll, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
               "PREFECT_WORKER_PREFETCH_SECONDS": "2", "PREFECT_LOGGING_LEVEL": "INFO"}  # fmt: skip
        if warm and self.starter is None:
            slog = (self.home / "flow-starter.log").open("ab")
            starter = subprocess.Popen([tool_bin("python"), str(ROOT / "deployments" / "local" / "warm.py"), "serve",
                                        "--socket", str(self.starter_socket), "--pool", POOL], env=env,
                                       cwd=ROOT, stdout=slog, stderr=subprocess.STDOUT)  # fmt: skip
            self.starter = starter
            wait_for(lambda: starter.poll() is None and self.starter_socket.is_socket(), timeout=90,
                     interval=0.25, what="warm flow-run starter")  # fmt: skip
        log = (self.home / "worker.log").open("ab")
        from hsi_pipeline.deployments.local.prefect_services import worker_limit

        prefect = worker_command([]) if warm else [tool_bin("prefect")]  # warm: shared TLS contexts too
        self.worker = subprocess.Popen([*prefect, "worker", "start", "--pool", POOL, "--type", "process",
                                        "--name", "e2e-worker", *worker_limit()], env=env, cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(self.worker_online, timeout=90, interval=0.5, what="worker online")

    def stop(self) -> None:
        if self.worker is not None:
            stop_process(self.worker, twice=True)
        if self.starter is not None:
            stop_process(self.starter)
        self.stop_server()


@contextmanager
def stack_prefect_db(stack_root: Path, name: str) -> Iterator[str]:
    """A private Prefect server's database in the running stack's PostgreSQL (as `hsi stack up` runs
    its own server: bursts of runs make SQLite answer "database is locked"); dropped on exit."""
    from hsi_pipeline.deployments.local.prefect_services import (
        drop_prefect_db,
        ensure_prefect_db,
        prefect_db_url,
    )
    from hsi_pipeline.deployments.local.stack import Layout

    layout = Layout.default(stack_root)
    ensure_prefect_db(layout, name)
    try:
        yield prefect_db_url(layout, json.loads(layout.secrets_file.read_text()), name)
    finally:
        drop_prefect_db(layout, name)


def write_moto_credentials(path: Path) -> Path:
    """A shared credentials file with moto's dummy keys under profile ``moto`` (not secrets)."""
    cp = configparser.ConfigParser()
    cp[MOTO_PROFILE] = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    with path.open("w") as f:
        cp.write(f)
    return path


def landing_bucket(moto: str, name: str) -> tuple[Any, Any, str]:
    """A moto bucket notifying an SQS queue directly: (s3 client, sqs client, queue url)."""
    kw = {"endpoint_url": moto, "region_name": "us-east-1", "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}  # fmt: skip
    s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
    url = sqs.create_queue(QueueName=f"{name}-q", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=name)
    s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})  # fmt: skip
    return s3, sqs, url


def pipeline_config(path: Path, *, stack: dict[str, Any], moto: str, bucket: str, api: str,
                    products: list[dict[str, Any]], run_id: str) -> Path:  # fmt: skip
    """hsi.yaml: outputs on the stack's S3 (private prefix) + STAC API, raw objects on moto."""
    creds = write_moto_credentials(path.parent / "moto-credentials")
    cfg = {
        "storage": {"root": f"s3://{stack['s3_bucket']}/test/e2e-{run_id}", "endpoint_url": stack["s3_endpoint"],
                    "region": stack["s3_region"], "aws_profile": stack["aws_profile"],
                    "shared_credentials_file": stack["shared_credentials_file"]},
        "catalog": {"url": stack["stac_api"]},
        "inputs": [{"prefix": f"s3://{bucket}", "endpoint_url": moto, "region": "us-east-1",
                    "aws_profile": MOTO_PROFILE, "shared_credentials_file": str(creds)}],
        "sources": {"aviris-ng": {"products": products}},
        "work_dir": str(path.parent / "work"),
        "prefect_api_url": api,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Bridge:
    """The bridge consumer (real SqsConsumer + BridgeProcessor) in a thread."""

    def __init__(self, cfg: Any, sqs: Any, s3: Any, queue: str, api: str) -> None:
        from hsi.bridge import rules_from_config
        from hsi_pipeline.deployments.bridge.consumer import BridgeProcessor, PrefectEvents, SqsConsumer

        self.processor = BridgeProcessor(s3, PrefectEvents(api, timeout_s=5), rules=rules_from_config(cfg),
                                         catalog_href=cfg.catalog.url)  # fmt: skip
        self.consumer = SqsConsumer(sqs, queue, self.processor, wait_s=1, backoff_s=(0.5, 2.0))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop_event,), daemon=True)

    def __enter__(self) -> Bridge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)


# ------------------------------------------------------------------------------------- API reads


def prefect_api(method: str, url: str, *, retries: int = 6, **kw: Any) -> httpx.Response:
    """One call to a Prefect server's REST API, retried on 503 as Prefect's own client does: a
    SQLite-backed server answers 503 ("retry") when the database is busy under concurrent runs."""
    kw.setdefault("timeout", 10)
    for attempt in range(retries):
        r = httpx.request(method, url, **kw)
        if r.status_code != 503 or attempt == retries - 1:
            return r
        time.sleep(0.25 * 2**attempt)  # backoff before a retry (not synchronisation)
    raise AssertionError("unreachable")


def flow_runs(
    api: str, *, deployment: str | None = None, flow_name: str | None = None
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"limit": 200, "sort": "EXPECTED_START_TIME_ASC"}
    if flow_name:
        body["flows"] = {"name": {"any_": [flow_name]}}
    if deployment:
        flow, dep = deployment.split("/")
        body["flows"] = {"name": {"any_": [flow]}}
        body["deployments"] = {"name": {"any_": [dep]}}
    r = prefect_api("POST", f"{api}/flow_runs/filter", json=body)
    r.raise_for_status()
    return r.json()


ENDED = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def runs_ended(list_runs: Callable[[], list[dict[str, Any]]], n: int, *, timeout: float = 120.0,
               interval: float = 1.0, what: str = "the runs to end") -> list[dict[str, Any]]:  # fmt: skip
    """``list_runs()`` once it gives at least ``n`` runs and every one has reached a final state. A run
    publishes its items just before its own final state is set, so a test that saw the items waits
    here before asserting on the runs."""

    def ended() -> list[dict[str, Any]] | None:
        rs = list_runs()
        return rs if len(rs) >= n and all(r["state_type"] in ENDED for r in rs) else None

    return wait_for(ended, timeout=timeout, interval=interval, what=what)


def events(api: str, name: str, resource_id: str) -> list[dict[str, Any]]:
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [resource_id]}}, "limit": 50}
    r = prefect_api("POST", f"{api}/events/filter", json=body)
    r.raise_for_status()
    return r.json()["events"]


def ng_scene_id() -> str:
    n = uuid.uuid4().int
    return f"ang2025{n % 12 + 1:02d}{n // 12 % 28 + 1:02d}t{n // 400 % 24:02d}{n // 10000 % 60:02d}{n // 10**6 % 60:02d}"


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]
