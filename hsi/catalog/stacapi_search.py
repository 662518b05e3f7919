"""Reads of a STAC API through pystac-client: search, derived items, ids by prefix, collections.

``Client.open(url).search(...)`` pages lazily; the client shares the catalog's credentials (an
adapter of :class:`hsi.catalog.http.StacHttp` on its session) and retries 5xx with backoff.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pystac

from hsi.catalog.base import BBox, DatetimeRange, derives_from
from hsi.catalog.http import StacHttp
from hsi.errors import CatalogError

if TYPE_CHECKING:  # pragma: no cover
    from pystac_client import Client

__all__ = ["StacApiSearch"]


def _rfc3339(d: datetime | None) -> str:
    if d is None:
        return ".."
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).isoformat().replace("+00:00", "Z")


class StacApiSearch:
    """The read side of :class:`hsi.catalog.stacapi.StacApiCatalog`."""

    def __init__(self, http: StacHttp) -> None:
        self._http = http
        self._client: Client | None = None

    def search(
        self,
        *,
        collections: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        bbox: BBox | None = None,
        datetime_range: DatetimeRange | None = None,
        limit: int | None = None,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the STAC API parameter name
        exclude: Sequence[str] | None = None,
    ) -> Iterator[pystac.Item]:
        """Items matching every criterion; ``filter`` is a CQL2-JSON expression (filter extension),
        e.g. ``{"op": ">=", "args": [{"property": "hsi:wavelength_max"}, 2400]}``; ``exclude``: fields
        left out of the answer when the API has the fields extension (see :meth:`Catalog.search`)."""
        from pystac_client import ConformanceClasses
        from pystac_client.exceptions import APIError

        kw: dict[str, Any] = {}
        if exclude and self._search_client().conforms_to(ConformanceClasses.FIELDS):
            kw["fields"] = {"exclude": list(exclude)}
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
        url = f"{self._http.url}/search"
        try:
            found = self._search_client().search(**kw)
            yield from found.items()
        except APIError as e:
            raise self._http.api_error(url, e) from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CatalogError(url, "malformed JSON in the search response") from e
        except (pystac.STACError, KeyError, TypeError) as e:
            raise CatalogError(
                url, f"unexpected search response: {type(e).__name__}: {self._http.scrub(str(e))}"
            ) from e

    def derived(self, collection_id: str, item_id: str) -> Iterator[pystac.Item]:
        """Items that record this one as an input. Derived ids start with the input's id (activated:
        the same id; products: ``<id>-<product>``), so the API is asked for ``id LIKE '<id>%'``
        (CQL2) and the answers are checked against their ``hsi:inputs``; an API without CQL2
        ``like`` is scanned in full."""
        from pystac_client.exceptions import APIError

        like = {"op": "like", "args": [{"property": "id"}, item_id.replace("%", "_") + "%"]}
        url = f"{self._http.url}/search"
        try:
            found = list(self._search_client().search(filter=like, filter_lang="cql2-json").items())
        except APIError as e:
            err = self._http.api_error(url, e)
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
        url = f"{self._http.url}/collections"
        resp = self._http.request("GET", url)
        self._http.raise_for(resp, url, "list collections")
        return sorted(c["id"] for c in self._http.json(resp, url).get("collections", []))

    def search_id_prefix(self, prefix: str) -> Iterator[pystac.Item]:
        """Items of every collection whose id starts with ``prefix`` (CQL2 ``like`` on ``id``)."""
        from pystac_client.exceptions import APIError

        like = prefix.replace("%", "\\%") + "%"
        url = f"{self._http.url}/search"
        try:
            found = self._search_client().search(
                filter={"op": "like", "args": [{"property": "id"}, like]}, filter_lang="cql2-json"
            )
            yield from (i for i in found.items() if i.id.startswith(prefix))
        except APIError as e:
            raise self._http.api_error(url, e) from e

    def _search_client(self) -> Client:
        if self._client is not None:
            return self._client
        from pystac_client import Client
        from pystac_client.exceptions import APIError
        from pystac_client.stac_api_io import StacApiIO
        from urllib3.util.retry import Retry

        http = self._http
        retry = Retry(
            total=http.retries,
            connect=http.retries,
            read=http.retries,
            status=http.retries,
            backoff_factor=http.backoff,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=None,
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        stac_io = StacApiIO(timeout=http.timeout, max_retries=retry)
        stac_io.session.mount(http.origin, http.adapter(max_retries=retry))
        try:
            self._client = Client.open(http.url, stac_io=stac_io)
        except APIError as e:
            raise http.api_error(http.url, e) from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CatalogError(http.url, "malformed JSON in the landing page") from e
        return self._client
