"""Run one flow run inside the hsi-pipeline image the way the ECS work pool would, with podman.

prefect-aws's ECS worker turns a flow run into an ECS task: it resolves the pool's base job template
with the deployment's job variables (``ECSJobConfiguration``), calls ``prepare_for_flow_run`` (which
adds ``PREFECT__FLOW_RUN_ID``, the worker's Prefect settings such as ``PREFECT_API_URL``, and the
default command ``prefect flow-run execute``) and starts the image with that command and env. This
module does the same resolution and starts the container with ``podman run --network host``
instead of ECS, so the image, its working directory, the deployment's pull step and the flow are
exercised without AWS. Secrets go in as podman secrets (the ECS analogue: task secrets), never as
``-e`` values or printed.

``python -m hsi_pipeline.deployments.ecs.local_run --stack-config hsi.stack.yaml`` (what
``scripts/image.sh check`` runs) creates an ``ecs`` pool from the rendered template, a ``demo``
deployment on it, a flow run of a small synthetic scene, runs it in the image against the local
stack and checks the run COMPLETED and its raw, activated and NDVI items are in the catalog with
their assets in S3.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hsi.config import EcsConfig, load_config
from hsi.errors import ConfigError
from hsi_pipeline.deployments.ecs.render import render_template

__all__ = [
    "CONTAINER_CONFIG",
    "CONTAINER_CREDENTIALS",
    "PODMAN_GLOBAL_FLAGS",
    "PODMAN_RUN_FLAGS",
    "SECRET_ENV",
    "EcsJob",
    "container_config",
    "ecs_job",
    "main",
    "podman_run_argv",
]

#: where the container finds its configuration and the S3 credentials (mounted at run time)
CONTAINER_CONFIG = "/run/hsi/hsi.yaml"
CONTAINER_CREDENTIALS = "/run/secrets/aws-credentials"
#: env values that are secrets: passed as podman secrets (ECS: task secrets), never with -e
SECRET_ENV = frozenset(
    {"PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
)
#: this machine's podman needs runc (crun fails in cgroups hybrid mode) and ulimits within the
#: host's hard limits (podman's defaults fail with "setrlimit ... Operation not permitted")
PODMAN_GLOBAL_FLAGS = tuple(shlex.split(os.environ.get("HSI_PODMAN_GLOBAL_FLAGS", "--runtime runc")))
PODMAN_RUN_FLAGS = tuple(
    shlex.split(os.environ.get("HSI_PODMAN_RUN_FLAGS", "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"))
)
DEMO_ENTRYPOINT = "flows/demo.py:demo"
PULL_STEPS = [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $HSI_PROJECT_DIR }}"}}]


@dataclass(frozen=True)
class EcsJob:
    """What the ECS worker would start: image, command (argv) and environment."""

    image: str
    command: list[str]
    env: dict[str, str]


async def _ecs_job(api_url: str, flow_run_id: uuid.UUID) -> EcsJob:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            if run.deployment_id is None:
                raise ConfigError(f"flow run {flow_run_id} has no deployment (nothing for a worker to run)")
            dep = await client.read_deployment(run.deployment_id)
            if dep.work_pool_name is None:
                raise ConfigError(f"deployment {dep.name!r} has no work pool")
            pool = await client.read_work_pool(dep.work_pool_name)
            flow = await client.read_flow(run.flow_id)
            # BaseWorker._get_configuration: the pool's template + the deployment's (and run's) variables
            values = {**(dep.job_variables or {}), **(run.job_variables or {})}
            job: Any = await ECSJobConfiguration.from_template_and_values(pool.base_job_template, values)
            job.prepare_for_flow_run(run, dep, flow, pool)
    image = job.task_definition["containerDefinitions"][0]["image"]
    command = shlex.split(job.command or "")
    return EcsJob(image=image, command=command, env={k: str(v) for k, v in job.env.items() if v is not None})


def ecs_job(api_url: str, flow_run_id: uuid.UUID | str) -> EcsJob:
    """Resolve a flow run's ECS job (image, command, env) as prefect-aws's ECS worker does."""
    return asyncio.run(_ecs_job(api_url, uuid.UUID(str(flow_run_id))))


def podman_run_argv(
    job: EcsJob,
    *,
    name: str,
    mounts: Mapping[str, str] = {},
    secrets: Sequence[str] = (),
    podman: str = "podman",
) -> list[str]:
    """``podman run`` of ``job`` on the host network; ``mounts`` host file -> container path (read
    only), ``secrets`` ready ``--secret`` specs. Secret env names of :data:`SECRET_ENV` are refused:
    pass them as secrets."""
    leaked = sorted(SECRET_ENV & set(job.env))
    if leaked:
        raise ConfigError(f"secret env {', '.join(leaked)}: pass as podman secrets, not -e")
    argv = [
        podman,
        *PODMAN_GLOBAL_FLAGS,
        "run",
        "--rm",
        "--network",
        "host",
        "--name",
        name,
        *PODMAN_RUN_FLAGS,
    ]
    for key in sorted(job.env):
        argv += ["-e", f"{key}={job.env[key]}"]
    for host, target in mounts.items():
        argv += ["-v", f"{host}:{target}:ro"]
    for spec in secrets:
        argv += ["--secret", spec]
    return [*argv, job.image, *job.command]


def container_config(stack_config: Path | str, root_suffix: str) -> dict[str, Any]:
    """The stack's configuration as seen from inside the container: same S3 endpoint, STAC API and
    Prefect server (host network), credentials at :data:`CONTAINER_CREDENTIALS`, a private storage
    prefix, scratch under /tmp."""
    doc = yaml.safe_load(Path(stack_config).read_text()) or {}
    storage = dict(doc.get("storage") or {})
    if not str(storage.get("root", "")).startswith("s3://") or not storage.get("shared_credentials_file"):
        raise ConfigError(
            f"{stack_config}: not a stack configuration (storage on s3:// with a credentials file)"
        )
    storage["root"] = storage["root"].rstrip("/").rsplit("/", 1)[0] + f"/test/{root_suffix}"
    storage["shared_credentials_file"] = CONTAINER_CREDENTIALS
    return {**doc, "storage": storage, "work_dir": "/tmp/hsi/work"}


def _podman(*args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["podman", *args], check=check, capture_output=True, input=input)


async def _create_run(api_url: str, pool: str, image: str, parameters: dict[str, Any]) -> uuid.UUID:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings

    template = render_template(EcsConfig(image=image))
    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            try:
                await client.create_work_pool(
                    WorkPoolCreate(name=pool, type="ecs", base_job_template=template)
                )
            except ObjectAlreadyExists:
                await client.delete_work_pool(pool)
                await client.create_work_pool(
                    WorkPoolCreate(name=pool, type="ecs", base_job_template=template)
                )
            flow_id = await client.create_flow_from_name("demo")
            dep_id = await client.create_deployment(
                flow_id=flow_id,
                name="image-check",
                entrypoint=DEMO_ENTRYPOINT,
                work_pool_name=pool,
                job_variables={"env": {"HSI_CONFIG": CONTAINER_CONFIG}},
                pull_steps=PULL_STEPS,
                enforce_parameter_schema=False,  # the flow validates them (validate_parameters=True)
                tags=["hsi", "image-check"],
            )
            run = await client.create_flow_run_from_deployment(dep_id, parameters=parameters)
            return run.id


async def _final_state(api_url: str, flow_run_id: uuid.UUID) -> tuple[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
    state = run.state
    return (state.type.value if state else "NONE", (state.message or "") if state else "")


async def _delete_pool(api_url: str, pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, WorkPoolFilter, WorkPoolFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            deps = await client.read_deployments(
                deployment_filter=DeploymentFilter(),
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            )
            for dep in deps:
                await client.delete_deployment(dep.id)
            await client.delete_work_pool(pool)


def _secret_values(credentials: Path) -> list[str]:
    """The values of a shared credentials file (to prove they appear nowhere they should not)."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(credentials)
    return [v for s in parser.sections() for k, v in parser[s].items() if "key" in k or "token" in k]


