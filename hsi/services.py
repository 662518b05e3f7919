"""The collaborators a pipeline step needs, built once at the edge from the configuration.

Flows build a :class:`Services` from :class:`~hsi.config.PipelineConfig` and hand it to the
domain functions; notebooks can do the same, or inject their own store/catalog.
"""

from __future__ import annotations

import logging
import shutil
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from hsi.catalog import Catalog, open_catalog
from hsi.config import PipelineConfig, S3Access, load_config
from hsi.errors import StorageError
from hsi.storage import ObjectStore, open_store

__all__ = ["Services"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: PipelineConfig
    store: ObjectStore
    catalog: Catalog

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | str | Path | None = None,
        *,
        store: ObjectStore | None = None,
        catalog: Catalog | None = None,
    ) -> Services:
        cfg = config if isinstance(config, PipelineConfig) else load_config(config)
        if cfg.processors:  # products computed by external tools (docs/PROCESSORS.md)
            from hsi.processors import register_processors

            register_processors(cfg.processors)
        if store is None:
            root = cfg.storage.root
            store = open_store(root, **(_s3_opts(cfg) if root.startswith("s3://") else {}))
        if catalog is None:
            c = cfg.catalog
            if c.url.startswith(("http://", "https://")):
                catalog = open_catalog(c.url, auth=c.auth, timeout_s=c.timeout_s, retries=c.retries)
            elif c.url.startswith("s3://"):
                from hsi.catalog.static import StaticCatalog

                cat_store = open_store(c.url, **_s3_opts(cfg))
                catalog = StaticCatalog(c.url, store=cat_store)
            else:
                catalog = open_catalog(c.url)
        return cls(config=cfg, store=store, catalog=catalog)

    @property
    def work_dir(self) -> Path:
        p = Path(self.config.work_dir)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def store_for(self, uri: str) -> ObjectStore:
        """A store able to read ``uri`` (the configured store when it is of the same kind)."""
        if uri.startswith("s3://"):
            access = self.config.s3_access_for(uri)
            if self.store.root.startswith("s3://") and access is self.config.storage:
                return self.store
            return _bucket_store("s3://" + urlsplit(uri).netloc, access)
        return open_store("/")

    def fetch(self, href: str, dest_dir: Path) -> Path:
        """A local path for ``href``: local files are used in place; s3:// and http(s) are downloaded."""
        if href.startswith(("http://", "https://")):
            dest = dest_dir / Path(urlsplit(href).path).name
            if not dest.exists():
                dest_dir.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".part")
                try:
                    with urllib.request.urlopen(href, timeout=60) as r, open(tmp, "wb") as f:  # noqa: S310
                        shutil.copyfileobj(r, f, 8 << 20)
                except OSError as e:
                    tmp.unlink(missing_ok=True)
                    raise StorageError(href, f"download failed: {e}") from e
                tmp.replace(dest)
            return dest
        if href.startswith("s3://"):
            dest = dest_dir / href.rsplit("/", 1)[-1]
            store = self.store_for(href)
            info = store.stat(href)
            if info is None:
                raise StorageError(href, "object does not exist")
            if not (dest.exists() and dest.stat().st_size == info.size):
                store.get_file(href, dest)
            return dest
        p = Path(href[len("file://") :] if href.startswith("file://") else href)
        if not p.exists():
            raise StorageError(href, "file does not exist")
        return p


@lru_cache(maxsize=32)
def _bucket_store(root: str, access: S3Access) -> ObjectStore:
    """A store for another bucket (e.g. the raw landing bucket of ``inputs``), built once per settings."""
    return open_store(root, **_access_opts(access))


def _s3_opts(cfg: PipelineConfig) -> dict[str, object]:
    return _access_opts(cfg.storage)


def _access_opts(s: S3Access) -> dict[str, object]:
    return {
        "endpoint_url": s.endpoint_url,
        "region": s.region,
        "profile": s.aws_profile,
        "shared_credentials_file": s.shared_credentials_file,
    }
