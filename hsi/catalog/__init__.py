"""STAC catalogs: the :class:`Catalog` protocol and its backends."""

from hsi.catalog.base import BBox, Catalog, DatetimeRange

__all__ = ["BBox", "Catalog", "DatetimeRange", "open_catalog"]


def open_catalog(target: str, **options: object) -> Catalog:
    """Open a catalog from a URL or path.

    ``http(s)://...`` is a STAC API (searched with pystac-client, written through the Transaction
    extension); anything else (a local directory or an ``s3://`` prefix) is a static catalog.
    """
    if target.startswith(("http://", "https://")):
        from hsi.catalog.stacapi import StacApiCatalog

        return StacApiCatalog(target, **options)
    from hsi.catalog.static import StaticCatalog

    return StaticCatalog(target, **options)  # type: ignore[arg-type]
