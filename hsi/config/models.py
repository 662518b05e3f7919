"""The declarative pipeline configuration (``hsi.yaml``): the pydantic models and field validators.

Everything has an embedded default: local directory storage and a static catalog under
``./hsi-data``, threads as the task runner. A configuration file only says what differs.

:func:`load_config` validates *before any work* and reports **all** problems of a file in one
:class:`~hsi.errors.ConfigError`; each names the file, the line, the field path and what is allowed::

    hsi.yaml:9: sources.aviris-ng.products[0].product: unknown product 'index:NDVX'; did you mean: index:NDVI
    hsi.yaml:3: catalog.url: 'htp:/x' is not a local path, an s3:// prefix or an http(s) URL

Besides types, it checks that sources and products exist (``hsi.sources`` / the product
registry), that product parameters validate against the product's parameter model, that URLs and
roots are well formed, and that no secret is written inline (auth names environment variables,
profiles or blocks).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:  # pragma: no cover
    from hsi.sources.archive import ArchiveLimits

__all__ = [
    "ArchiveLimitsConfig", "CatalogAuth", "CatalogConfig", "EcsConfig", "EngineConfig", "InputConfig", "PipelineConfig", "ProductRun",
    "S3Access", "SourceConfig", "StorageConfig",
]  # fmt: skip

DEFAULT_DATA_DIR = "hsi-data"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
#: key names that would hold a secret value; never allowed in the file
SECRET_KEY = re.compile(r"(secret|password|passwd|token|api[_-]?key|access[_-]?key|session[_-]?key|credential)s?$",
                         re.IGNORECASE)  # fmt: skip
SECRET_HINT = ("secrets are never written in the configuration: name an environment variable "
                "(token_env / username_env / password_env), an AWS profile or a Prefect block instead")  # fmt: skip


# ------------------------------------------------------------------------------------ validators
def _check_http(v: str | None, what: str = "an http(s) URL") -> str | None:
    if v is None:
        return v
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{v!r} is not {what} (expected http://host[:port][/path] or https://...)")
    if u.username or u.password:
        raise ValueError(f"credentials in the URL are not allowed; {SECRET_HINT}")
    return v


def _check_s3(v: str) -> str:
    u = urlsplit(v)
    if not u.netloc or not _BUCKET.match(u.netloc):
        raise ValueError(f"{v!r} is not a valid s3://bucket[/prefix] (bucket: 3-63 of a-z 0-9 . -)")
    return v


def _check_location(v: str, *, http: bool, what: str) -> str:
    """A local path, an s3:// prefix or (when ``http``) an http(s) URL."""
    m = _SCHEME.match(v)
    if v.startswith("s3://"):
        return _check_s3(v)
    if v.startswith("file://"):
        return v
    if http and m and m.group(1).lower() in ("http", "https"):
        return _check_http(v) or v
    if m:  # any other scheme, or a mistyped one: htp:/x, s3:/bucket, http:/host
        raise ValueError(f"{v!r} is not {what}")
    if not v.strip():
        raise ValueError(f"empty value; expected {what}")
    return v


def _check_env_name(v: str | None) -> str | None:
    if v is not None and not _ENV_NAME.match(v):
        raise ValueError(
            f"{v[:4]}... is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*); the value "
            f"itself must stay in the environment ({SECRET_HINT})"
        )
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------- models
class S3Access(_Model):
    """How to reach an S3(-compatible) endpoint; credentials come from profiles/blocks/env, never here."""

    endpoint_url: str | None = Field(default=None, description="S3 endpoint (S3-compatible servers)")
    region: str | None = None
    aws_profile: str | None = Field(default=None, description="AWS profile name for credentials")
    shared_credentials_file: str | None = Field(
        default=None, description="AWS shared credentials file holding the profile (no secrets in this file)"
    )
    credentials_block: str | None = Field(default=None, description="prefect-aws AwsCredentials block name")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return _check_http(v)


class StorageConfig(S3Access):
    """Where assets (COGs, quicklooks, raw files) are written."""

    root: str = Field(
        default=f"./{DEFAULT_DATA_DIR}/assets", description="Local directory or s3://bucket/prefix"
    )
    part_size_mib: int = Field(
        default=64,
        ge=5,
        le=5120,
        description="S3 multipart part size in MiB (uploads above one part are multipart and resumable)",
    )
    public_base_url: str | None = Field(
        default=None, description="https base URL used for asset hrefs instead of s3:// URIs"
    )

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        return _check_location(v, http=False, what="a local directory or an s3://bucket[/prefix]")

    @field_validator("public_base_url")
    @classmethod
    def _public(cls, v: str | None) -> str | None:
        return _check_http(v)


