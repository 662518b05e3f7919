"""The declarative pipeline configuration (``hsi.yaml``): pydantic models, loading, clear errors.

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
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hsi.errors import ConfigError

__all__ = [
    "CatalogAuth", "CatalogConfig", "ConfigIssue", "EcsConfig", "EngineConfig", "InputConfig", "PipelineConfig",
    "ProductRun", "S3Access", "SourceConfig", "StorageConfig", "check_config", "load_config", "mask_secrets",
]  # fmt: skip

DEFAULT_DATA_DIR = "hsi-data"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
#: key names that would hold a secret value; never allowed in the file
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|api[_-]?key|access[_-]?key|session[_-]?key|credential)s?$",
                         re.IGNORECASE)  # fmt: skip
_SECRET_HINT = ("secrets are never written in the configuration: name an environment variable "
                "(token_env / username_env / password_env), an AWS profile or a Prefect block instead")  # fmt: skip


# ------------------------------------------------------------------------------------ validators
def _check_http(v: str | None, what: str = "an http(s) URL") -> str | None:
    if v is None:
        return v
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{v!r} is not {what} (expected http://host[:port][/path] or https://...)")
    if u.username or u.password:
        raise ValueError(f"credentials in the URL are not allowed; {_SECRET_HINT}")
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
        raise ValueError(f"{v[:4]}... is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*); the value "
                         f"itself must stay in the environment ({_SECRET_HINT})")
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

    root: str = Field(default=f"./{DEFAULT_DATA_DIR}/assets", description="Local directory or s3://bucket/prefix")
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

    url: str = Field(default=f"./{DEFAULT_DATA_DIR}/catalog",
                     description="static catalog directory, s3://bucket/prefix, or STAC API http(s) URL")
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
    params: dict[str, Any] = Field(default_factory=dict, description="product parameters (validated by the product)")


class SourceConfig(_Model):
    """Per source: which object keys are its scenes (bridge) and which products follow activation."""

    patterns: list[str] | None = Field(default=None, description="glob patterns of raw object keys; None = defaults")
    scene_id_regex: str | None = Field(default=None, description="regex on the file name; group 'scene' = scene id")
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
    vpc_id: str | None = Field(default=None, description="VPC of the subnets (prefect-aws needs it with subnets)")
    assign_public_ip: bool = Field(default=False, description="public IP for tasks (public subnets without NAT)")
    env: dict[str, str] = Field(default_factory=dict, description="plain env vars (secrets: use ECS secrets)")

    @field_validator("env")
    @classmethod
    def _no_secret_env(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if _SECRET_KEY.search(k)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: {_SECRET_HINT}")
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


class PipelineConfig(_Model):
    storage: StorageConfig = StorageConfig()
    catalog: CatalogConfig = CatalogConfig()
    inputs: list[InputConfig] = Field(default_factory=list, description="S3 access for raw objects by prefix")
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    engine: EngineConfig = EngineConfig()
    work_dir: str = Field(default=f"./{DEFAULT_DATA_DIR}/work", description="scratch space for extraction/COG temp")
    prefect_api_url: str | None = Field(default=None, description="Prefect API used by deployments/events")
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prefect_api_url")
    @classmethod
    def _api(cls, v: str | None) -> str | None:
        return _check_http(v)

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> PipelineConfig:
        if not (info.context or {}).get("skip_semantic"):
            issues = check_config(self.model_dump(mode="json", exclude_defaults=True))
            if issues:
                raise ValueError("; ".join(f"{i.path}: {i.message}" for i in issues))
        return self

    def s3_access_for(self, uri: str) -> S3Access:
        """The S3 settings for ``uri``: the longest matching ``inputs`` prefix, else the storage's."""
        best: InputConfig | None = None
        for inp in self.inputs:
            p = inp.prefix.rstrip("/")
            if (uri == p or uri.startswith(p + "/")) and (best is None or len(p) > len(best.prefix.rstrip("/"))):
                best = inp
        return best or self.storage

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


# ------------------------------------------------------------------------- semantic checks
@dataclass(frozen=True)
class ConfigIssue:
    """One problem: the field path (``loc``), the message, and (when known) the file and line."""

    loc: tuple[str | int, ...]
    message: str
    file: str | None = None
    line: int | None = None

    @property
    def path(self) -> str:
        return _dotted(self.loc)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "<config>")
        return f"{where}: {self.path or '<top level>'}: {self.message}"


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_config(data: Any) -> list[ConfigIssue]:
    """Checks beyond types on a raw config mapping (defensive: skips what has the wrong type).

    Sources must be known to :mod:`hsi.sources`; products must exist in the product registry and
    their ``params`` must validate against the product's parameter model.
    """
    issues: list[ConfigIssue] = []
    if not isinstance(data, dict):
        return issues
    auth = data.get("catalog", {}).get("auth") if isinstance(data.get("catalog"), dict) else None
    if isinstance(auth, dict):
        if auth.get("type") == "bearer" and not auth.get("token_env"):
            issues.append(ConfigIssue(("catalog", "auth"), "bearer auth needs token_env (the name of the env "
                                      "var holding the token)"))  # fmt: skip
        if auth.get("type") == "basic" and not (auth.get("username_env") and auth.get("password_env")):
            issues.append(ConfigIssue(("catalog", "auth"), "basic auth needs username_env and password_env "
                                      "(names of env vars)"))  # fmt: skip
    if not isinstance(data.get("sources"), dict):
        return issues
    from hsi.sources import list_sources

    known = list_sources()
    for name, src in data["sources"].items():
        if name not in known:
            import difflib

            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            issues.append(ConfigIssue(("sources", name), f"unknown source {name!r}{hint} (known: {', '.join(known)})"))
        prods = src.get("products") if isinstance(src, dict) else None
        if not isinstance(prods, list):
            continue
        for i, run in enumerate(prods):
            if isinstance(run, dict) and isinstance(run.get("product"), str):
                issues.extend(_check_product(("sources", name, "products", i), run))
    return issues


