"""STAC API catalog backend: search with pystac-client, writes through the Transaction extension.

* Reads of one item: ``GET /collections/{c}/items/{id}`` (404 -> None).
* Search: pystac-client ``Client.open(url).search(...)`` (paged, lazily).
* Writes: ``POST /collections`` (ensure), ``POST /collections/{c}/items`` and on 409 ``PUT .../items/{id}``
  (upsert), ``DELETE .../items/{id}``.
* Bulk writes (:meth:`StacApiCatalog.upsert_items`): ``POST /collections/{c}/bulk_items`` with
  ``{"items": {id: item}, "method": "upsert"}`` (the bulk transactions extension, on with the
  transactions in stac-fastapi-pgstac): one request and one pgstac transaction per chunk of
  :data:`BULK_CHUNK` items, then one collection refresh per collection. Items the API refuses are
  reported per item; a chunk the database refuses as a whole is retried item by item, so one bad
  item never stops the others. An API without the endpoint (404/405) gets per-item upserts.

Failures: 5xx answers and connection errors are retried with exponential backoff, then raise
:class:`CatalogUnavailableError` (transient); any other non-success answer (401, 403, 4xx) raises
:class:`CatalogError` at once. Messages name the URL and the HTTP status, never a credential.

Credentials (bearer token or basic user/password) are read from environment variables whose
*names* the configuration gives. They are attached by a transport adapter at send time, only for
requests to the catalog's own origin, so they appear neither in debug logs of the request
(pystac-client logs prepared headers) nor in redirects to other hosts.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pystac
import requests
from requests.adapters import HTTPAdapter

from hsi.catalog.base import BBox, DatetimeRange, derives_from, item_key
from hsi.config import CatalogAuth
from hsi.errors import CatalogError, CatalogUnavailableError
from hsi.faults import fault_point
from hsi.stac.collections import merge_item

if TYPE_CHECKING:  # pragma: no cover
    from pystac_client import Client

    from hsi.config import CatalogConfig

log = logging.getLogger(__name__)

# links the API owns and rewrites itself; sending ours would store stale/relative hrefs
_API_MANAGED_RELS = {"self", "root", "parent", "collection", "items"}
_MAX_BACKOFF_S = 8.0
BULK_CHUNK = 500  # items per bulk request (one pgstac transaction each)


class _AuthAdapter(HTTPAdapter):
    """Adds the Authorization header at send time, only for the catalog's origin."""

    def __init__(self, origin: str, header: str | None, **kw: Any) -> None:
        self._origin = origin
        self._header = header
        super().__init__(**kw)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if self._header and request.url and _origin(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        return super().send(request, *args, **kwargs)


def _origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}".lower()


def _auth_header(url: str, auth: CatalogAuth | None) -> tuple[str | None, list[str]]:
    """(Authorization header value, secret strings to scrub from messages)."""
    if auth is None:
        return None, []

    def env(name: str | None, what: str) -> str:
        if not name:
            raise CatalogError(url, f"{auth.type} auth configured without the env var name of its {what}")
        value = os.environ.get(name)
        if not value:
            raise CatalogError(url, f"{auth.type} auth: environment variable {name} ({what}) is not set")
        return value

    if auth.type == "bearer":
        token = env(auth.token_env, "token")
        return f"Bearer {token}", [token]
    user = env(auth.username_env, "username")
    password = env(auth.password_env, "password")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {basic}", [password, basic]


def _rfc3339(d: datetime | None) -> str:
    if d is None:
        return ".."
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).isoformat().replace("+00:00", "Z")


