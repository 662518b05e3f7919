"""Checks made before any orchestration starts: files, item ids, product names and parameters.

Each failed check ends the command through :func:`~hsi_pipeline.cli.common.fail`: one line naming the thing and what to
do, with close matches for ids and products. Uses the hsi library only (never prefect), so a mistake
is answered in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hsi_pipeline.cli.common import EXIT_NOT_FOUND, EXIT_USAGE, fail

__all__ = [
    "DEMO_SOURCES",
    "SYNTH_SOURCES",
    "catalog_of",
    "known_ids",
    "require_activated",
    "require_choice",
    "require_product",
    "require_raw",
    "require_scenes",
]

SYNTH_SOURCES = ("aviris-ng", "aviris-classic", "emit")  # what `hsi synth --source` writes
DEMO_SOURCES = ("aviris-ng", "emit")  # what `hsi demo --source` runs end to end

_SUGGEST_SCAN = 5000  # items looked at for "did you mean" (only on the error path)


def require_scenes(hrefs: Sequence[str]) -> None:
    """Every local path exists and every directory holds at least one scene."""
    for href in hrefs:
        if "://" in href and not href.startswith("file://"):
            continue  # s3://, http(s): checked by the flow (a HEAD costs as much as the work)
        p = Path(href[7:] if href.startswith("file://") else href)
        if not p.exists():
            fail(f"{href}: no such file or directory (give an ENVI header or data file, an archive, "
                 "a directory of scenes, an s3:// key or a URL)", EXIT_NOT_FOUND)  # fmt: skip
        if p.is_dir() and not _has_scenes(p):
            fail(f"{href}: no scenes found in this directory (looked for ENVI headers *.hdr and archives)",
                 EXIT_NOT_FOUND)  # fmt: skip


def _has_scenes(p: Path) -> bool:
    from hsi.indexing import discover_scenes

    return bool(discover_scenes(str(p)))


def catalog_of(cfg: Any) -> Any:
    """The configured catalog (no object store, no prefect); None for an s3:// catalog reached
    through a Prefect credentials block (resolved only inside the flows)."""
    from hsi.catalog import open_catalog
    from hsi.catalog.static import StaticCatalog
    from hsi.storage import open_store

    c = cfg.catalog
    if c.url.startswith(("http://", "https://")):
        return open_catalog(c.url, auth=c.auth, timeout_s=c.timeout_s, retries=c.retries)
    if c.url.startswith("s3://"):
        if cfg.storage.credentials_block:
            return None
        from hsi.services import access_opts

        return StaticCatalog(c.url, store=open_store(c.url, **access_opts(cfg.storage, None, "storage")))
    return open_catalog(c.url)


def known_ids(
    catalog: Any, collections: Iterable[str] | None = None, limit: int = _SUGGEST_SCAN
) -> list[str]:
    """Item ids in the catalog (first ``limit``), for suggestions."""
    from hsi.errors import CatalogError

    try:
        return [
            i.id for i in catalog.search(collections=list(collections) if collections else None, limit=limit)
        ]
    except CatalogError:
        return []


def _unknown_item(catalog: Any, item_id: str, what: str, hint: str) -> None:
    from hsi.names import close_matches

    close = close_matches(item_id, known_ids(catalog))
    did = f"; did you mean: {', '.join(close)}" if close else ""
    fail(f"unknown {what} '{item_id}' in catalog {catalog.href}{did} ({hint})", EXIT_NOT_FOUND)


def require_raw(cfg: Any, item_ids: Sequence[str], collection: str | None = None) -> None:
    """Each id is an indexed raw item (else: close ids and "run `hsi index PATH` first")."""
    from hsi.errors import ItemNotFoundError
    from hsi.indexing import find_raw_item
    from hsi.services import Services

    catalog = catalog_of(cfg)
    if catalog is None:
        return  # the flow reads it with the credentials block
    svc = Services(config=cfg, store=None, catalog=catalog)  # type: ignore[arg-type]  # catalog reads only
    for item_id in item_ids:
        try:
            find_raw_item(svc, item_id, collection)
        except ItemNotFoundError:
            _unknown_item(
                catalog, item_id, "raw item", "run `hsi index PATH` first; `hsi items` lists what is there"
            )


def require_activated(cfg: Any, item_id: str, collection: str | None = None) -> None:
    """``item_id`` is an activated item (else: "run `hsi activate ID` first" or close ids)."""
    from hsi.errors import ItemNotFoundError
    from hsi.indexing import find_raw_item
    from hsi.production import find_activated_item
    from hsi.services import Services

    catalog = catalog_of(cfg)
    if catalog is None:
        return  # the flow reads it with the credentials block
    svc = Services(config=cfg, store=None, catalog=catalog)  # type: ignore[arg-type]  # catalog reads only
    try:
        find_activated_item(svc, item_id, collection)
        return
    except ItemNotFoundError:
        pass
    try:
        find_raw_item(svc, item_id)
    except ItemNotFoundError:
        _unknown_item(catalog, item_id, "item", "run `hsi index PATH` and `hsi activate ID` first; "
                      "`hsi items` lists what is there")  # fmt: skip
    where = f" in collection {collection}" if collection else ""
    fail(f"item '{item_id}' is indexed but not activated{where}: run `hsi activate {item_id}` first",
         EXIT_NOT_FOUND)  # fmt: skip


def require_product(name: str, params: dict[str, Any] | None = None) -> None:
    """``name`` is a registered product and ``params`` are valid for it."""
    from hsi.errors import ProductError
    from hsi.products import get_product

    try:
        product = get_product(name)
    except ProductError as e:
        fail(str(e), EXIT_NOT_FOUND)
    from hsi.quantities import parse_request_params

    try:
        parse_request_params(product, params)
    except ProductError as e:
        fail(f"{e} (see `hsi products show {product.name}`)", EXIT_USAGE)


def require_choice(option: str, value: str, choices: Sequence[str]) -> None:
    """``value`` of ``option`` is one of ``choices``, else one line with the close matches."""
    if value in choices:
        return
    from hsi.names import close_matches

    close = close_matches(value, choices)
    fail(f"{option}: unknown value '{value}'" + (f"; did you mean: {', '.join(close)}" if close else "")
         + f" (choose from: {', '.join(choices)})")  # fmt: skip
