"""Catalog commands: ``hsi items`` (what is there) and ``hsi info ID`` (one item: summary, assets,
provenance, what it derives from and what derives from it), on a static catalog or a STAC API alike.

Uses :mod:`hsi.catalog` only (never prefect).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from hsi_pipeline.cli.checks import catalog_of as _catalog_of
from hsi_pipeline.cli.checks import known_ids
from hsi_pipeline.cli.common import EXIT_NOT_FOUND, ConfigOpt, config_arg, fail, load

__all__ = ["info", "items"]


def catalog_of(cfg: Any) -> Any:
    catalog = _catalog_of(cfg)
    if catalog is None:
        fail(f"catalog {cfg.catalog.url} is read with storage.credentials_block, which only the flows "
             "resolve; give storage.aws_profile or the AWS environment to read it here")  # fmt: skip
    return catalog


def _row(item: Any) -> dict[str, Any]:
    p = item.properties
    dt = p.get("datetime") or p.get("start_datetime") or ""
    return {
        "collection": item.collection_id or "",
        "id": item.id,
        "datetime": dt,
        "level": p.get("processing:level", ""),
        "assets": sorted(item.assets),
        "href": item.get_self_href() or "",
    }


def items(
    collection: Annotated[
        list[str] | None, typer.Option("--collection", help="only this collection (repeatable)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many items")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print the items as JSON lines")] = False,
    config: ConfigOpt = None,
) -> None:
    """List the items of the configured catalog (collection, id, date, processing level, assets).

    Example: `hsi items --collection aviris-ng-raw`
    """
    cfg = load(config_arg(config))
    catalog = catalog_of(cfg)
    rows = [_row(i) for i in catalog.search(collections=collection or None, limit=limit)]
    rows.sort(key=lambda r: (r["collection"], r["id"]))
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if rows:
        table = Table(box=None, pad_edge=False)
        for col in ("collection", "id", "datetime", "level"):
            table.add_column(col, no_wrap=True)
        table.add_column("assets", no_wrap=True, overflow="ellipsis")
        for r in rows:
            table.add_row(r["collection"], r["id"], r["datetime"][:19], r["level"], ", ".join(r["assets"]))
        con.print(table)
    con.print(f"{len(rows)} item(s) in {catalog.href}", overflow="fold", markup=False)


def _find(catalog: Any, item_id: str, collection: str | None) -> list[Any]:
    if collection:
        item = catalog.get_item(collection, item_id)
        return [item] if item is not None else []
    return list(catalog.search(ids=[item_id]))


def _describe(catalog: Any, item: Any) -> dict[str, Any]:
    p = item.properties
    run = p.get("hsi:flow_run") or {}
    return {
        **_row(item),
        "bbox": item.bbox,
        "product_key": p.get("hsi:product_key", ""),
        "algorithm": p.get("hsi:algorithm"),
        "parameters": p.get("hsi:parameters"),
        "assets": {
            k: {"href": a.href, "type": a.media_type or "", "size": a.extra_fields.get("file:size")}
            for k, a in sorted(item.assets.items())
        },
        "provenance": {
            "lineage": p.get("processing:lineage", ""),
            "processed": p.get("processing:datetime", ""),
            "flow_run": {k: v for k, v in run.items() if v} if isinstance(run, dict) else run,
            "software": p.get("processing:software") or {},
        },
        "derived_from": [
            f"{i.get('collection')}/{i.get('id')}" for i in p.get("hsi:inputs") or [] if isinstance(i, dict)
        ],
        "derived": sorted(
            f"{d.collection_id}/{d.id}" for d in catalog.derived(item.collection_id or "", item.id)
        ),
    }


def info(
    item_id: Annotated[str, typer.Argument(help="item id, e.g. aviris-ng-ang20240101t000000")],
    collection: Annotated[str | None, typer.Option(help="only in this collection")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show an item: summary, assets, provenance, what it derives from and what derives from it.

    Raw and activated items share their id: both are shown unless --collection picks one.
    Example: `hsi info aviris-ng-ang20240101t000000`
    """
    cfg = load(config_arg(config))
    catalog = catalog_of(cfg)
    found = _find(catalog, item_id, collection)
    if not found:
        from hsi.names import close_matches

        close = close_matches(item_id, known_ids(catalog, [collection] if collection else None))
        did = f"; did you mean: {', '.join(close)}" if close else ""
        where = f"{collection}/" if collection else ""
        fail(f"unknown item '{where}{item_id}' in catalog {catalog.href}{did} (`hsi items` lists what is there)",
             EXIT_NOT_FOUND)  # fmt: skip
    docs = [_describe(catalog, i) for i in sorted(found, key=lambda i: i.collection_id or "")]
    if as_json:
        typer.echo(json.dumps(docs if len(docs) > 1 else docs[0], indent=2, default=str))
        return
    for n, d in enumerate(docs):
        if n:
            typer.echo("")
        _print(d)


def _print(d: dict[str, Any]) -> None:
    """Plain lines (never wrapped: hrefs stay copyable)."""
    echo = typer.echo
    echo(f"{d['collection']}/{d['id']}  {d['datetime']}  level {d['level'] or '-'}")
    echo(f"  href: {d['href']}")
    if d["algorithm"]:
        alg = d["algorithm"]
        echo(f"  algorithm: {alg.get('name')} {alg.get('version')}  key {d['product_key'][:16]}")
    if d["parameters"]:
        echo(f"  parameters: {json.dumps(d['parameters'])}")
    echo("assets:")
    for k, a in d["assets"].items():
        size = f"  {a['size']} B" if a["size"] is not None else ""
        echo(f"  {k}: {a['href']}  ({a['type'] or '?'}){size}")
    prov = d["provenance"]
    if prov["lineage"] or prov["flow_run"]:
        echo("provenance:")
        if prov["lineage"]:
            echo(f"  {prov['lineage']}")
        run = prov["flow_run"] or {}
        if run:
            name = run.get("name") or run.get("id") or "?"
            via = ", ".join(f"{k} {run[k]}" for k in ("deployment_name", "work_pool") if run.get(k))
            echo(f"  flow run: {run.get('flow_name', '?')} / {name}" + (f" ({via})" if via else ""))
            if run.get("ui_url"):
                echo(f"  ui: {run['ui_url']}")
        if prov["processed"]:
            echo(f"  processed: {prov['processed']}")
    echo("derives from: " + (", ".join(d["derived_from"]) or "-"))
    echo("derived: " + (", ".join(d["derived"]) or "-"))