def _run_streaming(argv: list[str]) -> tuple[int, str]:
    """Run ``argv``, echo its output as it comes, return (exit code, output)."""
    out: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            out.append(line)
    return proc.returncode, "".join(out)


def _image_metadata(image: str) -> str:
    """The image's configuration and build history (env, commands): what a registry would expose."""
    inspect = _podman("image", "inspect", image).stdout.decode()
    history = _podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout.decode()
    return inspect + history


def _check_catalog(host_config: dict[str, Any], scene: str, tmp: Path) -> list[str]:
    """The demo's items exist in the stack's catalog with their assets under the run's private
    prefix, and those objects exist in S3. Returns one line per item."""
    from hsi.catalog.base import derives_from
    from hsi.events import raw_collection, raw_item_id
    from hsi.services import Services
    from hsi.stac.product import product_collection, product_item_id

    path = tmp / "host.yaml"
    path.write_text(yaml.safe_dump(host_config))
    svc = Services.from_config(load_config(path))
    root = svc.store.root.rstrip("/") + "/"
    lines = []
    scene_item = raw_item_id("aviris-ng", scene)
    wanted = [
        (raw_collection("aviris-ng"), scene_item, None),
        ("aviris-ng-l2", scene_item, "cube"),
        (product_collection("index:NDVI"), product_item_id(scene_item, "index:NDVI"), None),
    ]
    for collection, item_id, key in wanted:
        items = list(svc.catalog.search(collections=[collection], ids=[item_id]))
        if [i.id for i in items] != [item_id]:
            raise AssertionError(f"catalog: {collection}/{item_id} missing (found {[i.id for i in items]})")
        item = items[0]
        if key is None and collection != raw_collection("aviris-ng"):
            key = next(k for k, a in item.assets.items() if (a.roles or []) and "data" in (a.roles or []))
        if key is None:
            lines.append(f"{collection}/{item_id}: indexed ({len(item.assets)} assets)")
            continue
        href = item.assets[key].href
        if not href.startswith(root):
            raise AssertionError(f"{collection}/{item_id}: asset {key} {href} is not under {root}")
        info = svc.store.stat(href)
        if info is None or info.size <= 0:
            raise AssertionError(f"{collection}/{item_id}: asset {href} missing in S3")
        parent = (wanted[0] if collection == "aviris-ng-l2" else wanted[1])[:2]
        if not derives_from(item, *parent):
            raise AssertionError(
                f"{collection}/{item_id}: does not record {parent[0]}/{parent[1]} as its input"
            )
        lines.append(
            f"{collection}/{item_id}: {key} {href} ({info.size} bytes), derived from {parent[0]}/{parent[1]}"
        )
    return lines


