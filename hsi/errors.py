"""One small exception hierarchy for the whole library.

Callers handle two families differently:

* :class:`InvalidInputError` (and subclasses): the input is wrong; retrying will not help.
* :class:`TransientError` (and subclasses): something outside us failed (network, 5xx); a retry may succeed.

Every message names the thing (file, field, item id, URL) and the reason.
"""

from __future__ import annotations


class HSIError(Exception):
    """Root of every error raised by :mod:`hsi`."""


class InvalidInputError(HSIError):
    """The input is invalid; never retry."""


class HeaderError(InvalidInputError):
    """An ENVI header (or other scene metadata document) is missing, corrupt or inconsistent."""

    def __init__(self, path: object, reason: str, field: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        self.reason = reason
        where = f"{self.path}: field '{field}'" if field else self.path
        super().__init__(f"{where}: {reason}")


class DataFileError(InvalidInputError):
    """A binary data file is missing, truncated or does not match its header."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedSourceError(InvalidInputError):
    """No source knows how to read this input."""


class ConfigError(InvalidInputError):
    """The configuration file is invalid."""


class BandSelectionError(InvalidInputError):
    """A product needs a band the scene does not have (or only has as a bad band)."""


class ProductError(InvalidInputError):
    """A product is unknown or its parameters are invalid."""


class ItemNotFoundError(InvalidInputError):
    """A STAC item the work needs is not in the catalog."""

    def __init__(self, collection: str | None, item_id: str, catalog: str) -> None:
        self.collection = collection
        self.item_id = item_id
        where = f"{collection}/{item_id}" if collection else item_id
        super().__init__(f"item {where} not found in catalog {catalog}")


class TransientError(HSIError):
    """Something outside us failed; a retry may succeed."""


class CatalogError(HSIError):
    """The catalog refused or failed a request. Message names the URL and the status."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        self.reason = reason
        st = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"catalog {url}{st}: {reason}")


class CatalogUnavailableError(CatalogError, TransientError):
    """The catalog could not be reached or answered 5xx after retries."""


class StorageError(HSIError):
    """Object storage refused or failed a request."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri}: {reason}")


class IntegrityError(StorageError):
    """An asset does not match its recorded size or checksum."""


class PoisonMessage(InvalidInputError):
    """A queue message that can never be processed (malformed JSON, unknown shape); goes to the DLQ."""

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        self.reason = reason
        self.message_id = message_id
        where = f"message {message_id}: " if message_id else ""
        super().__init__(f"{where}{reason}")


class StorageUnavailableError(StorageError, TransientError):
    """The object store could not be reached or answered 5xx (after the client's own retries)."""
