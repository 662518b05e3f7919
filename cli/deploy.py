"""``hsi deploy``: deployments + triggers generated from the configuration (prefect.yaml, or applied)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hsi_pipeline.cli.common import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, STATE, ConfigOpt, fail


def deploy(
    config: ConfigOpt = None,
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
    allow_inside_checkout: Annotated[
        bool,
        typer.Option(
            "--allow-inside-checkout", help="apply even when deployed runs would write data into the checkout"
        ),
    ] = False,
) -> None:
    """Generate the deployments and event triggers the configuration implies.

    Without --out or --apply, prints the prefect.yaml. --apply creates the work pool when it is
    missing, runs `prefect deploy --all` on the file from this checkout (the worker runs flows from
    here, loading the same configuration) and prints the command that starts a worker. It refuses a
    configuration whose data lies inside the checkout unless --allow-inside-checkout.
    Example: `hsi deploy --out prefect.generated.yaml`
    """
    import os

    from hsi_pipeline.cli.config import load_checked
    from hsi_pipeline.deployments import generate as gen

    path = config or (Path(os.environ["HSI_CONFIG"]) if os.environ.get("HSI_CONFIG") else None)
    cfg = load_checked(path)
    text = gen.render(cfg)
    if out is not None:
        out.write_text(text)
        typer.echo(f"wrote {out}")
    if not apply:
        if out is None:
            typer.echo(text.rstrip())
        return
    inside = gen.data_inside_checkout(cfg, path)
    if inside and not allow_inside_checkout:
        fail(f"deployed runs would write data inside the code checkout {gen.ROOT}: {'; '.join(inside)}; "
             "give --config with storage.root, catalog.url and work_dir outside it "
             "(or --allow-inside-checkout)", EXIT_USAGE)  # fmt: skip
    api = api_url or cfg.prefect_api_url
    if not api:
        fail("no Prefect API: pass --api-url, set PREFECT_API_URL or prefect_api_url in the configuration")
    try:
        created = gen.ensure_work_pool(cfg, api)
    except RuntimeError as e:
        fail(str(e), EXIT_UNAVAILABLE if "cannot reach" in str(e) else EXIT_FAILED)
    if created:
        typer.echo(f"work pool\t{cfg.engine.work_pool}\tcreated ({gen.pool_type(cfg)})")
    spec = gen.generate(cfg)
    try:
        gen.apply(cfg, config_path=path, api_url=api, prefect_file=out)
    except RuntimeError as e:
        if STATE.debug:
            typer.echo(str(e), err=True)
        last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or [str(e)]
        fail(f"prefect deploy failed: {last[0].strip()} (run with --debug for Prefect's output)", EXIT_FAILED)
    for name in gen.deployment_names(spec):
        typer.echo(f"deployment\t{name}")
    for name in gen.automation_names(spec):
        typer.echo(f"automation\t{name}")
    typer.echo(
        f"start a worker (if none runs for pool {cfg.engine.work_pool}):\n  {gen.worker_command(cfg, api)}"
    )
