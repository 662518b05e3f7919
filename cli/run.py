"""``hsi run``: on-demand analysis of an AOI and time range (the ``on-demand`` flow), outcome table.

Exit codes: 0 every (scene, product) published or skipped (also: no scene matched), 3 partial
(some failed), 1 all failed or the run could not start, 2 invalid arguments/configuration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_PARTIAL = 3


def _bbox(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        typer.secho(f"error: --bbox expects W,S,E,N (4 numbers, EPSG:4326), got {text!r}", fg="red", err=True)
        raise typer.Exit(2)
    return vals


def _products(names: list[str], params_json: str | None) -> list[Any]:
    if not params_json:
        return list(names)
    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as e:
        typer.secho(f"error: --params is not JSON: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        typer.secho('error: --params expects {"<product>": {"<param>": value}}', fg="red", err=True)
        raise typer.Exit(2)
    unknown = set(params) - set(names)
    if unknown:
        typer.secho(
            f"error: --params names products not requested: {', '.join(sorted(unknown))}", fg="red", err=True
        )
        raise typer.Exit(2)
    return [{"product": n, "params": params[n]} if n in params else n for n in names]


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from hsi.planning import Outcome
    from hsi_pipeline.tasks.reporting import outcome_rows

    console = Console()
    rows = outcome_rows([Outcome.from_dict(o) for o in result["outcomes"]])
    table = Table(title=f"hsi run: {result['status']}", show_lines=False)
    for col in ("scene", "activation", "product", "status", "item / reason"):
        table.add_column(col, overflow="fold")
    style = {"published": "green", "skipped": "cyan", "failed": "red"}
    for r in rows:
        detail = (
            r["reason"]
            if r["status"] == "failed"
            else (r["item"] + (f"  clip: {Path(r['clip']).stem}" if r["clip"] else ""))
        )
        table.add_row(
            r["scene"], r["activation"], r["product"], f"[{style[r['status']]}]{r['status']}[/]", detail
        )
    console.print(table)
    c = result["counts"]
    console.print(
        f"{c['published']} published, {c['skipped']} skipped, {c['failed']} failed "
        f"({len(result['scenes'])} scene(s); engine {result['engine']}); catalog: {result['catalog']}"
    )


def run(
    products: Annotated[list[str], typer.Argument(help="products, e.g. index:NDVI oil-spill tree-mortality")],
    bbox: Annotated[
        str | None, typer.Option(help="AOI as W,S,E,N in EPSG:4326 (use --bbox=W,... if W < 0)")
    ] = None,
    aoi: Annotated[
        Path | None, typer.Option(help="AOI GeoJSON file (Polygon/MultiPolygon, Feature(Collection))")
    ] = None,
    start: Annotated[str | None, typer.Option(help="first acquisition date (ISO, inclusive)")] = None,
    end: Annotated[
        str | None, typer.Option(help="last acquisition date (ISO, inclusive: the whole day)")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="only these sources (repeatable)")
    ] = None,
    params: Annotated[
        str | None, typer.Option(help='product parameters: {"oil-spill": {"threshold": 0.2}}')
    ] = None,
    clip: Annotated[
        bool, typer.Option(help="also publish AOI-clipped product COGs (hsi-<product>-clips)")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="recompute activation and products even when up to date")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="hsi.yaml (default: $HSI_CONFIG)")
    ] = None,
) -> None:
    """Run products on every scene intersecting an AOI and time range; activate scenes as needed."""
    from hsi_pipeline.cli.main import _config_arg, _load, _quiet_prefect

    if (bbox is None) == (aoi is None):
        typer.secho("error: give exactly one of --bbox or --aoi", fg="red", err=True)
        raise typer.Exit(2)
    cfg = _config_arg(config)
    cfg_obj = _load(cfg)
    from hsi.errors import InvalidInputError
    from hsi.planning import load_aoi, product_requests, time_range

    try:
        geometry = dict(load_aoi(aoi).geometry) if aoi is not None else None
        prods = _products(products, params)
        product_requests(prods)  # unknown products / bad parameters: exit 2 before Prefect starts
        time_range(start, end)
    except InvalidInputError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    _quiet_prefect()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from hsi_pipeline.cli.runtime import cli_api

    with cli_api(cfg_obj):
        from hsi_pipeline.flows.on_demand import OnDemandFailed, on_demand

        state = on_demand(
            products=prods,
            bbox=_bbox(bbox) if bbox else None,
            aoi=geometry,
            start=start,
            end=end,
            sources=source or None,
            clip=clip,
            force=force,
            config=cfg,
            return_state=True,
        )
        res = state.result(raise_on_failure=False)
    if isinstance(res, OnDemandFailed):
        res = res.result
    elif isinstance(res, BaseException):
        typer.secho(f"error: {type(res).__name__}: {res}", fg="red", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(res, indent=2, default=str))
    else:
        _print(res)
    if res["status"] == "partial":
        raise typer.Exit(EXIT_PARTIAL)
    if res["status"] == "failed":
        raise typer.Exit(1)
