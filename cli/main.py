"""The ``hsi`` command line: an edge that parses arguments and calls flows or the hsi library.

Prefect is imported only by the commands that run flows, so ``hsi synth``, ``hsi products`` and
``--help`` stay fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hsi_pipeline.cli import runtime
from hsi_pipeline.cli.bridge import app as bridge_app
from hsi_pipeline.cli.config import app as config_app
from hsi_pipeline.cli.deploy import deploy as deploy_command
from hsi_pipeline.cli.products import app as products_app
from hsi_pipeline.cli.run import run as run_command
from hsi_pipeline.cli.server import app as server_app
from hsi_pipeline.cli.stack import app as stack_app

app = typer.Typer(
    name="hsi",
    help="hsi-pipeline: hyperspectral scenes -> analysis-ready COGs, products and STAC, with Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(products_app, name="products")
app.add_typer(stack_app, name="stack")
app.add_typer(bridge_app, name="bridge")
app.add_typer(config_app, name="config")
app.add_typer(server_app, name="server")
app.command(name="deploy")(deploy_command)
app.command(name="run")(run_command)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="settings file (hsi.yaml); default: $HSI_CONFIG or ./hsi-data"),
]


def _config_arg(config: Path | None) -> str | None:
    if config is None:
        return os.environ.get("HSI_CONFIG") or None
    if not config.is_file():
        typer.secho(f"error: configuration file {config} does not exist", fg="red", err=True)
        raise typer.Exit(2)
    return str(config.resolve())


def _load(config: str | None) -> Any:
    from hsi.config import load_config
    from hsi.errors import ConfigError

    try:
        return load_config(config)
    except ConfigError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e


def _fail(e: BaseException) -> typer.Exit:
    typer.secho(f"error: {e}", fg="red", err=True)
    return typer.Exit(1)


def _quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "hsi")


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="directory to write the scene into")] = Path("hsi-data/raw"),
    source: Annotated[str, typer.Option(help="aviris-ng | aviris-classic")] = "aviris-ng",
    level: Annotated[str, typer.Option(help="l1b (radiance) | l2 (reflectance)")] = "l2",
    width: Annotated[int, typer.Option(help="samples")] = 256,
    height: Annotated[int, typer.Option(help="lines")] = 512,
    rotation: Annotated[float, typer.Option(help="grid rotation in degrees (map info rotation=)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed (also picks the scene id)")] = 0,
    archive: Annotated[bool, typer.Option(help="pack the scene as .tar.gz like JPL ships it")] = False,
    truth: Annotated[bool, typer.Option(help="also write the ground-truth class map")] = False,
    config: ConfigOpt = None,
) -> None:
    """Write a realistic synthetic AVIRIS scene (exact file format, real band tables), streaming."""
    from rich.progress import Progress

    from hsi.sources.synthetic import synthesize

    with Progress(transient=True) as bar:
        task = bar.add_task(f"synthesizing {source} {level} {width}x{height}", total=height)
        path = synthesize(
            out_dir,
            source=source,  # type: ignore[arg-type]  # synthesize checks it
            level=level,  # type: ignore[arg-type]
            width=width,
            height=height,
            rotation_deg=rotation,
            seed=seed,
            archive=archive,
            truth=truth,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(str(path))


@app.command()
def index(
    hrefs: Annotated[list[str], typer.Argument(help="scene files, directories, URLs or s3:// keys")],
    source: Annotated[str | None, typer.Option(help="force a source (default: detect)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Register raw STAC items for scenes (reads headers only)."""
    cfg = _config_arg(config)
    cfg_obj = _load(cfg)
    _quiet_prefect()
    with runtime.cli_api(cfg_obj):
        from hsi_pipeline.flows.index import index_scenes

        try:
            rows = index_scenes(hrefs=hrefs, source=source, config=cfg)
        except Exception as e:
            raise _fail(e) from e
    for r in rows:
        typer.echo(f"{r['status']}\t{r.get('collection', '')}/{r.get('item_id', '')}\t{r['href']}")


