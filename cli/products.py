"""`hsi products ...`: list registered products and show one product's contract.

A ``typer.Typer()`` named ``app``, mounted by cli/main.py as ``hsi products``. Never imports prefect.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import typer

from hsi.errors import ProductError
from hsi_pipeline.cli.common import EXIT_NOT_FOUND, ConfigOpt, config_arg, fail, load

__all__ = ["app"]

app = typer.Typer(
    help="Spectral products: indices, oil-spill, tree-mortality, SAM, PCA ...", no_args_is_help=True
)


def _with_processors(config: Path | None) -> None:
    """With -c or $HSI_CONFIG, the configuration's processors are listed/shown too."""
    path = config_arg(config)
    if path is not None:
        load(path)


@app.command("list")
def list_cmd(
    family: str = typer.Option("", "--family", "-f", help="only names starting with this (e.g. 'index:')"),
    builtin_indices: bool = typer.Option(
        True, "--indices/--no-indices", help="include the spyndex index:* family"
    ),
    config: ConfigOpt = None,
) -> None:
    """List product names with version and title.

    Example: `hsi products list --family index:`
    """
    _with_processors(config)
    from hsi.products.registry import default_registry

    reg = default_registry()
    for name in reg.names():
        if family and not name.startswith(family):
            continue
        p = reg.get(name)
        if not builtin_indices and p.kind == "index" and "spyndex" in p.version:
            continue
        typer.echo(f"{name}\t{p.version}\t{p.title}")


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="product name, e.g. oil-spill or index:NDVI"),
    config: ConfigOpt = None,
) -> None:
    """Show a product's inputs, parameters (with defaults) and output bands.

    Example: `hsi products show oil-spill`
    """
    _with_processors(config)
    from hsi.products.registry import default_registry

    try:
        p = default_registry().get(name)
    except ProductError as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    typer.echo(f"{p.name}  (version {p.version})")
    typer.echo(f"  {p.title}")
    if p.reference:
        typer.echo(f"  reference: {p.reference}")
    if "formula" in p.extra:
        typer.echo(f"  formula: {p.extra['formula']}")
    if p.requires_quantity:
        typer.echo(f"  input quantity: {p.requires_quantity} (refuses other cubes)")
    if p.notes:
        typer.echo("notes:")
        for line in textwrap.wrap(p.notes, width=106):
            typer.echo(f"  {line}")
    typer.echo("inputs:")
    for spec in p.inputs:
        typer.echo(f"  {spec.describe()}")
    typer.echo("parameters:")
    rows = p.param_table()
    if not rows:
        typer.echo("  (none)")
    for pname, ptype, default, desc in rows:
        shown = default if default == "<required>" else repr(default)
        typer.echo(f"  {pname}: {ptype} = {shown}" + (f"  -- {desc}" if desc else ""))
    out = p.output
    typer.echo(f"outputs ({out.dtype}, nodata {out.nodata:g}):")
    for b in out.bands:
        typer.echo(f"  {b.name}: {b.description}")
    if out.classes:
        typer.echo("classes: " + ", ".join(f"{k}={v}" for k, v in out.classes.items()))
