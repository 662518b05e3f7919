"""URI-based object storage (local directories and s3://)."""

from hsi.storage.base import ObjectInfo, ObjectStore, file_checksum
from hsi.storage.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "file_checksum", "open_store"]


def open_store(root: str, **options: object) -> ObjectStore:
    """A store for a root URI: ``s3://bucket/prefix`` -> S3Store, anything else -> LocalStore."""
    if root.startswith("s3://"):
        from hsi.storage.s3 import S3Store

        return S3Store(root, **options)  # type: ignore[arg-type]
    return LocalStore(root)
