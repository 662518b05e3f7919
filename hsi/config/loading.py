"""Loading ``hsi.yaml``: semantic checks, YAML line numbers for every error, secret masking."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from hsi.config.models import SECRET_HINT, SECRET_KEY, PipelineConfig
from hsi.errors import ConfigError


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
    raw_processors = data.get("processors")
    processors: dict[str, Any] = raw_processors if isinstance(raw_processors, dict) else {}
    issues.extend(_check_processor_names(processors))
    if not isinstance(data.get("sources"), dict):
        return issues
    from hsi.sources import list_sources

    known = list_sources()
    for name, src in data["sources"].items():
        if name not in known:
            import difflib

            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            issues.append(
                ConfigIssue(("sources", name), f"unknown source {name!r}{hint} (known: {', '.join(known)})")
            )
        prods = src.get("products") if isinstance(src, dict) else None
        if not isinstance(prods, list):
            continue
        for i, run in enumerate(prods):
            if isinstance(run, dict) and isinstance(run.get("product"), str):
                if run["product"] in processors:  # free-form parameters: the tool validates them
                    continue
                issues.extend(_check_product(("sources", name, "products", i), run))
    return issues


def _check_processor_names(processors: dict[str, Any]) -> list[ConfigIssue]:
    """A processor may not take the name of a built-in or plugin product."""
    if not processors:
        return []
    from hsi.processors import SOURCE
    from hsi.products.registry import default_registry

    reg = default_registry()
    issues = []
    for name in processors:
        owner = reg.sources.get(name)
        if owner is not None and owner != SOURCE:
            issues.append(ConfigIssue(("processors", name), f"'{name}' is the name of a product registered by "
                                      f"'{owner}'; give the processor another name"))  # fmt: skip
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
    from hsi.quantities import PIPELINE_OPTIONS, split_params

    try:
        params = split_params(params)[0]  # radiance=, mask=, geometry= are the pipeline's, not the product's
    except ProductError as e:
        return [ConfigIssue((*loc, "params"), str(e))]
    try:
        product.params_model.model_validate(params)
    except ValidationError as e:
        allowed = ", ".join([*product.params_model.model_fields, *PIPELINE_OPTIONS])
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
    if err["type"] not in ("missing", "extra_forbidden", "value_error") and not isinstance(
        err.get("input"), (dict, list)
    ):
        msg += f" (got {err.get('input')!r})"
    return msg


def _pydantic_issues(e: ValidationError) -> list[ConfigIssue]:
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        msg = _pydantic_message(err)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            if loc and SECRET_KEY.search(str(loc[-1])):
                msg = f"not allowed: {SECRET_HINT}"
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
        return None, [
            ConfigIssue((), f"top level must be a mapping, got {type(data).__name__}", file=file, line=1)
        ]
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
    cfg = cfg.resolve_paths(base or p.resolve().parent)
    if cfg.processors:
        from hsi.processors import register_processors

        register_processors(cfg.processors)
    return cfg


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a config dump with secret-looking values and URL credentials masked (for display)."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str):
        if SECRET_KEY.search(key) and not key.endswith(("_env", "_block", "_file", "profile")):
            return "****"
        u = urlsplit(value)
        if u.password:
            return value.replace(f":{u.password}@", ":****@")
    return value
