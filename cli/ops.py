"""``hsi plan``, ``hsi reprocess``, ``hsi lineage``, ``hsi backfill``, ``hsi replay``: operating the
catalog over time (docs/OPERATIONS.md). ``plan`` and ``lineage`` never import Prefect."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="settings file (hsi.yaml); default: $HSI_CONFIG or ./hsi-data"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _err(msg: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {msg}", fg="red", err=True)
    return typer.Exit(code)


def _config_path(config: Path | None) -> str | None:
    if config is None:
        return os.environ.get("HSI_CONFIG") or None
    if not config.is_file():
        raise _err(f"configuration file {config} does not exist")
    return str(config.resolve())


def _services(path: str | None) -> Any:
    from hsi.errors import HSIError
    from hsi.services import Services

    try:
        return Services.from_config(path)
    except HSIError as e:
        raise _err(str(e)) from e


def _since(value: str | None, name: str = "--since") -> datetime | None:
    if not value:
        return None
    from hsi.errors import InvalidInputError
    from hsi.planning import time_range

    try:
        return time_range(value, None)[0]
    except InvalidInputError as e:
        raise _err(f"{name}: {e}") from e


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*r)
    Console().print(t)  # fitted to the terminal; long cells fold


def _quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "hsi")


def _guard(fn: Any, *args: Any, **kw: Any) -> Any:
    from hsi.errors import HSIError

    try:
        return fn(*args, **kw)
    except HSIError as e:
        raise _err(str(e), 1) from e


# ------------------------------------------------------------------------------------------ plan
def _plan_rows(svc: Any, products: list[str] | None, bbox: str | None, start: str | None, end: str | None,
               sources: list[str] | None, scene_ids: list[str] | None = None) -> list[Any]:  # fmt: skip
    from hsi.operations import plan_catalog
    from hsi.planning import aoi_from, find_scenes, raw_collections, time_range

    scenes = None
    if scene_ids:  # only these scenes (a shared catalog may hold many)
        cols = _guard(raw_collections, sources or list(svc.config.sources) or None)
        scenes = _guard(lambda: list(svc.catalog.search(collections=cols, ids=scene_ids)))
        if missing_ids := sorted(set(scene_ids) - {r.id for r in scenes}):
            raise _err(f"no raw item {', '.join(missing_ids)} in {', '.join(cols)}", 1)
        return _guard(plan_catalog, svc, scenes=scenes, products=products or None)
    if bbox or start or end:
        if not bbox:
            raise _err("--start/--end need --bbox (the area of an on-demand request)")
        try:
            box = [float(v) for v in bbox.split(",")]
        except ValueError as e:
            raise _err(f"--bbox expects W,S,E,N numbers, got {bbox!r}") from e
        scenes = _guard(
            find_scenes, svc.catalog, _guard(aoi_from, bbox=box), _guard(time_range, start, end), sources
        )
    return _guard(plan_catalog, svc, scenes=scenes, products=products or None, sources=sources)


def plan(
    config: ConfigOpt = None,
    product: Annotated[
        list[str] | None,
        typer.Option(
            "--product", "-p", help="an on-demand request's products (default: the configured ones)"
        ),
    ] = None,
    bbox: Annotated[str | None, typer.Option(help="on-demand request: W,S,E,N (EPSG:4326)")] = None,
    start: Annotated[str | None, typer.Option(help="on-demand request: first acquisition date")] = None,
    end: Annotated[
        str | None, typer.Option(help="on-demand request: last acquisition date (inclusive)")
    ] = None,
    source: Annotated[list[str] | None, typer.Option(help="only these sources")] = None,
    scene: Annotated[list[str] | None, typer.Option(help="only these scenes (raw item ids)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Desired state vs the catalog, per scene and product: missing, stale, failed, up to date.

    Example: `hsi plan`
    """
    from hsi.operations import summary

    svc = _services(_config_path(config))
    rows = _plan_rows(svc, product, bbox, start, end, source, scene)
    counts = summary(rows)
    if as_json:
        typer.echo(json.dumps({"catalog": svc.catalog.href, "summary": counts, "rows": [r.as_dict() for r in rows]},
                              indent=2))  # fmt: skip
        return
    _table(f"hsi plan ({svc.catalog.href})", ["scene", "stage", "item", "state", "reason"],
           [[r.scene, r.product or "activate", f"{r.collection}/{r.item_id}", r.state,
             r.reason + (f" [{r.failed_at}]" if r.failed_at else "")] for r in rows])  # fmt: skip
    typer.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))


