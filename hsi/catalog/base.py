"""The Catalog protocol every backend implements (static on disk/S3, STAC API).

Registration (:meth:`Catalog.upsert_item`) is the commit point of the pipeline: an item that is
visible in the catalog means its assets exist and are complete. Backends must make an upsert
atomic (readers never see a half-written item) and idempotent (same id twice = one item).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import pystac

BBox = tuple[float, float, float, float]
# (start, end); either side may be None for an open interval
DatetimeRange = tuple[datetime | None, datetime | None]


@runtime_checkable
class Catalog(Protocol):
    """A searchable, writable STAC catalog."""

    @property
    def href(self) -> str:
        """Root href of the catalog (no credentials), used in event payloads and messages."""
        ...

    def ensure_collection(self, collection: pystac.Collection) -> None:
        """Create the collection if it is missing (never overwrites an existing one's items)."""
        ...

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        """The item, or None when it is absent. Any other failure raises CatalogError."""
        ...

    def upsert_item(self, item: pystac.Item) -> None:
        """Create or replace the item (item.collection_id must be set). The commit point."""
        ...

    def upsert_items(self, items: Sequence[pystac.Item]) -> dict[str, str]:
        """Create or replace many items at once (each item's own upsert is still its commit point).

        Returns the failures, ``"<collection>/<item id>" -> reason``; an empty dict means every item
        is registered. One refused item never stops the others. Raises only when nothing could be
        tried (CatalogUnavailableError: the catalog is unreachable).
        """
        ...

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        """Delete the item; True if it existed."""
        ...

    def search(
        self,
        *,
        collections: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        bbox: BBox | None = None,
        datetime_range: DatetimeRange | None = None,
        limit: int | None = None,
        exclude: Sequence[str] | None = None,
    ) -> Iterator[pystac.Item]:
        """Items matching all given filters (bbox intersects, datetime within the range).

        ``exclude``: dotted paths of fields the caller does not need (as the STAC API fields
        extension names them, e.g. ``assets.cube.bands``): a STAC API leaves them out of its answer
        (one 425-band item is ~80 KB of band list), the static catalog drops them after reading;
        an API without the fields extension returns them."""
        ...

    def item_href(self, collection_id: str, item_id: str) -> str:
        """Where the item can be read (file path/URI or API URL)."""
        ...

    def derived(self, collection_id: str, item_id: str) -> Iterator[pystac.Item]:
        """Items made from this one (reverse lineage: it is among their ``hsi:inputs``)."""
        ...


def item_key(item: pystac.Item) -> str:
    """``"<collection>/<item id>"``: how :meth:`Catalog.upsert_items` names an item in its failures."""
    return f"{item.collection_id}/{item.id}"


def derives_from(item: pystac.Item, collection_id: str, item_id: str) -> bool:
    """Whether ``item`` records ``collection_id/item_id`` as an input (``hsi:inputs`` or a
    ``derived_from`` link titled ``collection/id``)."""
    for ref in item.properties.get("hsi:inputs") or []:
        if isinstance(ref, dict) and ref.get("id") == item_id and ref.get("collection") == collection_id:
            return True
    title = f"{collection_id}/{item_id}"
    return any(lk.rel == "derived_from" and lk.title == title for lk in item.links)