class InputConfig(S3Access):
    """Access to raw objects under an s3:// prefix that is not the storage root (e.g. the landing bucket)."""

    prefix: str = Field(description="s3://bucket[/prefix] the settings apply to (longest prefix wins)")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("s3://"):
            raise ValueError(f"{v!r} is not an s3://bucket[/prefix]")
        return _check_s3(v)


class CatalogAuth(_Model):
    type: Literal["bearer", "basic"]
    token_env: str | None = Field(default=None, description="env var holding the bearer token")
    username_env: str | None = Field(default=None, description="env var holding the basic-auth user")
    password_env: str | None = Field(default=None, description="env var holding the basic-auth password")

    @field_validator("token_env", "username_env", "password_env")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return _check_env_name(v)


class CatalogConfig(_Model):
    """Where items are registered: a static catalog (path or s3:// prefix) or a STAC API URL."""

    url: str = Field(
        default=f"./{DEFAULT_DATA_DIR}/catalog",
        description="static catalog directory, s3://bucket/prefix, or STAC API http(s) URL",
    )
    auth: CatalogAuth | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_location(v, http=True, what="a local path, an s3:// prefix or an http(s) URL")


class ProductRun(_Model):
    """One product to run on every activated scene of a source."""

    product: str = Field(description="product name, e.g. index:NDVI, oil-spill, tree-mortality")
    params: dict[str, Any] = Field(
        default_factory=dict, description="product parameters (validated by the product)"
    )


class ProcessorInput(_Model):
    """One input of an external processor: a band near ``wavelength``, or every good band in
    ``[lo, hi]`` nm, or (``all_good: true``) every good band of the scene."""

    name: str = Field(description="input name the tool sees (band description of its input file)")
    wavelength: float | None = Field(default=None, gt=0, description="centre of the wanted band (nm)")
    tolerance: float = Field(default=30.0, gt=0, description="largest accepted |centre - wavelength| (nm)")
    lo: float | None = Field(default=None, gt=0, description="range start (nm)")
    hi: float | None = Field(default=None, gt=0, description="range end (nm)")
    min_bands: int = Field(default=1, ge=1)
    all_good: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> ProcessorInput:
        kinds = [self.wavelength is not None, self.lo is not None or self.hi is not None, self.all_good]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of: wavelength, lo + hi, all_good: true")
        if (self.lo is None) != (self.hi is None) or (self.lo is not None and self.hi is not None
                                                        and self.lo >= self.hi):  # fmt: skip
            raise ValueError("a range needs lo < hi (nm)")
        return self


class ProcessorOutput(_Model):
    name: str
    description: str = ""


class ProcessorConfig(_Model):
    """A product computed by an external tool (any language): a command run as a subprocess, and/or
    a container image (the product's deployment runs in that image on the ECS work pool).

    The contract is docs/PROCESSORS.md: the tool gets the selected bands as one float32 file of
    physical values (NaN = nodata), the input item JSON and an output directory, and writes
    ``output.tif`` (or ``output.img`` with ``io: envi``) on the input's grid."""

    command: list[str] | None = Field(
        default=None,
        description="argv; placeholders {input} {item} {output_dir} {bands} {width} {height} {params} "
        "{param:NAME}; relative paths resolve against the configuration file's directory",
    )
    image: str | None = Field(default=None, description="container image (pin by @sha256 digest)")
    version: str = Field(default="0", description="the processor's own version (part of the product key)")
    version_command: list[str] | None = Field(
        default=None, description="argv printing the tool's version (recorded and part of the key)"
    )
    title: str | None = None
    description: str = ""
    inputs: list[ProcessorInput] = Field(min_length=1)
    outputs: list[ProcessorOutput] = Field(default_factory=lambda: [ProcessorOutput(name="value")])
    dtype: Literal["uint8", "int16", "uint16", "int32", "float32", "float64"] = "float32"
    nodata: float = -9999.0
    io: Literal["geotiff", "envi"] = Field(
        default="geotiff",
        description="geotiff: bands.tif in, output.tif out; envi: BSQ .img/.hdr in, raw .img out",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="parameter defaults (free-form)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment (no secrets)")
    timeout_s: float = Field(default=3600.0, gt=0, description="the tool is killed after this many seconds")
    base_dir: str | None = Field(default=None, description="set by the loader: the configuration's directory")

    @model_validator(mode="after")
    def _runnable(self) -> ProcessorConfig:
        if not self.command and not self.image:
            raise ValueError("a processor needs a command, an image, or both")
        return self


