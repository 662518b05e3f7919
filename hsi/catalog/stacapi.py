"""STAC API catalog backend: reads through pystac-client, writes through the Transaction extension.

* Reads of one item: ``GET /collections/{c}/items/{id}`` (404 -> None).
* Search, derived items, ids by prefix, collections: :mod:`hsi.catalog.stacapi_search`
  (pystac-client ``Client.open(url).search(...)``, paged, lazily).
* Writes: ``POST /collections`` (ensure), ``POST /collections/{c}/items`` and on 409 ``PUT .../items/{id}``
  (upsert), ``DELETE .../items/{id}``.
* Bulk writes (:meth:`StacApiCatalog.upsert_items`): ``POST /collections/{c}/bulk_items`` with
  ``{"items": {id: item}, "method": "upsert"}`` (the bulk transactions extension, on with the
  transactions in stac-fastapi-pgstac): one request and one pgstac transaction per chunk of
  :data:`BULK_CHUNK` items, then one collection refresh per collection. Items the API refuses are
  reported per item; a chunk the database refuses as a whole is retried item by item, so one bad
  item never stops the others. An API without the endpoint (404/405) gets per-item upserts.

Transport, credentials, retries and errors: :mod:`hsi.catalog.http` (5xx and connection errors
retried, then :class:`~hsi.errors.CatalogUnavailableError`; other refusals raise
:class:`~hsi.errors.CatalogError` at once; never a credential in a message or a log).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pystac

from hsi.catalog.base import item_key
from hsi.catalog.http import StacHttp
from hsi.catalog.stacapi_search import StacApiSearch
from hsi.errors import CatalogError, CatalogUnavailableError
from hsi.faults import fault_point
from hsi.stac.collections import merge_item

if TYPE_CHECKING:  # pragma: no cover
    from hsi.config import CatalogConfig

log = logging.getLogger(__name__)

# links the API owns and rewrites itself; sending ours would store stale/relative hrefs
_API_MANAGED_RELS = {"self", "root", "parent", "collection", "items"}
BULK_CHUNK = 500  # items per bulk request (one pgstac transaction each)


class StacApiCatalog(StacApiSearch):
    """A STAC API with the Transaction extension (e.g. stac-fastapi-pgstac). The reads (search,
    derived items, ids by prefix, collections) are :class:`StacApiSearch`'s; ``options`` are
    :class:`~hsi.catalog.http.StacHttp`'s (``auth``, ``timeout_s``, ``retries``, ``backoff_s``,
    ``session``)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(StacHttp(url, **options))

    @classmethod
    def from_config(cls, cfg: CatalogConfig, **overrides: Any) -> StacApiCatalog:
        kw: dict[str, Any] = {"auth": cfg.auth, "timeout_s": cfg.timeout_s, "retries": cfg.retries}
        kw.update(overrides)
        return cls(cfg.url, **kw)

    # ------------------------------------------------------------------ Catalog protocol

    @property
    def href(self) -> str:
        return self._http.url

    def item_href(self, collection_id: str, item_id: str) -> str:
        return f"{self.href}/collections/{quote(collection_id, safe='')}/items/{quote(item_id, safe='')}"

    def collection_href(self, collection_id: str) -> str:
        return f"{self.href}/collections/{quote(collection_id, safe='')}"

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        return self._get(self.item_href(collection_id, item_id), pystac.Item, "item")

    def get_collection(self, collection_id: str) -> pystac.Collection | None:
        return self._get(self.collection_href(collection_id), pystac.Collection, "collection")

    def _get(self, url: str, cls: Any, what: str) -> Any:
        """GET one STAC object: None on 404, CatalogError for anything else that is not a valid ``what``."""
        resp = self._http.request("GET", url)
        if resp.status_code == 404:
            return None
        self._http.raise_for(resp, url, f"get {what}")
        data = self._http.json(resp, url)
        try:
            return cls.from_dict(data, preserve_dict=False)
        except Exception as e:
            raise CatalogError(
                url, f"response is not a valid STAC {what}: {type(e).__name__}: {e}", resp.status_code
            ) from e

    def ensure_collection(self, collection: pystac.Collection) -> None:
        url = self.collection_href(collection.id)
        resp = self._http.request("GET", url)
        if resp.status_code == 200:
            return
        if resp.status_code != 404:
            self._http.raise_for(resp, url, "get collection")
        body = self._clean(collection.to_dict(include_self_link=False, transform_hrefs=False))
        post_url = f"{self.href}/collections"
        resp = self._http.request("POST", post_url, body)
        if resp.status_code in (200, 201, 409):  # 409: created concurrently by someone else: fine
            log.info("collection %s ensured in %s", collection.id, self.href)
            return
        self._http.raise_for(resp, post_url, f"create collection {collection.id}")

    def upsert_item(self, item: pystac.Item) -> None:
        cid = item.collection_id
        if not cid:
            raise CatalogError(self.href, f"item {item.id} has no collection id; cannot register it")
        body = self._clean(item.to_dict(include_self_link=False, transform_hrefs=False))
        body["collection"] = cid
        items_url = f"{self.collection_href(cid)}/items"
        item_url = self.item_href(cid, item.id)
        fault_point("mid-register")
        # POST; on conflict PUT; if it vanished between the two (concurrent delete) POST again
        for _ in range(3):
            try:
                resp = self._http.request("POST", items_url, body)
            except CatalogUnavailableError:
                # pgstac answers 500 (not 404) to an item POST into a missing collection: say so clearly
                if self._http.status("GET", self.collection_href(cid)) == 404:
                    raise CatalogError(
                        items_url, f"collection {cid} does not exist (ensure_collection first)", 404
                    ) from None
                raise
            if resp.status_code in (200, 201):
                self._refresh_collection(cid, body)
                return
            if resp.status_code == 404:
                raise CatalogError(
                    items_url, f"collection {cid} does not exist (ensure_collection first)", 404
                )
            if resp.status_code != 409:
                self._http.raise_for(resp, items_url, f"create item {cid}/{item.id}")
            resp = self._http.request("PUT", item_url, body)
            if resp.status_code in (200, 201, 204):
                self._refresh_collection(cid, body)
                return
            if resp.status_code != 404:
                self._http.raise_for(resp, item_url, f"replace item {cid}/{item.id}")
        raise CatalogError(
            item_url, "item kept appearing and disappearing during upsert (concurrent deletes?)"
        )

    def upsert_items(self, items: Sequence[pystac.Item]) -> dict[str, str]:
        """Upsert many items through the bulk endpoint; failures per ``collection/id`` (see the module
        docstring). Raises CatalogUnavailableError only when the API cannot be reached at all."""
        failed: dict[str, str] = {}
        by_coll: dict[str, list[pystac.Item]] = {}
        for item in items:
            if not item.collection_id:
                failed[item_key(item)] = "the item has no collection id"
                continue
            by_coll.setdefault(item.collection_id, []).append(item)
        for cid, group in by_coll.items():
            docs = {}
            for item in group:
                body = self._clean(item.to_dict(include_self_link=False, transform_hrefs=False))
                body["collection"] = cid
                docs[item.id] = body
            ids = list(docs)
            if self._http.status("GET", self.collection_href(cid)) == 404:  # pgstac would answer 500
                reason = f"collection {cid} does not exist (ensure_collection first)"
                failed.update({f"{cid}/{i}": reason for i in ids})
                continue
            for start in range(0, len(ids), BULK_CHUNK):
                chunk = {i: docs[i] for i in ids[start : start + BULK_CHUNK]}
                failed.update(self._bulk_chunk(cid, chunk))
            ok = [docs[i] for i in ids if f"{cid}/{i}" not in failed]
            if ok:
                self._refresh_collection(cid, *ok)
        return failed

    def _bulk_chunk(self, cid: str, docs: dict[str, dict[str, Any]]) -> dict[str, str]:
        """One bulk request; on a refusal of the whole chunk, one upsert per item."""
        url = f"{self.collection_href(cid)}/bulk_items"
        fault_point("mid-register")
        try:
            resp = self._http.request("POST", url, {"items": docs, "method": "upsert"})
        except CatalogUnavailableError:
            if self._http.status("GET", f"{self.href}/_mgmt/ping") is None:
                raise  # the API is gone: nothing can be tried
            resp = None  # the chunk failed as a whole (e.g. one item pgstac cannot store)
        if resp is not None and resp.status_code in (200, 201):
            errors = {}
            try:
                body = resp.json()
                errors = {str(e.get("id")): str(e.get("msg")) for e in body.get("errors") or []}
            except (ValueError, AttributeError):
                pass
            return {f"{cid}/{i}": f"refused by {url}: {m}"[:500] for i, m in errors.items()}
        if resp is not None and resp.status_code in (401, 403):
            self._http.raise_for(resp, url, f"bulk upsert into {cid}")
        if (
            resp is not None
            and resp.status_code == 404
            and self._http.status("GET", self.collection_href(cid)) == 404
        ):
            reason = f"collection {cid} does not exist (ensure_collection first)"
            return {f"{cid}/{i}": reason for i in docs}
        log.info(
            "bulk upsert of %d items into %s %s: one upsert per item",
            len(docs),
            cid,
            f"answered HTTP {resp.status_code}" if resp is not None else "failed",
        )
        failed = {}
        for iid, doc in docs.items():
            try:
                self.upsert_item(pystac.Item.from_dict(doc, preserve_dict=False))
            except CatalogUnavailableError:
                raise
            except Exception as e:
                failed[f"{cid}/{iid}"] = f"{type(e).__name__}: {e}"[:500]
        return failed

    def _refresh_collection(self, cid: str, *item_docs: dict[str, Any]) -> None:
        """Fold the item into the collection's extent, summaries and item_assets (PUT when changed).

        Best effort after the commit point: a failure is logged, never raised (the item is registered);
        two concurrent writers may each miss the other's contribution until the next item arrives.
        """
        url = self.collection_href(cid)
        try:
            resp = self._http.request("GET", url)
            if resp.status_code != 200:
                return
            col = self._http.json(resp, url)
            new = col
            for doc in item_docs:
                new = merge_item(new, doc)
            if new != col:
                new["links"] = [
                    lk
                    for lk in new.get("links", [])
                    if lk.get("rel") not in ("self", "root", "parent", "items")
                ]
                put = self._http.request("PUT", url, self._clean(new))
                if put.status_code not in (200, 201, 204):
                    log.warning("could not update collection %s: HTTP %s", cid, put.status_code)
        except Exception as e:  # the item is registered; the summary catches up with the next item
            log.warning("could not update collection %s: %s", cid, e)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        url = self.item_href(collection_id, item_id)
        resp = self._http.request("DELETE", url)
        if resp.status_code == 404:
            return False
        if resp.status_code in (200, 202, 204):
            return True
        self._http.raise_for(resp, url, "delete item")
        return True  # pragma: no cover

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _clean(d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d)
        d["links"] = [ln for ln in d.get("links", []) if ln.get("rel") not in _API_MANAGED_RELS]
        return d


__all__ = ["StacApiCatalog"]
