"""``hsi deploy``: deployments + triggers generated from the configuration (prefect.yaml, or applied)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def deploy(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="hsi.yaml (default: $HSI_CONFIG, else the embedded default)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the generated prefect.yaml here")
    ] = None,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="create/update the deployments and their automations on the server"),
    ] = False,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", envvar="PREFECT_API_URL", help="Prefect API (else prefect_api_url)"),
    ] = None,
) -> None:
    """Generate the deployments and event triggers the configuration implies.

    Without --out or --apply, prints the prefect.yaml. --apply runs `prefect deploy --all` on it from
    this repository (the worker runs flows from here, loading the same configuration).
    """
    import os

    from hsi_pipeline.cli.config import _load
    from hsi_pipeline.deployments.generate import apply as apply_spec
    from hsi_pipeline.deployments.generate import automation_names, deployment_names, generate, render

    path = config or (Path(os.environ["HSI_CONFIG"]) if os.environ.get("HSI_CONFIG") else None)
    cfg = _load(path)
    text = render(cfg)
    if out is not None:
        out.write_text(text)
        typer.echo(f"wrote {out}")
    if not apply:
        if out is None:
            typer.echo(text.rstrip())
        return
    spec = generate(cfg)
    try:
        apply_spec(cfg, config_path=path, api_url=api_url, prefect_file=out)
    except RuntimeError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from e
    for name in deployment_names(spec):
        typer.echo(f"deployment\t{name}")
    for name in automation_names(spec):
        typer.echo(f"automation\t{name}")