def run_check(stack_config: Path, image: str, *, width: int, height: int) -> int:
    """Create, run in the image, and check one demo flow run; 0 when it COMPLETED with its items."""
    host = yaml.safe_load(stack_config.read_text()) or {}
    api = host.get("prefect_api_url") or os.environ.get("PREFECT_API_URL")
    if not api:
        raise ConfigError(f"{stack_config}: no prefect_api_url (run `hsi stack up` first)")
    creds = Path(host.get("storage", {}).get("shared_credentials_file", ""))
    if not creds.is_file():
        raise ConfigError(f"{creds}: the stack's S3 credentials file is missing (run `hsi stack up`)")
    tag = uuid.uuid4().hex[:8]
    seed = random.randint(100_000, 2_000_000)  # a scene id no other run uses
    pool = f"hsi-image-check-{tag}"
    cfg = container_config(stack_config, f"image-{tag}")
    secret = f"hsi-image-aws-{tag}"
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hsi-image-") as d:
        tmp = Path(d)
        cfg_file = tmp / "hsi.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg))
        cfg_file.chmod(0o644)  # read by the image's user (uid 1000); holds no secret
        params = {"width": width, "height": height, "seed": seed, "products": ["index:NDVI"]}
        run_id = asyncio.run(_create_run(api, pool, image, params))
        print(f"flow run {run_id} (deployment demo/image-check on ecs pool {pool}), scene seed {seed}")
        try:
            job = ecs_job(api, run_id)
            if job.image != image:
                raise ConfigError(f"the job template resolved image {job.image!r}, expected {image!r}")
            _podman("secret", "create", secret, str(creds))
            argv = podman_run_argv(
                job,
                name=f"hsi-flow-{tag}",
                mounts={str(cfg_file): CONTAINER_CONFIG},
                secrets=[f"{secret},type=mount,target={Path(CONTAINER_CREDENTIALS).name},uid=1000,mode=0400"],
            )
            print("$ " + shlex.join(argv), flush=True)
            t1 = time.monotonic()
            rc, output = _run_streaming(argv)
            secs = time.monotonic() - t1
            state, message = asyncio.run(_final_state(api, run_id))
            print(f"container exit {rc} after {secs:.1f} s; flow run {state} {message}".rstrip())
            if state != "COMPLETED":
                return 1
            host_cfg = {**host, "storage": {**host["storage"], "root": cfg["storage"]["root"]}}
            from hsi.sources.synthetic import synthetic_scene_id

            for line in _check_catalog(host_cfg, synthetic_scene_id("aviris-ng", seed), tmp):
                print(line)
            values = _secret_values(creds)
            exposed = [
                where
                for where, text in (("container log", output), ("image metadata", _image_metadata(image)))
                if any(v in text for v in values)
            ]
            if not values or exposed:
                raise AssertionError(f"credentials found in: {', '.join(exposed) or '(no values read)'}")
            print(f"credentials ({len(values)} values): not in the container log nor the image metadata")
        finally:
            _podman("secret", "rm", secret, check=False)
            asyncio.run(_delete_pool(api, pool))
    print(f"image check passed in {time.monotonic() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hsi_pipeline.deployments.ecs.local_run",
        description="Run a demo flow run inside the image as the ECS work pool would (podman, host network).",
        epilog="Example: python -m hsi_pipeline.deployments.ecs.local_run --stack-config hsi.stack.yaml "
        "--image localhost/hsi-pipeline:0.1.0",
    )
    ap.add_argument("--stack-config", default="hsi.stack.yaml", help="written by `hsi stack up`")
    ap.add_argument("--image", default="localhost/hsi-pipeline:0.1.0")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--height", type=int, default=48)
    args = ap.parse_args(argv)
    try:
        return run_check(Path(args.stack_config), args.image, width=args.width, height=args.height)
    except (ConfigError, AssertionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        print(f"error: {shlex.join(e.cmd)}: {err[-1] if err else e.returncode}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