class StacApiCatalog:
    """A STAC API with the Transaction extension (e.g. stac-fastapi-pgstac)."""

    def __init__(
        self,
        url: str,
        *,
        auth: CatalogAuth | dict[str, Any] | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        session: requests.Session | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise CatalogError(url, "a STAC API URL must start with http:// or https://")
        u = urlsplit(url)
        if u.username or u.password:
            raise CatalogError(
                f"{u.scheme}://{u.hostname}", "credentials in the URL are not allowed; use auth"
            )
        self._url = url.rstrip("/")
        self._timeout = float(timeout_s)
        self._retries = max(0, int(retries))
        self._backoff = float(backoff_s)
        if isinstance(auth, dict):
            auth = CatalogAuth.model_validate(auth)
        self._auth_value, self._secrets = _auth_header(self._url, auth)
        self._session = session or requests.Session()
        self._session.mount(
            _origin(self._url), _AuthAdapter(_origin(self._url), self._auth_value, max_retries=0)
        )
        self._session.headers.setdefault("Accept", "application/json")
        self._client: Client | None = None

    @classmethod
    def from_config(cls, cfg: CatalogConfig, **overrides: Any) -> StacApiCatalog:
        kw: dict[str, Any] = {"auth": cfg.auth, "timeout_s": cfg.timeout_s, "retries": cfg.retries}
        kw.update(overrides)
        return cls(cfg.url, **kw)

    # ------------------------------------------------------------------ Catalog protocol

    @property
    def href(self) -> str:
        return self._url

    def item_href(self, collection_id: str, item_id: str) -> str:
        return f"{self._url}/collections/{quote(collection_id, safe='')}/items/{quote(item_id, safe='')}"

    def collection_href(self, collection_id: str) -> str:
        return f"{self._url}/collections/{quote(collection_id, safe='')}"

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        return self._get(self.item_href(collection_id, item_id), pystac.Item, "item")

    def get_collection(self, collection_id: str) -> pystac.Collection | None:
        return self._get(self.collection_href(collection_id), pystac.Collection, "collection")

    def _get(self, url: str, cls: Any, what: str) -> Any:
        """GET one STAC object: None on 404, CatalogError for anything else that is not a valid ``what``."""
        resp = self._request("GET", url)
        if resp.status_code == 404:
            return None
        self._raise_for(resp, url, f"get {what}")
        data = self._json(resp, url)
        try:
            return cls.from_dict(data, preserve_dict=False)
        except Exception as e:
            raise CatalogError(
                url, f"response is not a valid STAC {what}: {type(e).__name__}: {e}", resp.status_code
            ) from e

    def ensure_collection(self, collection: pystac.Collection) -> None:
        url = self.collection_href(collection.id)
        resp = self._request("GET", url)
        if resp.status_code == 200:
            return
        if resp.status_code != 404:
            self._raise_for(resp, url, "get collection")
        body = self._clean(collection.to_dict(include_self_link=False, transform_hrefs=False))
        post_url = f"{self._url}/collections"
        resp = self._request("POST", post_url, body)
        if resp.status_code in (200, 201, 409):  # 409: created concurrently by someone else: fine
            log.info("collection %s ensured in %s", collection.id, self._url)
            return
        self._raise_for(resp, post_url, f"create collection {collection.id}")

    def upsert_item(self, item: pystac.Item) -> None:
        cid = item.collection_id
        if not cid:
            raise CatalogError(self._url, f"item {item.id} has no collection id; cannot register it")
        body = self._clean(item.to_dict(include_self_link=False, transform_hrefs=False))
        body["collection"] = cid
        items_url = f"{self.collection_href(cid)}/items"
        item_url = self.item_href(cid, item.id)
        fault_point("mid-register")
        # POST; on conflict PUT; if it vanished between the two (concurrent delete) POST again
        for _ in range(3):
            try:
                resp = self._request("POST", items_url, body)
            except CatalogUnavailableError:
                # pgstac answers 500 (not 404) to an item POST into a missing collection: say so clearly
                if self._status("GET", self.collection_href(cid)) == 404:
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
                self._raise_for(resp, items_url, f"create item {cid}/{item.id}")
            resp = self._request("PUT", item_url, body)
            if resp.status_code in (200, 201, 204):
                self._refresh_collection(cid, body)
                return
            if resp.status_code != 404:
                self._raise_for(resp, item_url, f"replace item {cid}/{item.id}")
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
            if self._status("GET", self.collection_href(cid)) == 404:  # pgstac would answer 500
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
            resp = self._request("POST", url, {"items": docs, "method": "upsert"})
        except CatalogUnavailableError:
            if self._status("GET", f"{self._url}/_mgmt/ping") is None:
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
            self._raise_for(resp, url, f"bulk upsert into {cid}")
        if (
            resp is not None
            and resp.status_code == 404
            and self._status("GET", self.collection_href(cid)) == 404
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
            resp = self._request("GET", url)
            if resp.status_code != 200:
                return
            col = self._json(resp, url)
            new = col
            for doc in item_docs:
                new = merge_item(new, doc)
            if new != col:
                new["links"] = [
                    lk
                    for lk in new.get("links", [])
                    if lk.get("rel") not in ("self", "root", "parent", "items")
                ]
                put = self._request("PUT", url, self._clean(new))
                if put.status_code not in (200, 201, 204):
                    log.warning("could not update collection %s: HTTP %s", cid, put.status_code)
        except Exception as e:  # the item is registered; the summary catches up with the next item
            log.warning("could not update collection %s: %s", cid, e)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        url = self.item_href(collection_id, item_id)
        resp = self._request("DELETE", url)
        if resp.status_code == 404:
            return False
        if resp.status_code in (200, 202, 204):
            return True
        self._raise_for(resp, url, "delete item")
        return True  # pragma: no cover

    def search(
        self,
        *,
        collections: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        bbox: BBox | None = None,
        datetime_range: DatetimeRange | None = None,
        limit: int | None = None,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the STAC API parameter name
    ) -> Iterator[pystac.Item]:
        """Items matching every criterion; ``filter`` is a CQL2-JSON expression (filter extension),
        e.g. ``{"op": ">=", "args": [{"property": "hsi:wavelength_max"}, 2400]}``."""
        from pystac_client.exceptions import APIError

        kw: dict[str, Any] = {}
        if filter is not None:
            kw["filter"], kw["filter_lang"] = filter, "cql2-json"
        if collections:
            kw["collections"] = list(collections)
        if ids:
            kw["ids"] = list(ids)
        if bbox is not None:
            kw["bbox"] = list(bbox)
        if datetime_range is not None:
            start, end = datetime_range
            if start is not None or end is not None:
                kw["datetime"] = f"{_rfc3339(start)}/{_rfc3339(end)}"
        if limit is not None:
            kw["max_items"] = int(limit)
        url = f"{self._url}/search"
        try:
            found = self._search_client().search(**kw)
            yield from found.items()
        except APIError as e:
            raise self._api_error(url, e) from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CatalogError(url, "malformed JSON in the search response") from e
        except (pystac.STACError, KeyError, TypeError) as e:
            raise CatalogError(
                url, f"unexpected search response: {type(e).__name__}: {self._scrub(str(e))}"
            ) from e

    def derived(self, collection_id: str, item_id: str) -> Iterator[pystac.Item]:
        """Items that record this one as an input. Derived ids start with the input's id (activated:
        the same id; products: ``<id>-<product>``), so the API is asked for ``id LIKE '<id>%'``
        (CQL2) and the answers are checked against their ``hsi:inputs``; an API without CQL2
        ``like`` is scanned in full."""
        from pystac_client.exceptions import APIError

        like = {"op": "like", "args": [{"property": "id"}, item_id.replace("%", "_") + "%"]}
        url = f"{self._url}/search"
        try:
            found = list(self._search_client().search(filter=like, filter_lang="cql2-json").items())
        except APIError as e:
            err = self._api_error(url, e)
            if err.status is None or err.status >= 500 or err.status in (401, 403):
                raise err from e
            found = list(self.search())  # no CQL2 `like` here (HTTP 400): scan
        for item in found:
            if (item.collection_id, item.id) != (collection_id, item_id) and derives_from(
                item, collection_id, item_id
            ):
                yield item

    def collections(self) -> list[str]:
        """Collection ids of the API."""
        resp = self._request("GET", f"{self._url}/collections")
        self._raise_for(resp, f"{self._url}/collections", "list collections")
        return sorted(c["id"] for c in self._json(resp, f"{self._url}/collections").get("collections", []))

    def search_id_prefix(self, prefix: str) -> Iterator[pystac.Item]:
        """Items of every collection whose id starts with ``prefix`` (CQL2 ``like`` on ``id``)."""
        from pystac_client.exceptions import APIError

        like = prefix.replace("%", "\\%") + "%"
        url = f"{self._url}/search"
        try:
            found = self._search_client().search(
                filter={"op": "like", "args": [{"property": "id"}, like]}, filter_lang="cql2-json"
            )
            yield from (i for i in found.items() if i.id.startswith(prefix))
        except APIError as e:
            raise self._api_error(url, e) from e

    # ------------------------------------------------------------------ internals

    def _search_client(self) -> Client:
        if self._client is not None:
            return self._client
        from pystac_client import Client
        from pystac_client.exceptions import APIError
        from pystac_client.stac_api_io import StacApiIO
        from urllib3.util.retry import Retry

        retry = Retry(
            total=self._retries,
            connect=self._retries,
            read=self._retries,
            status=self._retries,
            backoff_factor=self._backoff,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=None,
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        stac_io = StacApiIO(timeout=self._timeout, max_retries=retry)
        origin = _origin(self._url)
        stac_io.session.mount(origin, _AuthAdapter(origin, self._auth_value, max_retries=retry))
        try:
            self._client = Client.open(self._url, stac_io=stac_io)
        except APIError as e:
            raise self._api_error(self._url, e) from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CatalogError(self._url, "malformed JSON in the landing page") from e
        return self._client

    def _api_error(self, url: str, e: Any) -> CatalogError:
        status = getattr(e, "status_code", None)
        if status is None:
            # unreachable: name the API, not the first collection a lookup happened to try
            return CatalogUnavailableError(
                self._url, f"cannot reach the STAC API: {self._scrub(str(e))[:300]}"
            )
        if status >= 500:
            return CatalogUnavailableError(url, f"server error after {self._retries} retries", status)
        if status in (401, 403):
            return CatalogError(url, "not authorized" if status == 401 else "forbidden", status)
        return CatalogError(url, f"request refused: {self._scrub(str(e))[:300]}", status)

    def _request(self, method: str, url: str, body: Any = None) -> requests.Response:
        """Send with retries on connection errors and 5xx; returns any non-5xx response."""
        attempts = self._retries + 1
        last: str = ""
        status: int | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(_MAX_BACKOFF_S, self._backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                log.info(  # the final error says it all; each retry is detail (-v)
                    "%s %s failed (%s); retry %d/%d in %.2f s",
                    method,
                    url,
                    last,
                    attempt,
                    self._retries,
                    delay,
                )
                time.sleep(delay)  # backoff between retries (not synchronisation)
            try:
                resp = self._session.request(method, url, json=body, timeout=self._timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                last, status = f"connection error: {type(e).__name__}", None
                continue
            except requests.RequestException as e:
                raise CatalogError(url, f"{method} failed: {type(e).__name__}") from e
            if resp.status_code >= 500:
                last, status = f"HTTP {resp.status_code}", resp.status_code
                continue
            return resp
        what = "cannot reach the STAC API" if status is None else "the STAC API keeps failing"
        raise CatalogUnavailableError(
            self._url if status is None else url,
            f"{what}: {method} failed after {attempts} attempts ({last})",
            status,
        )

    def _status(self, method: str, url: str) -> int | None:
        try:
            return self._request(method, url).status_code
        except CatalogError:
            return None

    def _raise_for(self, resp: requests.Response, url: str, what: str) -> None:
        code = resp.status_code
        if 200 <= code < 300:
            return
        if code == 401:
            raise CatalogError(url, f"{what}: not authorized (check the catalog credentials)", code)
        if code == 403:
            raise CatalogError(url, f"{what}: forbidden", code)
        detail = ""
        try:
            data = resp.json()
            if isinstance(data, dict):
                detail = str(data.get("description") or data.get("detail") or data.get("code") or "")
        except ValueError:
            detail = resp.text[:200]
        raise CatalogError(
            url, f"{what} refused" + (f": {self._scrub(detail)[:300]}" if detail else ""), code
        )

    def _json(self, resp: requests.Response, url: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError as e:  # requests' JSONDecodeError is a ValueError
            raise CatalogError(url, "malformed JSON in the response", resp.status_code) from e
        if not isinstance(data, dict):
            raise CatalogError(
                url,
                f"malformed JSON in the response: expected an object, got {type(data).__name__}",
                resp.status_code,
            )
        return data

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            if s:
                text = text.replace(s, "***")
        return text

    @staticmethod
    def _clean(d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d)
        d["links"] = [ln for ln in d.get("links", []) if ln.get("rel") not in _API_MANAGED_RELS]
        return d


__all__ = ["StacApiCatalog"]