# ------------------------------------------------------------------------------------- reprocess
def reprocess(
    config: ConfigOpt = None,
    stale: Annotated[bool, typer.Option("--stale", help="items whose key or input changed")] = False,
    missing: Annotated[bool, typer.Option("--missing", help="desired items not in the catalog")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="items whose last run failed")] = False,
    product: Annotated[str | None, typer.Option(help="only this product (e.g. index:NDVI)")] = None,
    collection: Annotated[
        str | None, typer.Option(help="only items of this collection (raw, activated or product)")
    ] = None,
    scene: Annotated[list[str] | None, typer.Option(help="only these scenes (raw item ids)")] = None,
    since: Annotated[str | None, typer.Option(help="only scenes acquired at or after this date")] = None,
    downstream: Annotated[
        bool, typer.Option(help="re-activating a scene also redoes every product derived from it")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="scenes in flight at once (deployments)")] = 4,
    direct: Annotated[
        bool, typer.Option(help="run the flows in this process even when deployments exist")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the jobs, start nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Redo what the plan selects, through the Prefect deployments (or in this process). With no state
    flag: everything not up to date, or everything of --product/--collection (forced).

    Example: `hsi reprocess --stale --dry-run`
    """
    from hsi.operations import select_jobs

    path = _config_path(config)
    svc = _services(path)
    rows = _plan_rows(svc, None, None, None, None, None, scene)
    states = [s for s, on in (("stale", stale), ("missing", missing), ("failed", failed)) if on]
    jobs = _guard(select_jobs, svc, rows, states=states, product=product, collection=collection,
                  since=_since(since), downstream=downstream)  # fmt: skip
    payload = [j.as_dict() for j in jobs]
    if dry_run or not jobs:
        if as_json:
            typer.echo(json.dumps({"mode": "dry-run", "jobs": payload, "rows": []}, indent=2))
        else:
            for j in jobs:
                prods = ", ".join(p.product for p in j.products)
                typer.echo(f"{j.scene}\tactivate={'yes' if j.activate else 'no'}\tproducts={prods or '-'}")
            typer.echo(f"{len(jobs)} scene job(s)" + (" (dry run)" if dry_run else ""))
        return
    _quiet_prefect()
    from hsi_pipeline.flows.reprocess import deployments_available, submit_jobs
    from hsi_pipeline.flows.reprocess import reprocess as reprocess_flow

    api = os.environ.get("PREFECT_API_URL") or svc.config.prefect_api_url
    mode = "deployments" if not direct and deployments_available(api) else "direct"
    if mode == "deployments":
        out = submit_jobs(payload, limit=limit, api=api)
    else:
        from hsi_pipeline.cli.pipeline import invoke  # the configured API or the shared local server

        out = invoke(reprocess_flow, jobs=payload, config=path)
    _report("hsi reprocess", mode, jobs=payload, rows=out, as_json=as_json)


def _report(title: str, mode: str, *, rows: list[dict[str, Any]], as_json: bool, **extra: Any) -> None:
    bad = [r for r in rows if r["status"] == "failed"]
    if as_json:
        typer.echo(json.dumps({"mode": mode, **extra, "rows": rows}, indent=2, default=str))
    else:
        _table(f"{title} ({mode})", ["target", "status", "flow run", "reason"],
               [[f"{r.get('scene', '')} {r['target']}".strip(), r["status"], r.get("flow_run", ""), r["reason"]]
                for r in rows])  # fmt: skip
        typer.echo(f"{len(rows)} run(s), {len(bad)} failed")
    if bad:
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------- lineage
def lineage(
    item: Annotated[str, typer.Argument(help="COLLECTION/ID or a unique item id")],
    up: Annotated[bool, typer.Option("--up", help="only what the item was made from")] = False,
    down: Annotated[bool, typer.Option("--down", help="only what was made from the item")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The lineage graph of an item (raw -> activated -> products -> clips), from the catalog alone.

    Example: `hsi lineage aviris-ng-raw/aviris-ng-ang20240101t000000`
    """
    from hsi.lineage import lineage as walk

    svc = _services(_config_path(config))
    direction = "both" if up == down else ("up" if up else "down")
    g = _guard(walk, svc.catalog, item, direction)
    if as_json:
        typer.echo(json.dumps(g.as_dict(), indent=2))
        return
    root = f"{g.root[0]}/{g.root[1]}"

    def show(key: str, depth: int, nxt: Any, arrow: str, seen: set[str]) -> None:
        n = g.nodes.get(key, {})
        typer.echo(f"{'  ' * depth}{arrow}{key}  [{n.get('kind', '?')} {n.get('version', '')}]".rstrip())
        if key in seen:
            return
        for k in nxt(key):
            show(k, depth + 1, nxt, arrow if depth else ("<- " if nxt == g.parents else "-> "), seen | {key})

    if direction in ("up", "both"):
        for p in g.parents(root):
            show(p, 1, g.parents, "<- ", {root})
    typer.echo(root)
    if direction in ("down", "both"):
        for c in g.children(root):
            show(c, 1, g.children, "-> ", {root})


# -------------------------------------------------------------------------------------- backfill
def _listing(svc: Any, uri: str) -> Any:
    from hsi.backfill import Listed, split_s3

    bucket, prefix = split_s3(uri)
    store = svc.store_for(uri)
    client = store.client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []) or []:
            yield Listed(o["Key"], int(o.get("Size", 0)), (o.get("ETag") or "").strip('"') or None, None,
                         o.get("LastModified"))  # fmt: skip


