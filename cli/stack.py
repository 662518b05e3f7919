"""``hsi stack up|down|status``: the local stack of real services (see deployments/local/stack.py).

Light imports only (no prefect): the stack module uses the standard library and talks HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Local stack on 127.0.0.1: PostgreSQL+PostGIS, STAC API, SeaweedFS S3, Prefect (and a Dask cluster).",
    no_args_is_help=True,
)


def _layout(state_dir: Path | None):  # noqa: ANN202
    from hsi_pipeline.deployments.local.stack import Layout

    return Layout.default(state_dir)


StateDir = Annotated[
    Path | None, typer.Option("--state-dir", help="State dir (default $HSI_STACK_DIR or ./.stack)")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]


def _table(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"hsi stack ({info['state_dir']})")
    t.add_column("component")
    t.add_column("endpoint")
    t.add_column("pid")
    t.add_column("state")
    for name, c in info["components"].items():
        state = "[green]healthy[/green]" if c["healthy"] else "[red]down[/red]"
        if "actions" in info and name in info["actions"]:
            state += f" ({info['actions'][name]})"
        t.add_row(name, str(c["endpoint"]), str(c["pid"] or "-"), state)
    con = Console()
    con.print(t)
    con.print(
        f"S3 bucket [bold]{info['s3_bucket']}[/bold], profile [bold]{info['aws_profile']}[/bold] in "
        f"{info['shared_credentials_file']}; Prefect UI {info['prefect_ui']}; work pool {info['work_pool']}"
    )
    if "dask_scheduler" in info:
        note = info.get("dask_dashboard_note")
        con.print(
            f"Dask scheduler [bold]{info['dask_scheduler']}[/bold]; dashboard {info['dask_dashboard']}"
            + (f" ({note})" if note else "")
        )


@app.command()
def up(
    state_dir: StateDir = None,
    config_out: Annotated[Path, typer.Option("--config-out", help="Where to write the hsi config")] = Path(
        "hsi.stack.yaml"
    ),
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the services to become healthy")
    ] = 300.0,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not start the Prefect worker")] = False,
    dask_workers: Annotated[
        int,
        typer.Option(
            "--dask-workers",
            min=0,
            help="Also run a Dask cluster: a scheduler and N worker processes; hsi.stack.yaml then "
            "sets engine.task_runner: dask and engine.dask_address (0: keep what runs)",
        ),
    ] = 0,
    nthreads: Annotated[int, typer.Option("--nthreads", min=1, help="Threads per Dask worker")] = 1,
    as_json: AsJson = False,
) -> None:
    """Start (or confirm) every service; idempotent. Writes hsi.stack.yaml.

    With `--dask-workers N` also a Dask scheduler and N workers (hsi.stack.yaml then uses them).

    HSI_POOL_CONCURRENCY: flow runs at once on the local pool (0 = no limit).

    HSI_WORKER_POLL_SECONDS: the worker's poll interval (default 0.25); 2 saves idle CPU, starts runs ~1 s later.

    Examples: `hsi stack up` · `hsi stack up --dask-workers 2`
    """
    from hsi_pipeline.deployments.local.stack import StackError
    from hsi_pipeline.deployments.local.stack import up as stack_up

    try:
        info = stack_up(
            _layout(state_dir), config_out=config_out, timeout=timeout, worker=not no_worker,
            dask_workers=dask_workers, dask_threads=nthreads,
        )  # fmt: skip
    except StackError as e:
        typer.secho(f"hsi stack up failed: {e}", fg="red", err=True)
        raise typer.Exit(1) from e
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    _table(info)
    typer.echo(f"config: {info['config']}   ({info['seconds']} s)")


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop every process the stack started (data is kept in the state dir).

    Example: `hsi stack down`
    """
    from hsi_pipeline.deployments.local.stack import StackError
    from hsi_pipeline.deployments.local.stack import down as stack_down

    try:
        stopped = stack_down(_layout(state_dir))
    except StackError as e:
        typer.secho(f"hsi stack down failed: {e}", fg="red", err=True)
        raise typer.Exit(1) from e
    for name, was in stopped.items():
        typer.echo(f"{name:16s} {'stopped' if was else 'not running'}")


@app.command()
def status(
    state_dir: StateDir = None,
    as_json: AsJson = False,
) -> None:
    """Endpoints and health of each service (exit code 1 when not all are healthy).

    Example: `hsi stack status`
    """
    from hsi_pipeline.deployments.local.stack import status as stack_status

    info = stack_status(_layout(state_dir))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        _table(info)
    if not info["up"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