def _check_product(loc: tuple[str | int, ...], run: dict[str, Any]) -> list[ConfigIssue]:
    from hsi.errors import ProductError
    from hsi.products import get_product

    try:
        product = get_product(run["product"])
    except ProductError as e:
        return [ConfigIssue((*loc, "product"), str(e))]
    params = run.get("params") or {}
    if not isinstance(params, dict):
        return []  # the type error is pydantic's
    try:
        product.params_model.model_validate(params)
    except ValidationError as e:
        allowed = ", ".join(product.params_model.model_fields) or "none"
        return [ConfigIssue((*loc, "params", *err["loc"]),
                            f"{'unknown parameter' if err['type'] == 'extra_forbidden' else _pydantic_message(err)}"
                            f" (product {product.name}; parameters: {allowed})")
                for err in e.errors()]  # fmt: skip
    return []


# ----------------------------------------------------------------------------- line numbers
def _node_for(root: yaml.Node | None, loc: tuple[str | int, ...]) -> yaml.Node | None:
    """The deepest YAML node along ``loc`` (the key node for a mapping entry)."""
    node, best = root, root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if str(k.value) == str(part):
                    best, node = k, v
                    break
            else:
                return best
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = best = node.value[part]
        else:
            return best
    return best


def _duplicate_keys(node: yaml.Node | None, loc: tuple[str | int, ...] = ()) -> list[ConfigIssue]:
    out: list[ConfigIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = str(k.value)
            if key in seen:
                out.append(ConfigIssue((*loc, key), "duplicate key (the later one would silently win)",
                                       line=k.start_mark.line + 1))  # fmt: skip
            seen.add(key)
            out += _duplicate_keys(v, (*loc, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += _duplicate_keys(v, (*loc, i))
    return out


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model a location points into (for listing the allowed fields)."""
    tp: Any = PipelineConfig
    for part in loc:
        while typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(str(part))
            if f is None:
                return None
            tp = f.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    while typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _pydantic_message(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] not in ("missing", "extra_forbidden", "value_error") and not isinstance(err.get("input"), (dict, list)):
        msg += f" (got {err.get('input')!r})"
    return msg


def _pydantic_issues(e: ValidationError) -> list[ConfigIssue]:
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        msg = _pydantic_message(err)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            if loc and _SECRET_KEY.search(str(loc[-1])):
                msg = f"not allowed: {_SECRET_HINT}"
            elif model is not None:
                msg = f"unknown field; allowed: {', '.join(model.model_fields)}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append(ConfigIssue(loc, msg))
    return out


def _locate(issues: list[ConfigIssue], file: str, root: yaml.Node | None) -> list[ConfigIssue]:
    out = []
    for i in issues:
        node = _node_for(root, i.loc)
        line = i.line or (node.start_mark.line + 1 if node is not None else None)
        out.append(ConfigIssue(i.loc, i.message, file=file, line=line))
    return sorted(out, key=lambda i: (i.line or 0, i.path))


def validate_text(text: str, file: str = "<config>") -> tuple[PipelineConfig | None, list[ConfigIssue]]:
    """Validate YAML text; returns (config or None, every issue found with its line)."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return None, [ConfigIssue((), f"not valid YAML: {getattr(e, 'problem', None) or e}", file=file,
                                  line=mark.line + 1 if mark else None)]  # fmt: skip
    if not isinstance(data, dict):
        return None, [ConfigIssue((), f"top level must be a mapping, got {type(data).__name__}", file=file, line=1)]
    issues = _duplicate_keys(root)
    cfg = None
    try:
        cfg = PipelineConfig.model_validate(data, context={"skip_semantic": True})
    except ValidationError as e:
        issues += _pydantic_issues(e)
    issues += check_config(data)
    return (cfg if not issues else None), _locate(issues, file, root)


def load_config(path: str | Path | None = None, *, base: Path | None = None) -> PipelineConfig:
    """Load and validate a configuration file; ``None`` gives the embedded default.

    Relative paths resolve against the current directory for the default and against the file's
    directory for a file. Raises :class:`ConfigError` listing every issue (file:line: field: why);
    the issues are also on ``error.issues``.
    """
    if path is None:
        return PipelineConfig().resolve_paths(base or Path.cwd())
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read configuration: {e.strerror or e}") from e
    cfg, issues = validate_text(text, str(p))
    if issues or cfg is None:
        err = ConfigError("\n".join(str(i) for i in issues))
        err.issues = issues  # type: ignore[attr-defined]
        raise err
    return cfg.resolve_paths(base or p.resolve().parent)


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a config dump with secret-looking values and URL credentials masked (for display)."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEY.search(key) and not key.endswith(("_env", "_block", "_file", "profile")):
            return "****"
        u = urlsplit(value)
        if u.password:
            return value.replace(f":{u.password}@", ":****@")
    return value
