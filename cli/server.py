"""``hsi server start|status|stop``: the shared local Prefect server that pipeline commands use when no
Prefect API is configured (see :mod:`hsi_pipeline.cli.runtime`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from hsi_pipeline.cli import runtime

app = typer.Typer(
    help="The shared local Prefect server that pipeline commands start on first use and reuse.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _uptime(s: float) -> str:
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def _print(st: dict[str, Any]) -> None:
    typer.echo(f"state:     {st['state']}")
    if st["pid"] is not None:
        typer.echo(f"url:       {st['url']}  (UI {st['ui']})")
        typer.echo(f"pid:       {st['pid']}")
        typer.echo(f"uptime:    {_uptime(st['uptime_s'])}")
    typer.echo(f"state dir: {st['state_dir']}")
    typer.echo(f"database:  {_size(st['db_bytes'])}")
    typer.echo(f"log:       {st['log']}")


@app.command()
def start(as_json: JsonOpt = False) -> None:
    """Start the shared local Prefect server now (pipeline commands also start it on first use).

    Example: `hsi server start`
    """
    try:
        runtime.ensure_server()
    except runtime.ServerError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from e
    st = runtime.server_status()
    typer.echo(json.dumps(st, indent=2)) if as_json else _print(st)


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Show the shared local Prefect server: state, URL, pid, uptime, state dir, database size.

    Example: `hsi server status --json`
    """
    st = runtime.server_status()
    typer.echo(json.dumps(st, indent=2)) if as_json else _print(st)


@app.command()
def stop(as_json: JsonOpt = False) -> None:
    """Stop the shared local Prefect server and its child processes (its database is kept).

    Example: `hsi server stop`
    """
    try:
        info = runtime.stop_server()
    except runtime.ServerError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from e
    out = {"stopped": info is not None, "pid": info.pid if info else None, "url": info.url if info else None}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    elif info is None:
        typer.echo("no local Prefect server was running")
    else:
        typer.echo(f"stopped the local Prefect server (pid {info.pid}, {info.url})")
