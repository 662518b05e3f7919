"""The ``hsi`` command line: an edge that parses arguments and calls flows or the hsi library.

Commands live in modules next to this one (pipeline, catalog, products, config, run, deploy, stack,
bridge). Prefect is imported only by the commands that run flows, and only after their inputs were
checked, so mistakes, ``hsi products``, ``hsi items`` and ``--help`` answer fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hsi_pipeline.cli.bridge import app as bridge_app
from hsi_pipeline.cli.catalog import info as info_command
from hsi_pipeline.cli.catalog import items as items_command
from hsi_pipeline.cli.checks import SYNTH_SOURCES, require_choice
from hsi_pipeline.cli.clean import clean as clean_command
from hsi_pipeline.cli.common import EXIT_CODES_HELP, ConfigOpt, fail, report_error, setup_logging
from hsi_pipeline.cli.config import app as config_app
from hsi_pipeline.cli.deploy import deploy as deploy_command
from hsi_pipeline.cli.ops import register as register_ops
from hsi_pipeline.cli.pipeline import activate, demo, index, product
from hsi_pipeline.cli.products import app as products_app
from hsi_pipeline.cli.run import run as run_command
from hsi_pipeline.cli.server import app as server_app
from hsi_pipeline.cli.stack import app as stack_app

app = typer.Typer(
    name="hsi",
    help="hsi-pipeline: hyperspectral scenes -> analysis-ready COGs, products and STAC, with Prefect.\n\n"
    + EXIT_CODES_HELP
    + "\n\nExample: `hsi demo --width 32 --height 48`",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Prefect's normal log lines instead of bars")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="debug logs and the traceback of any error")] = False,
) -> None:
    setup_logging(verbose, debug)


app.add_typer(products_app, name="products")
app.add_typer(stack_app, name="stack")
app.add_typer(bridge_app, name="bridge")
app.add_typer(config_app, name="config")
app.add_typer(server_app, name="server")
app.command(name="deploy")(deploy_command)
app.command(name="run")(run_command)
app.command(name="index")(index)
app.command(name="activate")(activate)
app.command(name="product")(product)
app.command(name="demo")(demo)
app.command(name="items")(items_command)
app.command(name="info")(info_command)
app.command(name="clean")(clean_command)
register_ops(app)  # plan, reprocess, lineage, backfill, replay (cli/ops.py)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="directory to write the scene into")] = Path("hsi-data/raw"),
    source: Annotated[str, typer.Option(help="aviris-ng | aviris-classic | emit")] = "aviris-ng",
    level: Annotated[
        str, typer.Option(help="l1b (radiance) | l2 (reflectance; EMIT: l2a) | l2a (EMIT reflectance)")
    ] = "l2",
    width: Annotated[int | None, typer.Option(help="samples (default 256; EMIT: 1242 cross-track)")] = None,
    height: Annotated[int | None, typer.Option(help="lines (default 512; EMIT: 1280 down-track)")] = None,
    rotation: Annotated[float, typer.Option(help="grid rotation in degrees (map info rotation=)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed (also picks the scene id)")] = 0,
    archive: Annotated[bool, typer.Option(help="pack the scene as .tar.gz like JPL ships it")] = False,
    truth: Annotated[bool, typer.Option(help="also write the ground-truth class map")] = False,
    config: ConfigOpt = None,
) -> None:
    """Write a realistic synthetic AVIRIS scene or EMIT granule (exact file format, real band tables),
    streaming.

    Example: `hsi synth raw --width 32 --height 48`, `hsi synth raw --source emit --level l2a`
    """
    from rich.console import Console
    from rich.progress import Progress

    from hsi.sources.synthetic import synthesize

    require_choice("--source", source, SYNTH_SOURCES)
    if source == "emit":
        from hsi.sources.emit_synth import synthesize_emit

        lvl = {"l2": "l2a", "l2a": "l2a", "l1b": "l1b"}.get(level)
        if lvl is None:
            fail(f"--level for emit must be l1b or l2a, got '{level}'")
        with Progress(transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task(f"synthesizing EMIT {lvl}", total=height or 1280)
            path = synthesize_emit(
                out_dir,
                level=lvl,  # type: ignore[arg-type]
                crosstrack=width or 1242,
                downtrack=height or 1280,
                seed=seed,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        typer.echo(str(path))
        return
    width, height = width or 256, height or 512
    with Progress(transient=True, console=Console(stderr=True)) as bar:
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


def main() -> None:  # console entry point
    """Run the CLI: our own errors (hsi.errors, CLI mistakes) are one line with their exit code."""
    try:
        app()
    except Exception as e:  # click handles its own usage errors; SystemExit passes through
        sys.exit(report_error(e))


if __name__ == "__main__":  # pragma: no cover
    main()