def backfill(
    prefix: Annotated[str, typer.Argument(help="s3://bucket/prefix holding raw scenes")],
    pattern: Annotated[
        str | None, typer.Option(help="only keys matching this glob (** spans directories)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="only objects modified at or after this date")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most N scenes get an event")] = None,
    batch: Annotated[int, typer.Option(min=1, max=500, help="events per POST")] = 50,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be emitted")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Emit hsi.raw.available for the raw scenes under PREFIX that are not done yet (idempotent).

    Example: `hsi backfill s3://hsi-raw/incoming/ --dry-run`
    """
    from rich.progress import Progress

    from hsi.backfill import is_done, scan
    from hsi.bridge import rules_from_config

    if not prefix.startswith("s3://"):
        raise _err(f"{prefix!r}: backfill lists an s3://bucket/prefix")
    svc = _services(_config_path(config))
    api = os.environ.get("PREFECT_API_URL") or svc.config.prefect_api_url
    if not api and not dry_run:
        raise _err("no Prefect API: set PREFECT_API_URL or prefect_api_url in the configuration")
    from hsi.backfill import split_s3

    bucket, _ = split_s3(prefix)
    try:
        listing = list(_listing(svc, prefix))
    except Exception as e:
        raise _err(f"{prefix}: cannot list: {e}", 1) from e
    found = scan(bucket, listing, rules_from_config(svc.config), pattern=pattern, since=_since(since),
                 catalog_href=svc.catalog.href)  # fmt: skip
    todo: list[tuple[Any, str | None]] = []
    done: list[tuple[Any, str | None]] = []
    with Progress(transient=True) as bar:
        t = bar.add_task("checking the catalog", total=len(found.scenes))
        for s in found.scenes:
            why = _guard(is_done, svc, s)
            (done if why else todo).append((s, why))
            bar.advance(t)
    todo = todo[:limit] if limit else todo
    emitted: list[str] = []
    already: list[str] = []
    if not dry_run and todo:
        from hsi_pipeline.deployments.bridge.consumer import PrefectEvents

        events = PrefectEvents(api or "")
        with Progress(transient=True) as bar:
            t = bar.add_task("emitting hsi.raw.available", total=len(todo))
            for i in range(0, len(todo), batch):
                chunk = [s.event for s, _ in todo[i : i + batch]]
                existing = events.existing_ids([e["id"] for e in chunk])
                fresh = [e for e in chunk if e["id"] not in existing]
                events.post(fresh)
                emitted += [e["resource"]["hsi.item_id"] for e in fresh]
                already += [e["resource"]["hsi.item_id"] for e in chunk if e["id"] in existing]
                bar.advance(t, len(chunk))
        events.close()
    result = {
        "prefix": prefix, "listed": found.listed, "scenes": len(found.scenes), "done": len(done),
        "emitted": len(emitted), "already_emitted": len(already),
        "would_emit": len(todo) if dry_run else 0, "skipped_objects": len(found.skipped),
        "emitted_items": emitted, "already_emitted_items": already,
        "skipped": [{"key": k, "reason": r} for k, r in found.skipped],
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{prefix}: {found.listed} object(s), {len(found.scenes)} scene(s): {len(done)} done, "
               f"{len(emitted)} event(s) emitted, {len(already)} already emitted (not again), "
               f"{len(found.skipped)} object(s) skipped" + (f", {len(todo)} would be emitted (dry run)" if dry_run else ""))  # fmt: skip


# ---------------------------------------------------------------------------------------- replay
def replay(
    failed: Annotated[
        bool, typer.Option("--failed", help="re-run the scene/product runs whose last attempt failed")
    ] = False,
    since: Annotated[str | None, typer.Option(help="only failures at or after this date/time")] = None,
    limit: Annotated[int, typer.Option(min=1, help="runs in flight at once (deployments)")] = 4,
    direct: Annotated[
        bool, typer.Option(help="run the flows in this process even when deployments exist")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the failures, start nothing")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run failed work (one run per failure record; a run that fails again records its new reason).

    Example: `hsi replay --failed --dry-run`
    """
    from hsi.failures import list_failures

    if not failed:
        raise _err("say what to replay: --failed (the bridge's dead letters: hsi bridge replay)")
    path = _config_path(config)
    svc = _services(path)
    records = [r.as_dict() for r in list_failures(svc, since=_since(since))]
    if dry_run or not records:
        for r in records:
            typer.echo(f"{r['stage']}\t{r['collection']}/{r['item_id']}\t{r['failed_at']}\t{r['reason']}")
        typer.echo(f"{len(records)} failure(s)" + (" (dry run)" if dry_run else ""))
        return
    _quiet_prefect()
    from hsi_pipeline.flows.reprocess import deployments_available, replay_failed, submit_records

    api = os.environ.get("PREFECT_API_URL") or svc.config.prefect_api_url
    if not direct and deployments_available(api):
        out, mode = submit_records(records, limit=limit, api=api), "deployments"
    else:
        from hsi_pipeline.cli.pipeline import invoke  # the configured API or the shared local server

        out, mode = invoke(replay_failed, records=records, config=path), "direct"
    _report("hsi replay --failed", mode, rows=out, as_json=as_json, at=datetime.now(UTC).isoformat())


def register(app: typer.Typer) -> None:
    """Add the operations commands to the ``hsi`` app."""
    for fn in (plan, reprocess, lineage, backfill, replay):
        app.command(name=fn.__name__)(fn)
