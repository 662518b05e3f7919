"""Pipeline commands: ``hsi index``, ``hsi activate``, ``hsi product``, ``hsi demo``.

Each validates its inputs first (files, item ids, product names, parameters; no prefect import), then
runs one flow in this process through :func:`invoke` (progress bars for long steps, quiet console).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from hsi_pipeline.cli import checks
from hsi_pipeline.cli.common import (
    EXIT_FAILED,
    EXIT_PARTIAL,
    ConfigOpt,
    config_arg,
    exit_code_for,
    fail,
    load,
    report_error,
    tame_console,
)
from hsi_pipeline.cli.progress import progress_display

__all__ = ["activate", "demo", "index", "invoke", "product"]

SKIPPED = "skipped (up to date)"


def invoke(flow: Callable[..., Any], **kwargs: Any) -> Any:
    """Run one flow in this process: quiet console, progress bars; the flow's exception propagates."""
    from hsi_pipeline.cli import runtime

    tame_console()
    # the configured Prefect API (PREFECT_API_URL, the config's prefect_api_url) or the one shared
    # local server (cli/runtime.py); runs of CLI processes that died are marked CRASHED first
    with runtime.cli_api(kwargs.get("config")), progress_display():
        return flow(**kwargs)


def _status(status: str) -> str:
    return SKIPPED if status == "skipped" else status


