"""Every ``--help`` ends with a working example, and every example runs.

The examples are read from the command tree itself (the ``Example: `hsi ...``` paragraph of each
help text), then run in that order through the real ``hsi`` entry point in a temporary directory:
pipeline commands against a private Prefect server, ``hsi stack status`` against the shared stack,
``hsi bridge run`` against a moto SQS queue. ``hsi stack up``/``down`` are the two exceptions: they
would start or stop the shared stack (``hsi stack status`` runs instead).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

try:
    from tests.integration.e2e_harness import PrivatePrefect, clean_env
    from tests.integration.moto_server import aws_env, moto_endpoint
except ImportError:  # pragma: no cover
    from e2e_harness import PrivatePrefect, clean_env  # type: ignore[no-redef]
    from moto_server import aws_env, moto_endpoint  # type: ignore[no-redef]

__all__ = ["aws_env", "moto_endpoint"]  # fixtures re-exported for pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
HSI = str(Path(sys.executable).parent / "hsi")
EXAMPLE = re.compile(r"Examples?:\s*((?:`hsi [^`]+`[\s·,]*)+)\s*$")
NOT_RUN = {("stack", "up"): "starts the shared stack", ("stack", "down"): "would stop the shared stack"}
ORDER = ["synth", "index", "activate", "product", "items", "info", "demo", "run", "products", "config",
         "deploy", "stack", "bridge"]  # fmt: skip


def _tree() -> dict[tuple[str, ...], Any]:
    from typer.main import get_command

    from hsi_pipeline.cli.main import app

    out: dict[tuple[str, ...], Any] = {}

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        out[path] = cmd
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(get_command(app), ())
    return out


def _examples(cmd: Any) -> list[str]:
    text = " ".join((cmd.help or "").split())
    m = EXAMPLE.search(text)
    return re.findall(r"`(hsi [^`]+)`", m.group(1)) if m else []


def test_every_help_ends_with_an_example() -> None:
    missing = [
        " ".join(path) or "hsi"
        for path, cmd in _tree().items()
        if not getattr(cmd, "commands", None) and not _examples(cmd)  # every leaf command
    ]
    assert _examples(_tree()[()]), "hsi --help has no example"
    assert not missing, f"no example at the end of --help: {missing}"


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePrefect]:
    server = PrivatePrefect(home=tmp_path_factory.mktemp("examples-prefect"))
    server.start_server(timeout=600)  # a busy 2-core machine starts it slowly
    try:
        yield server
    finally:
        server.stop()


def test_every_example_runs(
    prefect: PrivatePrefect, stack: dict[str, Any], moto_endpoint: str, tmp_path: Path
) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    queue = sqs.create_queue(QueueName=f"examples-{tmp_path.name[-12:]}")["QueueUrl"]
    dlq = sqs.create_queue(QueueName=f"examples-dlq-{tmp_path.name[-12:]}")["QueueUrl"]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    s3.create_bucket(Bucket="hsi-raw")  # `hsi backfill s3://hsi-raw/incoming/ --dry-run`
    env = clean_env({"PREFECT_API_URL": prefect.api, "HSI_STACK_DIR": str(stack["state_dir"]),
                      "HSI_BRIDGE_QUEUE_URL": queue, "HSI_BRIDGE_DLQ_URL": dlq,
                      "HSI_SERVER_DIR": str(tmp_path / "server"), "AWS_ENDPOINT_URL": moto_endpoint,
                      "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                      "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
    examples: list[tuple[tuple[str, ...], str]] = []
    for path, cmd in _tree().items():
        if path in NOT_RUN:
            continue
        for ex in _examples(cmd):
            if ex not in (e for _, e in examples):
                examples.append((path, ex))
    rank = {name: i for i, name in enumerate(ORDER)}
    examples.sort(key=lambda pe: rank.get(pe[0][0] if pe[0] else "demo", len(ORDER)))
    assert len(examples) >= 15, examples
    for _path, ex in examples:
        argv = shlex.split(ex)
        p = subprocess.run(
            [HSI, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert p.returncode == 0, f"{ex}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        assert "Traceback" not in p.stderr, f"{ex}:\n{p.stderr[-2000:]}"
        if argv[1] == "demo":  # its second run (before `hsi run` changes oil-spill's parameters)
            _second_demo_is_up_to_date(argv, env, tmp_path)
    assert (tmp_path / "hsi-data" / "catalog" / "catalog.json").is_file()
    assert (tmp_path / "prefect.generated.yaml").is_file() and (tmp_path / "hsi.schema.json").is_file()


def _second_demo_is_up_to_date(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    again = subprocess.run([HSI, *argv[1:]], cwd=cwd, env={**env, "COLUMNS": "200"}, capture_output=True,
                           text=True, timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    rows = [[c.strip() for c in ln.split("│")[1:3]] for ln in again.stdout.splitlines() if ln.count("│") >= 4]
    done = {step: st for step, st in rows if step.startswith(("activate", "product"))}
    assert len(done) == 4 and set(done.values()) == {"skipped (up to date)"}, again.stdout
