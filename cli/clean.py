"""``hsi clean``: reclaim what killed runs left behind (scratch, unfinished uploads), and more on request.

Without options: the scratch directories of runs whose process is dead (``<work_dir>/runs/``, with the
multipart uploads they recorded aborted), partial files of dead writers in a local store, and
unfinished S3 multipart uploads below the storage root older than ``--uploads-older-than``.
``--work`` also empties the work directory (raw staging copies, extraction caches, leases) except the
scratch of live runs. ``--all`` also deletes the catalog and the assets (asks first; ``--yes`` does not):
a static catalog (on disk or S3) and every object below the storage root. A STAC API catalog is left
alone (its collections may be shared; delete them with the API's own tools) and the message says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _empty_work(work_dir: Path) -> list[tuple[str, int]]:
    """Everything in the work directory but the ``runs/`` scratch (live runs' is kept by reclaim)."""
    from hsi.scratch import RUNS_DIR, du

    removed = []
    for p in sorted(work_dir.iterdir()) if work_dir.is_dir() else []:
        if p.name == RUNS_DIR:
            continue
        size = du(p) if p.is_dir() else p.stat().st_size
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append((str(p), size))
    return removed


def _delete_tree(store: Any) -> int:
    root = store.root
    if "://" not in root:
        n = sum(1 for p in Path(root).rglob("*") if p.is_file())
        shutil.rmtree(root, ignore_errors=True)
        return n
    return sum(1 for uri in list(store.list(root)) if store.delete(uri))


def clean(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="settings file (hsi.yaml); default: $HSI_CONFIG or ./hsi-data"),
    ] = None,
    work: Annotated[
        bool, typer.Option("--work", help="also empty the work directory (caches, staging)")
    ] = False,
    everything: Annotated[
        bool,
        typer.Option("--all", help="also delete the catalog (static) and every asset below the storage root"),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before --all deletes")] = False,
    uploads_older_than: Annotated[
        float, typer.Option(help="abort unfinished uploads below the storage root older than this (seconds)")
    ] = 3600.0,
) -> None:
    """Reclaim the scratch and unfinished uploads of killed runs (and more with --work / --all).

    Example: `hsi clean`
    """
    from hsi.config import load_config
    from hsi.errors import HSIError
    from hsi.services import Services

    cfg_path = str(config) if config is not None else None
    if config is not None and not config.is_file():
        typer.secho(f"error: configuration file {config} does not exist", fg="red", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_config(cfg_path)
        svc = Services.from_config(cfg)
    except HSIError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    catalog_url = cfg.catalog.url
    is_api = catalog_url.startswith(("http://", "https://"))
    if everything and not yes:
        what = f"the assets below {svc.store.root}" + (
            "" if is_api else f" and the catalog {svc.catalog.href}"
        )
        if not typer.confirm(f"delete {what}?", default=False):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
    total = 0
    try:
        for r in svc.reclaim_runs(
            everything=work or everything, grace_s=0.0 if work or everything else 600.0
        ):
            total += r.bytes
            typer.echo(f"removed\t{r.path}\t{_size(r.bytes)}\t{r.reason}")
            for u in r.undone:
                typer.echo(f"aborted\t{u}\tupload recorded by that run")
        for u in svc.abort_stale_uploads(older_than_s=0.0 if everything else uploads_older_than):
            typer.echo(f"aborted\t{u}\tunfinished upload")
        if work or everything:
            for path, size in _empty_work(svc.work_dir):
                total += size
                typer.echo(f"removed\t{path}\t{_size(size)}\twork directory")
        if everything:
            n = _delete_tree(svc.store)
            typer.echo(f"removed\t{svc.store.root}\t{n} objects\tassets")
            if is_api:
                typer.echo(
                    f"kept\t{catalog_url}\tSTAC API catalog (delete its collections with the API's tools)"
                )
            else:
                cat_store = getattr(svc.catalog, "store", None)
                if cat_store is not None and cat_store.root != svc.store.root:
                    n = _delete_tree(cat_store)
                typer.echo(f"removed\t{svc.catalog.href}\t{n} files\tstatic catalog")
    except HSIError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"reclaimed {_size(total)} of scratch")
