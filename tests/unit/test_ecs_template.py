"""ECS work-pool template: rendered from hsi.yaml, resolved by prefect-aws's own job configuration."""

from __future__ import annotations

import asyncio
import json
import shlex
import tomllib
import uuid

import pytest
import yaml
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

from hsi.config import load_config
from hsi.errors import ConfigError
from hsi_pipeline.deployments.ecs.render import TEMPLATE_PATH, load_template, main, render_template
from hsi_pipeline.deployments.generate import generate

ECS = {
    "image": "123456789012.dkr.ecr.us-west-2.amazonaws.com/hsi-pipeline:0.1.0",
    "cluster": "hsi-cluster",
    "cpu": 2048,
    "memory": 8192,
    "execution_role_arn": "arn:aws:iam::123456789012:role/hsi-exec",
    "task_role_arn": "arn:aws:iam::123456789012:role/hsi-task",
    "subnets": ["subnet-0a1", "subnet-0b2"],
    "security_groups": ["sg-0c3"],
    "vpc_id": "vpc-0d4",
    "env": {"HSI_CONFIG": "/opt/hsi/hsi.yaml", "AWS_REGION": "us-west-2"},
}


@pytest.fixture
def ecs_config(tmp_path):
    path = tmp_path / "hsi.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "storage": {"root": str(tmp_path / "assets")},
                "catalog": {"url": str(tmp_path / "catalog")},
                "engine": {"work_pool": "hsi-ecs", "ecs": ECS},
            }
        )
    )
    return path


def test_template_matches_installed_prefect_aws():
    """Same job configuration keys and variables as the installed worker's default (no drift)."""
    ours = load_template()
    theirs = ECSWorker.get_default_base_job_template()
    assert set(ours["job_configuration"]) == set(theirs["job_configuration"])
    assert set(ours["variables"]["properties"]) == set(theirs["variables"]["properties"])
    assert ours["job_configuration"] == theirs["job_configuration"]


@pytest.mark.usefixtures("prefect_harness")
def test_render_lands_in_job_configuration(ecs_config):
    doc = render_template(load_config(ecs_config))
    job = asyncio.run(ECSJobConfiguration.from_template_and_values(doc, {}))

    taskdef = job.task_definition
    assert taskdef["containerDefinitions"][0]["image"] == ECS["image"]
    assert int(taskdef["cpu"]) == 2048 and int(taskdef["memory"]) == 8192
    assert taskdef["executionRoleArn"] == ECS["execution_role_arn"]
    assert job.env["HSI_CONFIG"] == "/opt/hsi/hsi.yaml" and job.env["AWS_REGION"] == "us-west-2"
    assert job.env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "hsi"  # template default kept
    run = job.task_run_request
    assert run["cluster"] == "hsi-cluster" and job.cluster == "hsi-cluster"
    assert run["overrides"]["taskRoleArn"] == ECS["task_role_arn"]
    assert int(run["overrides"]["cpu"]) == 2048 and int(run["overrides"]["memory"]) == 8192
    assert job.vpc_id == "vpc-0d4"
    assert job.network_configuration == {
        "subnets": ["subnet-0a1", "subnet-0b2"],
        "securityGroups": ["sg-0c3"],
        "assignPublicIp": "DISABLED",
    }
    assert job.configure_cloudwatch_logs is True

    # a deployment may still override a variable through job_variables
    over = asyncio.run(ECSJobConfiguration.from_template_and_values(doc, {"cpu": 4096, "memory": 30720}))
    assert int(over.task_definition["cpu"]) == 4096 and int(over.task_definition["memory"]) == 30720


def test_render_requires_vpc_for_subnets(tmp_path):
    cfg = load_config(None, base=tmp_path).model_copy()
    from hsi.config import EcsConfig

    with pytest.raises(ConfigError, match="vpc_id"):
        render_template(EcsConfig(subnets=["subnet-1"]))
    with pytest.raises(ConfigError, match="engine.ecs"):
        render_template(cfg)


