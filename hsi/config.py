"""The declarative pipeline configuration (``hsi.yaml``): pydantic models, loading, clear errors.

Everything has an embedded default: local directory storage and a static catalog under
``./hsi-data``, threads as the task runner. A configuration file only says what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hsi.errors import ConfigError

DEFAULT_DATA_DIR = "hsi-data"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Model):
    """Where assets (COGs, quicklooks, raw files) are written."""

    root: str = Field(default=f"./{DEFAULT_DATA_DIR}/assets", description="Local directory or s3://bucket/prefix")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (S3-compatible servers)")
    region: str | None = None
    aws_profile: str | None = Field(default=None, description="AWS profile name for credentials")
    shared_credentials_file: str | None = Field(
        default=None, description="AWS shared credentials file holding the profile (no secrets in this file)"
    )
    credentials_block: str | None = Field(default=None, description="prefect-aws AwsCredentials block name")
    public_base_url: str | None = Field(
        default=None, description="https base URL used for asset hrefs instead of s3:// URIs"
    )


class CatalogAuth(_Model):
    type: Literal["bearer", "basic"]
    token_env: str | None = Field(default=None, description="env var holding the bearer token")
    username_env: str | None = None
    password_env: str | None = None


class CatalogConfig(_Model):
    """Where items are registered: a static catalog (path or s3:// prefix) or a STAC API URL."""

    url: str = Field(default=f"./{DEFAULT_DATA_DIR}/catalog")
    auth: CatalogAuth | None = None
    timeout_s: float = 30.0
    retries: int = 3


class ProductRun(_Model):
    """One product to run on every activated scene of a source."""

    product: str = Field(description="product name, e.g. index:NDVI, oil-spill, tree-mortality")
    params: dict[str, Any] = Field(default_factory=dict, description="product parameters (validated by the product)")


class SourceConfig(_Model):
    """Per source: which object keys are its scenes (bridge) and which products follow activation."""

    patterns: list[str] | None = Field(default=None, description="glob patterns of raw object keys; None = defaults")
    products: list[ProductRun] = Field(default_factory=list)
    activate: bool = Field(default=True, description="activate new scenes of this source automatically")


class EcsConfig(_Model):
    """Values of the ECS work pool job template (prefect-aws)."""

    image: str = "hsi-pipeline:latest"
    cluster: str | None = None
    cpu: int = 4096
    memory: int = 16384
    execution_role_arn: str | None = None
    task_role_arn: str | None = None
    subnets: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class EngineConfig(_Model):
    """How flows execute their tasks."""

    task_runner: Literal["threads", "dask"] = "threads"
    max_workers: int = Field(default=4, ge=1, description="threads of the thread pool runner")
    dask_address: str | None = Field(default=None, description="address of an existing distributed scheduler")
    dask_workers: int = Field(default=2, ge=1, description="workers of a local Dask cluster")
    dask_threads_per_worker: int = Field(default=1, ge=1)
    work_pool: str = Field(default="hsi-process", description="work pool deployments run on")
    ecs: EcsConfig | None = None


class PipelineConfig(_Model):
    storage: StorageConfig = StorageConfig()
    catalog: CatalogConfig = CatalogConfig()
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    engine: EngineConfig = EngineConfig()
    work_dir: str = Field(default=f"./{DEFAULT_DATA_DIR}/work", description="scratch space for extraction/COG temp")
    prefect_api_url: str | None = Field(default=None, description="Prefect API used by deployments/events")
    extra: dict[str, Any] = Field(default_factory=dict)

    def resolve_paths(self, base: Path) -> PipelineConfig:
        """Make relative local paths absolute against ``base`` (the config file's directory or cwd)."""

        def fix(p: str) -> str:
            if "://" in p or Path(p).is_absolute():
                return p
            return str((base / p).resolve())

        return self.model_copy(
            update={
                "storage": self.storage.model_copy(update={"root": fix(self.storage.root)}),
                "catalog": self.catalog.model_copy(update={"url": fix(self.catalog.url)}),
                "work_dir": fix(self.work_dir),
            }
        )


def load_config(path: str | Path | None = None, *, base: Path | None = None) -> PipelineConfig:
    """Load and validate a configuration file; ``None`` gives the embedded default.

    Relative paths resolve against the current directory for the default and against the file's
    directory for a file. Errors name the file, the field and the reason.
    """
    if path is None:
        return PipelineConfig().resolve_paths(base or Path.cwd())
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read configuration: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        msgs = [f"{p}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("\n".join(msgs)) from e
    return cfg.resolve_paths(base or p.resolve().parent)