class SourceConfig(_Model):
    """Per source: which object keys are its scenes (bridge) and which products follow activation."""

    patterns: list[str] | None = Field(
        default=None, description="glob patterns of raw object keys; None = defaults"
    )
    scene_id_regex: str | None = Field(
        default=None, description="regex on the file name; group 'scene' = scene id"
    )
    products: list[ProductRun] = Field(default_factory=list)
    activate: bool = Field(default=True, description="activate new scenes of this source automatically")

    @field_validator("scene_id_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


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
    vpc_id: str | None = Field(
        default=None, description="VPC of the subnets (prefect-aws needs it with subnets)"
    )
    assign_public_ip: bool = Field(
        default=False, description="public IP for tasks (public subnets without NAT)"
    )
    env: dict[str, str] = Field(default_factory=dict, description="plain env vars (secrets: use ECS secrets)")

    @field_validator("env")
    @classmethod
    def _no_secret_env(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if SECRET_KEY.search(k)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: {SECRET_HINT}")
        return v


class EngineConfig(_Model):
    """How flows execute their tasks and where deployments run."""

    task_runner: Literal["threads", "dask"] = "threads"
    max_workers: int = Field(default=4, ge=1, description="threads of the thread pool runner")
    dask_address: str | None = Field(default=None, description="address of an existing distributed scheduler")
    dask_workers: int = Field(default=2, ge=1, description="workers of a local Dask cluster")
    dask_threads_per_worker: int = Field(default=1, ge=1)
    work_pool: str = Field(default="hsi-process", description="work pool deployments run on")
    ecs: EcsConfig | None = None


class ArchiveLimitsConfig(_Model):
    """Bounds on archive expansion (zip/tar bombs); null disables a bound."""

    max_bytes: int | None = Field(default=512 * 2**30, ge=1, description="total extracted bytes per archive")
    max_ratio: float | None = Field(default=200.0, gt=1, description="extracted bytes / archive bytes")
    max_members: int | None = Field(default=10_000, ge=1, description="members per archive")

    def limits(self) -> ArchiveLimits:
        """The :class:`hsi.sources.archive.ArchiveLimits` of these settings."""
        from hsi.sources.archive import ArchiveLimits

        return ArchiveLimits(max_bytes=self.max_bytes, max_ratio=self.max_ratio, max_members=self.max_members)


class PipelineConfig(_Model):
    storage: StorageConfig = StorageConfig()
    catalog: CatalogConfig = CatalogConfig()
    inputs: list[InputConfig] = Field(default_factory=list, description="S3 access for raw objects by prefix")
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    engine: EngineConfig = EngineConfig()
    work_dir: str = Field(
        default=f"./{DEFAULT_DATA_DIR}/work", description="scratch space for extraction/COG temp"
    )
    archive_limits: ArchiveLimitsConfig = ArchiveLimitsConfig()
    prefect_api_url: str | None = Field(default=None, description="Prefect API used by deployments/events")
    processors: dict[str, ProcessorConfig] = Field(
        default_factory=dict, description="products computed by external tools (docs/PROCESSORS.md)"
    )
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prefect_api_url")
    @classmethod
    def _api(cls, v: str | None) -> str | None:
        return _check_http(v)

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> PipelineConfig:
        if not (info.context or {}).get("skip_semantic"):
            from hsi.config.loading import check_config  # the checks need the models: import late

            issues = check_config(self.model_dump(mode="json", exclude_defaults=True))
            if issues:
                raise ValueError("; ".join(f"{i.path}: {i.message}" for i in issues))
        return self

    def s3_access_for(self, uri: str) -> S3Access:
        """The S3 settings for ``uri``: the longest matching ``inputs`` prefix, else the storage's."""
        best: InputConfig | None = None
        for inp in self.inputs:
            p = inp.prefix.rstrip("/")
            if (uri == p or uri.startswith(p + "/")) and (
                best is None or len(p) > len(best.prefix.rstrip("/"))
            ):
                best = inp
        return best or self.storage

    def product_groups(self, source: str) -> dict[str | None, list[ProductRun]]:
        """The products configured for ``source``, grouped by the container image they run in
        (``None``: in the pipeline's own environment, i.e. in the activation run itself)."""
        sc = self.sources.get(source)
        groups: dict[str | None, list[ProductRun]] = {}
        for p in sc.products if sc is not None else []:
            proc = self.processors.get(p.product)
            groups.setdefault(proc.image if proc is not None else None, []).append(p)
        return groups

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
                "processors": {
                    k: v.model_copy(update={"base_dir": v.base_dir or str(base.resolve())})
                    for k, v in self.processors.items()
                },
            }
        )
