"""``hsi config``: validate, show (resolved, secrets masked) and export the JSON Schema of hsi.yaml."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The pipeline configuration (hsi.yaml): validate, show, schema.", no_args_is_help=True)

PathArg = Annotated[
    Path | None,
    typer.Argument(help="configuration file (same as --config; kept for compatibility)", show_default=False),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="configuration file (default: $HSI_CONFIG, else the embedded default)"
    ),
]


def _path(path: Path | None, config: Path | None = None) -> Path | None:
    if path is not None and config is not None and path != config:
        from hsi_pipeline.cli.common import fail

        fail(f"two configuration files given ({path} and --config {config}); give one")
    path = path or config
    if path is None and os.environ.get("HSI_CONFIG"):
        return Path(os.environ["HSI_CONFIG"])
    if path is not None and not path.is_file():
        from hsi_pipeline.cli.common import EXIT_NOT_FOUND, fail

        fail(f"configuration file {path} does not exist", EXIT_NOT_FOUND)
    return path


def load_checked(path: Path | None, config: Path | None = None):  # noqa: ANN202 - PipelineConfig
    from hsi.config import load_config
    from hsi.errors import ConfigError

    try:
        return load_config(_path(path, config))
    except ConfigError as e:
        issues = getattr(e, "issues", None)
        for line in (str(i) for i in issues) if issues else str(e).splitlines():
            typer.secho(f"error: {line}", fg="red", err=True)
        if issues:
            typer.secho(f"{len(issues)} error(s)", fg="red", err=True)
        raise typer.Exit(2) from e


@app.command()
def validate(path: PathArg = None, config: ConfigOpt = None) -> None:
    """Check the file: types, sources, products and their parameters, URLs, no inline secrets.

    Every error is reported in one run as FILE:LINE: FIELD: what is wrong and what is allowed
    (exit code 2). Example: `hsi config validate`
    """
    cfg = load_checked(path, config)
    p = _path(path, config)
    n = sum(len(s.products) for s in cfg.sources.values())
    typer.echo(f"{p or '<embedded default>'}: OK ({len(cfg.sources)} source(s), {n} product run(s), "
               f"catalog {cfg.catalog.url}, storage {cfg.storage.root})")  # fmt: skip


@app.command()
def show(
    path: PathArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML")] = False,
    config: ConfigOpt = None,
) -> None:
    """The resolved configuration: every default filled in, relative paths absolute, secrets masked.

    Example: `hsi config show --json`
    """
    import yaml

    from hsi.config import mask_secrets

    data = mask_secrets(load_checked(path, config).model_dump(mode="json"))
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command()
def schema(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write to this file instead of stdout")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """The JSON Schema of hsi.yaml (from the pydantic models), for editors and CI.

    Example: `hsi config schema --out hsi.schema.json`
    """
    from hsi.config import PipelineConfig

    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", **PipelineConfig.model_json_schema(),
           "title": "hsi-pipeline configuration (hsi.yaml)"}  # fmt: skip
    text = json.dumps(doc, indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}")