def test_render_cli_writes_json(ecs_config, tmp_path, capsys):
    out = tmp_path / "pool.json"
    assert main(["--config", str(ecs_config), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["variables"]["properties"]["image"]["default"] == ECS["image"]
    assert TEMPLATE_PATH.is_file()
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- the image and the template agree (cheap: parses the Dockerfile; no build) ----------------------

ROOT = TEMPLATE_PATH.parents[2]


def _dockerfile(path=ROOT / "Dockerfile"):
    """(instruction, argument) pairs of the final stage, continuation lines joined, comments dropped."""
    lines, cur = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        cur += raw.rstrip()[:-1] + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            ins, _, arg = cur.strip().partition(" ")
            lines.append((ins.upper(), arg.strip()))
            cur = ""
    return lines


def _env(instructions):
    env = {}
    for ins, arg in instructions:
        if ins == "ENV":
            for pair in shlex.split(arg):
                key, _, value = pair.partition("=")
                env[key] = value.replace("$PATH", "<PATH>")
    return env


def test_image_runs_the_ecs_command(ecs_config):
    """What the ECS worker starts (the template's command, default `prefect flow-run execute`, with
    the deployment's pull step to $HSI_PROJECT_DIR) works in the image the Dockerfile builds."""
    ins = _dockerfile()
    kinds = [i for i, _ in ins]
    env = _env(ins)
    # the base is an ARG with the registry default, so a local base can stand in (scripts/image.sh)
    assert ins[0] == ("ARG", "BASE=python:3.11-slim") and ("FROM", "${BASE}") in ins

    # no ENTRYPOINT: the task's command override replaces CMD and runs as is
    assert "ENTRYPOINT" not in kinds
    assert json.loads(dict(ins)["CMD"]) == ["hsi", "--help"]
    tpl = load_template()
    job = tpl["job_configuration"]
    assert job["command"] == "{{ command }}"
    assert job["task_run_request"]["overrides"]["containerOverrides"][0]["command"] == "{{ command }}"
    assert tpl["variables"]["properties"]["command"]["default"] is None  # -> the worker's default
    from prefect.workers.base import BaseJobConfiguration

    command = shlex.split(BaseJobConfiguration._base_flow_run_command())
    assert command == ["prefect", "flow-run", "execute"]
    # `prefect` is on PATH: the venv's bin leads PATH, the venv is made, prefect is a dependency
    venv = env["VIRTUAL_ENV"]
    assert env["PATH"].split(":")[0] == f"{venv}/bin"
    assert any(i == "RUN" and f"python3 -m venv {venv}" in a for i, a in ins)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("prefect") and not d.startswith("prefect-") for d in deps)

    # working dir = HSI_PROJECT_DIR = where the pull step goes and the flows are copied
    workdir = dict(ins)["WORKDIR"]
    assert workdir == env["HSI_PROJECT_DIR"] == "/opt/hsi"
    generated = generate(load_config(ecs_config))  # the deployments of an ECS pool
    assert generated["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $HSI_PROJECT_DIR }}"}}
    ]
    assert all("working_dir" not in d["work_pool"]["job_variables"] for d in generated["deployments"])
    copied = {a.split()[-1].removeprefix("./") for i, a in ins if i == "COPY"}
    for dep in generated["deployments"]:
        top = dep["entrypoint"].split("/")[0]
        assert top in copied, f"{dep['entrypoint']}: {top}/ not copied into {workdir}"
    # every package directory pip installs from is copied before `pip install --no-deps .`
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert set(package_dirs.values()) | {"hsi"} <= copied

    # env the template sets and the image sets agree; the image runs as a user, not root
    assert (
        tpl["variables"]["properties"]["env"]["default"]["PREFECT_LOGGING_EXTRA_LOGGERS"]
        == env["PREFECT_LOGGING_EXTRA_LOGGERS"]
    )
    assert dict(ins)["USER"] == "hsi"
    # the build context never carries the stack's configuration or its credentials
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"hsi.stack.yaml", ".stack", ".venv", "tests"} <= set(ignored)


@pytest.mark.usefixtures("prefect_harness")
def test_local_run_resolves_like_the_worker(tmp_path):
    """The podman run of a flow run: command and env from prefect-aws's own job configuration,
    secrets refused as -e values, credentials mounted, the stack config rewritten for the container."""
    from prefect.client.schemas.objects import FlowRun

    from hsi_pipeline.deployments.ecs.local_run import (
        CONTAINER_CONFIG,
        CONTAINER_CREDENTIALS,
        EcsJob,
        container_config,
        podman_run_argv,
    )

    doc = render_template(_ecs("localhost/hsi-pipeline:0.1.0"))
    cfg = asyncio.run(
        ECSJobConfiguration.from_template_and_values(doc, {"env": {"HSI_CONFIG": CONTAINER_CONFIG}})
    )
    run = FlowRun(flow_id=uuid.uuid4())
    cfg.prepare_for_flow_run(run)
    job = EcsJob(image=cfg.task_definition["containerDefinitions"][0]["image"], command=shlex.split(cfg.command),
                 env={k: str(v) for k, v in cfg.env.items() if v is not None})  # fmt: skip
    assert job.image == "localhost/hsi-pipeline:0.1.0"
    assert job.command == ["prefect", "flow-run", "execute"]
    assert job.env["PREFECT__FLOW_RUN_ID"] == str(run.id) and job.env["HSI_CONFIG"] == CONTAINER_CONFIG
    assert job.env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "hsi"

    argv = podman_run_argv(job, name="t", mounts={"/tmp/c.yaml": CONTAINER_CONFIG}, secrets=["s,type=mount"])
    assert argv[:3] == ["podman", "--runtime", "runc"] and argv[-4:] == [
        "localhost/hsi-pipeline:0.1.0",
        *job.command,
    ]
    assert argv[argv.index("--network") : argv.index("--network") + 2] == ["--network", "host"]
    assert f"PREFECT__FLOW_RUN_ID={run.id}" in argv and "/tmp/c.yaml:/run/hsi/hsi.yaml:ro" in argv
    with pytest.raises(ConfigError, match="PREFECT_API_KEY"):
        podman_run_argv(EcsJob(job.image, job.command, {**job.env, "PREFECT_API_KEY": "x"}), name="t")

    stack = tmp_path / "hsi.stack.yaml"
    stack.write_text(yaml.safe_dump({
        "storage": {"root": "s3://hsi/assets", "endpoint_url": "http://127.0.0.1:8333", "aws_profile": "hsi-stack",
                    "shared_credentials_file": "/work/x/.stack/aws-credentials"},
        "catalog": {"url": "http://127.0.0.1:8082"}, "work_dir": "/work/x/.stack/work",
        "prefect_api_url": "http://127.0.0.1:4200/api"}))  # fmt: skip
    inside = container_config(stack, "image-ab")
    assert inside["storage"]["root"] == "s3://hsi/test/image-ab"
    assert inside["storage"]["shared_credentials_file"] == CONTAINER_CREDENTIALS
    assert inside["work_dir"] == "/tmp/hsi/work" and inside["catalog"] == {"url": "http://127.0.0.1:8082"}
    assert "/work/x" not in json.dumps(inside)


def _ecs(image):
    from hsi.config import EcsConfig

    return EcsConfig(image=image)