def index(
    hrefs: Annotated[list[str], typer.Argument(help="scene files, directories, URLs or s3:// keys")],
    source: Annotated[str | None, typer.Option(help="force a source (default: detect)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Register raw STAC items for scenes (reads headers only).

    Example: `hsi index raw/`
    """
    if source is not None:
        from hsi.names import close_matches
        from hsi.sources import list_sources

        if source not in list_sources():
            close = close_matches(source, list_sources())
            fail(f"unknown source '{source}'" + (f"; did you mean: {', '.join(close)}" if close else "")
                 + f" (sources: {', '.join(list_sources())})")  # fmt: skip
    checks.require_scenes(hrefs)
    cfg = config_arg(config)
    load(cfg)
    from hsi_pipeline.flows.index import ScenesNotIndexed, index_scenes

    try:
        rows = invoke(index_scenes, hrefs=hrefs, source=source, config=cfg)
    except ScenesNotIndexed as e:  # the indexed ones, then one line saying why each other one failed
        rows = e.rows
        for r in rows:
            if r["status"] != "failed":
                _index_row(r)
        typer.secho(f"error: {e.summary}", fg="red", err=True)
        raise typer.Exit(EXIT_PARTIAL if len(e.failed) < len(rows) else exit_code_for(e.failed[0])) from e
    for r in rows:
        _index_row(r)


def _index_row(r: dict[str, Any]) -> None:
    if r["status"] == "failed":
        typer.secho(f"failed\t{r['href']}\t{r['reason']}", fg="red", err=True)
    else:
        typer.echo(f"{r['status']}\t{r.get('collection', '')}/{r.get('item_id', '')}\t{r['href']}")


def activate(
    item_ids: Annotated[list[str], typer.Argument(help="raw item ids, e.g. aviris-ng-ang20150420t182050")],
    force: Annotated[bool, typer.Option(help="redo the work even when the item is up to date")] = False,
    config: ConfigOpt = None,
) -> None:
    """Convert indexed raw scenes to analysis-ready COGs and register the activated items.

    Example: `hsi activate aviris-ng-ang20240101t000000`
    """
    cfg_path = config_arg(config)
    cfg = load(cfg_path)
    checks.require_raw(cfg, item_ids)
    from hsi_pipeline.cli import runtime

    pending = []
    for item_id in item_ids:  # up-to-date items answer from the catalog, before Prefect is imported
        done = None if force else runtime.activation_up_to_date(cfg, item_id)
        if done is None:
            pending.append(item_id)
        else:
            typer.echo(f"{SKIPPED}\t{done['collection']}/{done['item_id']}\t{done['reason']}")
    if not pending:
        return
    from hsi_pipeline.flows.activate import activate_scene

    codes = []
    for item_id in pending:
        try:
            r = invoke(activate_scene, item_id=item_id, force=force, config=cfg_path)
        except typer.Exit:  # already reported (e.g. the Prefect API is down)
            raise
        except Exception as e:
            codes.append(report_error(e, prefix=f"failed\t{item_id}"))
            continue
        detail = r.get("cube") or r["reason"]
        typer.echo(f"{_status(r['status'])}\t{r['collection']}/{r['item_id']}\t{detail}")
    if codes:
        raise typer.Exit(EXIT_PARTIAL if len(codes) < len(item_ids) else codes[0])


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (numbers, true/false, null, lists), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--param expects key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def product(
    name: Annotated[str, typer.Argument(help="product name, e.g. index:NDVI, oil-spill, tree-mortality")],
    item_id: Annotated[str, typer.Argument(help="activated item id, e.g. aviris-ng-ang20150420t182050")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="product parameter key=value (repeatable; JSON values)"),
    ] = None,
    force: Annotated[bool, typer.Option(help="recompute even when the product item is up to date")] = False,
    collection: Annotated[str | None, typer.Option(help="activated collection (default: found)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Compute one product on an activated scene and register the product item.

    Example: `hsi product index:NDVI aviris-ng-ang20240101t000000`
    """
    params = _parse_params(param or [])
    cfg_path = config_arg(config)
    cfg = load(cfg_path)  # registers the configured processors as products
    checks.require_product(name, params)
    checks.require_activated(cfg, item_id, collection)
    from hsi_pipeline.cli import runtime

    done = None if force else runtime.product_up_to_date(cfg, name, item_id, params or None, collection)
    if done is not None:  # answered from the catalog, before Prefect is imported
        typer.echo(
            f"{SKIPPED}\t{done['collection']}/{done['item_id']}\t{done.get('asset') or done['reason']}"
        )
        return
    from hsi_pipeline.flows.product import run_product

    try:
        r = invoke(run_product, item_id=item_id, product=name, params=params or None, force=force,
                   config=cfg_path, collection=collection)  # fmt: skip
    except typer.Exit:  # already reported (e.g. the Prefect API is down)
        raise
    except Exception as e:
        raise typer.Exit(report_error(e, prefix=f"failed\t{name}\t{item_id}")) from e
    typer.echo(f"{_status(r['status'])}\t{r['collection']}/{r['item_id']}\t{r.get('asset') or r['reason']}")


def demo(
    config: ConfigOpt = None,
    width: Annotated[int, typer.Option(help="samples of the synthetic scene")] = 160,
    height: Annotated[int, typer.Option(help="lines of the synthetic scene")] = 240,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    source: Annotated[
        str, typer.Option(help="aviris-ng | emit (an EMIT L2A granule with its GLT)")
    ] = "aviris-ng",
) -> None:
    """Synthesize a scene, index it, activate it (and run products); print where everything is.

    Running it again skips what is up to date. Example: `hsi demo --width 32 --height 48`,
    `hsi demo --source emit`
    """
    cfg_path = config_arg(config)
    cfg = load(cfg_path)
    if width < 8 or height < 8:
        fail(f"--width/--height: the scene must be at least 8x8 samples, got {width}x{height}")
    checks.require_choice("--source", source, checks.DEMO_SOURCES)
    from hsi_pipeline.flows.demo import demo as demo_flow

    try:
        summary = invoke(demo_flow, config=cfg_path, width=width, height=height, source=source)
    except typer.Exit:  # already reported (e.g. the Prefect API is down)
        raise
    except Exception as e:
        raise typer.Exit(report_error(e)) from e
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _demo_table(summary, cfg.storage.root)
    if any(r["status"] == "failed" for r in summary["rows"]):
        raise typer.Exit(EXIT_FAILED)


def _demo_table(summary: dict[str, Any], assets: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def short(path: str) -> str:  # local paths relative to the current directory, when below it
        if path and "://" not in path and os.path.isabs(path) and path.startswith(os.getcwd() + os.sep):
            return os.path.relpath(path)
        return path

    console = Console()  # fitted to the terminal (80 columns when not a terminal); long cells fold
    table = Table(title="hsi demo", show_lines=False)
    style = {"failed": "red", "skipped": "cyan"}
    for col in ("step", "status", "item", "asset / reason"):
        table.add_column(col, overflow="fold")
    for row in summary["rows"]:
        st = row["status"]
        table.add_row(row["step"], f"[{style.get(st, 'green')}]{_status(st)}[/]", row["item"],
                      short(row.get("asset", "")))  # fmt: skip
    console.print(table)
    console.print(f"catalog: {short(summary['catalog'])}", overflow="fold")
    console.print(f"assets:  {short(assets)}", overflow="fold")
