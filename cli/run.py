"""``hsi run``: on-demand analysis of an AOI and time range (the ``on-demand`` flow), outcome table.

Exit codes (cli/common.py): 0 every (scene, product) published or skipped (also: no scene matched),
3 partial (some failed), 1 all failed or the run could not start, 2 invalid arguments/configuration,
4 unknown product.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hsi_pipeline.cli.common import EXIT_PARTIAL, ConfigOpt, config_arg, exit_code_for, fail, load

__all__ = ["EXIT_PARTIAL", "run"]


def _bbox(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        fail(f"--bbox expects W,S,E,N (4 numbers, EPSG:4326), got {text!r}")
    return vals


def _products(names: list[str], params_json: str | None) -> list[Any]:
    if not params_json:
        return list(names)
    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as e:
        fail(f"--params is not JSON: {e}")
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        fail('--params expects {"<product>": {"<param>": value}}')
    unknown = set(params) - set(names)
    if unknown:
        fail(f"--params names products not requested: {', '.join(sorted(unknown))}")
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
        str | None, typer.Option(help='product parameters, e.g. {"oil-spill": {"hi_threshold": 0.01}}')
    ] = None,
    clip: Annotated[
        bool, typer.Option(help="also publish AOI-clipped product COGs (hsi-<product>-clips)")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="recompute activation and products even when up to date")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run products on every scene intersecting an AOI and time range; activate scenes as needed.

    Example: `hsi run index:NDVI oil-spill --bbox=-180,-90,180,90 --params '{"oil-spill": {"hi_threshold": 0.01}}'`
    """
    if (bbox is None) == (aoi is None):
        fail("give exactly one of --bbox or --aoi")
    cfg = config_arg(config)
    load(cfg)
    from hsi.errors import InvalidInputError
    from hsi.planning import load_aoi, product_requests, time_range

    try:
        geometry = dict(load_aoi(aoi).geometry) if aoi is not None else None
        prods = _products(products, params)
        product_requests(prods)  # unknown products / bad parameters: answered before Prefect starts
        time_range(start, end)
    except InvalidInputError as e:
        fail(str(e), exit_code_for(e))
    from hsi_pipeline.cli.pipeline import invoke
    from hsi_pipeline.flows.on_demand import OnDemandFailed, on_demand

    state = invoke(
        on_demand,
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
        from hsi_pipeline.cli.common import report_error

        raise typer.Exit(report_error(res))
    if as_json:
        typer.echo(json.dumps(res, indent=2, default=str))
    else:
        _print(res)
    if res["status"] == "partial":
        raise typer.Exit(EXIT_PARTIAL)
    if res["status"] == "failed":
        raise typer.Exit(1)
