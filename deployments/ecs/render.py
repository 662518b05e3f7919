"""Fill the ECS work-pool base job template from the ``engine.ecs`` section of ``hsi.yaml``.

The template (``base-job-template.json`` next to this file) is prefect-aws's ECS worker template
with hsi defaults. Rendering sets the *defaults* of its variables (image, cpu, memory, cluster,
roles, network, env), so every deployment on the pool inherits them and may still override any
of them in ``job_variables``::

    python -m hsi_pipeline.deployments.ecs.render --config hsi.yaml --out hsi-ecs-template.json
    prefect work-pool create hsi-ecs --type ecs --base-job-template hsi-ecs-template.json
    # later changes: prefect work-pool update hsi-ecs --base-job-template hsi-ecs-template.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from hsi.config import EcsConfig, PipelineConfig, load_config
from hsi.errors import ConfigError

__all__ = ["TEMPLATE_PATH", "load_template", "main", "render_template"]

TEMPLATE_PATH = Path(__file__).with_name("base-job-template.json")


def load_template(path: Path | str = TEMPLATE_PATH) -> dict[str, Any]:
    """The base job template (a fresh copy)."""
    doc: dict[str, Any] = json.loads(Path(path).read_text())
    if set(doc) != {"job_configuration", "variables"}:
        raise ConfigError(f"{path}: a base job template has exactly 'job_configuration' and 'variables'")
    return doc


def _network(ecs: EcsConfig) -> tuple[str | None, dict[str, Any]]:
    vpc_id = getattr(ecs, "vpc_id", None)
    if not (ecs.subnets or ecs.security_groups):
        return vpc_id, {}
    if not ecs.subnets:
        raise ConfigError(
            "engine.ecs.security_groups: also set engine.ecs.subnets (awsvpc network configuration)"
        )
    if not vpc_id:
        raise ConfigError(
            "engine.ecs.subnets: also set engine.ecs.vpc_id (the prefect-aws ECS worker checks the "
            "subnets belong to it)"
        )
    public = "ENABLED" if getattr(ecs, "assign_public_ip", False) else "DISABLED"
    return vpc_id, {
        "subnets": list(ecs.subnets),
        "securityGroups": list(ecs.security_groups),
        "assignPublicIp": public,
    }


def render_template(ecs: EcsConfig | PipelineConfig, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The base job template with variable defaults taken from ``ecs`` (``engine.ecs``)."""
    if isinstance(ecs, PipelineConfig):
        if ecs.engine.ecs is None:
            raise ConfigError(
                "engine.ecs: the configuration has no ECS section (image, cluster, roles, network)"
            )
        ecs = ecs.engine.ecs
    doc = copy.deepcopy(base) if base is not None else load_template()
    props: dict[str, Any] = doc["variables"]["properties"]

    def default(name: str, value: Any) -> None:
        if name not in props:
            raise ConfigError(f"base job template has no variable {name!r} (prefect-aws version mismatch?)")
        if value is not None:
            props[name]["default"] = value

    default("image", ecs.image)
    default("cpu", ecs.cpu)
    default("memory", ecs.memory)
    default("cluster", ecs.cluster)
    default("execution_role_arn", ecs.execution_role_arn)
    default("task_role_arn", ecs.task_role_arn)
    if ecs.execution_role_arn:  # the execution role is what lets ECS ship container logs
        default("configure_cloudwatch_logs", True)
    vpc_id, network = _network(ecs)
    default("vpc_id", vpc_id)
    if network:
        default("network_configuration", network)
    env = {**props["env"].get("default", {}), **ecs.env}
    default("env", env)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hsi_pipeline.deployments.ecs.render", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--config", "-c", help="hsi.yaml with an engine.ecs section (default: $HSI_CONFIG)")
    ap.add_argument("--out", "-o", help="output file (default: stdout)")
    ap.add_argument("--template", default=str(TEMPLATE_PATH), help="base template to fill")
    args = ap.parse_args(argv)
    import os

    try:
        cfg = load_config(args.config or os.environ.get("HSI_CONFIG") or None)
        doc = render_template(cfg, load_template(args.template))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(doc, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