@app.command()
def activate(
    item_ids: Annotated[list[str], typer.Argument(help="raw item ids, e.g. aviris-ng-ang20150420t182050")],
    force: Annotated[bool, typer.Option(help="redo the work even when the item is up to date")] = False,
    config: ConfigOpt = None,
) -> None:
    """Convert indexed raw scenes to analysis-ready COGs and register the activated items."""
    cfg = _config_arg(config)
    cfg_obj = _load(cfg)
    _quiet_prefect()
    failed = 0
    pending = []
    for item_id in item_ids:  # up-to-date items answer from the catalog, before Prefect is imported
        r = None if force else runtime.activation_up_to_date(cfg_obj, item_id)
        if r is None:
            pending.append(item_id)
        else:
            typer.echo(f"skipped (up to date)\t{r['collection']}/{r['item_id']}\t{r['reason']}")
    if pending:
        with runtime.cli_api(cfg_obj):
            from hsi_pipeline.flows.activate import activate_scene

            for item_id in pending:
                try:
                    r = activate_scene(item_id=item_id, force=force, config=cfg)
                    typer.echo(
                        f"{r['status']}\t{r['collection']}/{r['item_id']}\t{r.get('cube') or r['reason']}"
                    )
                except Exception as e:
                    failed += 1
                    typer.secho(f"failed\t{item_id}\t{e}", fg="red", err=True)
    if failed:
        raise typer.Exit(1)


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse (numbers, true/false, null, lists), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            typer.secho(f"error: --param expects key=value, got {pair!r}", fg="red", err=True)
            raise typer.Exit(2)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@app.command()
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
    """Compute one product on an activated scene and register the product item."""
    params = _parse_params(param or [])
    cfg = _config_arg(config)
    cfg_obj = _load(cfg)
    _quiet_prefect()
    fast = None if force else runtime.product_up_to_date(cfg_obj, name, item_id, params, collection)
    if fast is not None:  # answered from the catalog, before Prefect is imported
        typer.echo(
            f"skipped (up to date)\t{fast['collection']}/{fast['item_id']}\t{fast['asset'] or fast['reason']}"
        )
        return
    with runtime.cli_api(cfg_obj):
        from hsi_pipeline.flows.product import run_product

        try:
            r = run_product(
                item_id=item_id,
                product=name,
                params=params or None,
                force=force,
                config=cfg,
                collection=collection,
            )
        except Exception as e:
            typer.secho(f"failed\t{name}\t{item_id}\t{e}", fg="red", err=True)
            raise typer.Exit(1) from e
    typer.echo(f"{r['status']}\t{r['collection']}/{r['item_id']}\t{r.get('asset') or r['reason']}")


@app.command()
def demo(
    config: ConfigOpt = None,
    width: Annotated[int, typer.Option(help="samples of the synthetic scene")] = 160,
    height: Annotated[int, typer.Option(help="lines of the synthetic scene")] = 240,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Synthesize a scene, index it, activate it (and run products); print where everything is."""
    cfg_path = _config_arg(config)
    cfg = _load(cfg_path)
    _quiet_prefect()
    with runtime.cli_api(cfg):
        from hsi_pipeline.flows.demo import demo as demo_flow

        try:
            summary = demo_flow(config=cfg_path, width=width, height=height)
        except Exception as e:
            raise _fail(e) from e
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    def short(path: str) -> str:  # local paths relative to the current directory, when below it
        if path and "://" not in path and os.path.isabs(path) and path.startswith(os.getcwd() + os.sep):
            return os.path.relpath(path)
        return path

    console = Console(width=max(140, Console().width))
    table = Table(title="hsi demo", show_lines=False)
    for col in ("step", "status", "item", "asset"):
        table.add_column(col, overflow="fold")
    for row in summary["rows"]:
        table.add_row(row["step"], row["status"], row["item"], short(row.get("asset", "")))
    console.print(table)
    console.print(f"catalog: {summary['catalog']}")
    console.print(f"assets:  {cfg.storage.root}")


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
