"""ECS work-pool template: rendered from hsi.yaml, resolved by prefect-aws's own job configuration."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from prefect_aws.workers.ecs_worker import ECSJobConfiguration, ECSWorker

from hsi.config import load_config
from hsi.errors import ConfigError
from hsi_pipeline.deployments.ecs.render import TEMPLATE_PATH, load_template, main, render_template

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
