"""The collaborators a pipeline step needs, built once at the edge from the configuration.

Flows build a :class:`Services` from :class:`~hsi.config.PipelineConfig` and hand it to the
domain functions; notebooks can do the same, or inject their own store/catalog.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hsi.catalog import Catalog, open_catalog
from hsi.config import PipelineConfig, S3Access, load_config
from hsi.errors import ConfigError, StorageError
from hsi.lease import Holder, release_dead_holders
from hsi.scratch import Reclaimed, RunScratch, open_run, reclaim
from hsi.storage import ObjectInfo, ObjectStore, open_store

__all__ = ["STALE_UPLOAD_S", "Services"]

STALE_UPLOAD_S = 6 * 3600.0  # unfinished uploads of unknown owners below our keys are aborted after this

log = logging.getLogger(__name__)


#: turns the name of a credentials block into a ``boto3.Session`` (injected by the Prefect layer)
SessionResolver = Callable[[str], Any]


@dataclass
class Services:
    config: PipelineConfig
    store: ObjectStore
    catalog: Catalog
    #: resolves ``credentials_block`` names (prefect-aws AwsCredentials) to boto3 sessions
    sessions: SessionResolver | None = None
    _stores: dict[tuple[str, S3Access], ObjectStore] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | str | Path | None = None,
        *,
        store: ObjectStore | None = None,
        catalog: Catalog | None = None,
        sessions: SessionResolver | None = None,
    ) -> Services:
        """Store and catalog of a configuration. ``sessions`` resolves the ``credentials_block`` of
        ``storage``, ``inputs[]`` and an s3:// static catalog (the Prefect layer passes one); a
        configured block without a resolver is a :class:`~hsi.errors.ConfigError`."""
        cfg = config if isinstance(config, PipelineConfig) else load_config(config)
        if cfg.processors:  # products computed by external tools (docs/PROCESSORS.md)
            from hsi.processors import register_processors

            register_processors(cfg.processors)
        if store is None:
            root = cfg.storage.root
            store = open_store(
                root, **(access_opts(cfg.storage, sessions, "storage") if root.startswith("s3://") else {})
            )
        if catalog is None:
            c = cfg.catalog
            if c.url.startswith(("http://", "https://")):
                catalog = open_catalog(c.url, auth=c.auth, timeout_s=c.timeout_s, retries=c.retries)
            elif c.url.startswith("s3://"):
                from hsi.catalog.static import StaticCatalog

                # an s3:// static catalog is reached with the storage's S3 settings (and its block)
                cat_store = open_store(c.url, **access_opts(cfg.storage, sessions, "storage"))
                catalog = StaticCatalog(c.url, store=cat_store, asset_roots=[cfg.storage.root])
            else:
                catalog = open_catalog(c.url, asset_roots=[cfg.storage.root])
        return cls(config=cfg, store=store, catalog=catalog, sessions=sessions)

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
            root = "s3://" + urlsplit(uri).netloc
            if (root, access) not in self._stores:  # one client per bucket and settings
                where = "storage" if access is self.config.storage else f"inputs (prefix {uri})"
                self._stores[(root, access)] = open_store(root, **access_opts(access, self.sessions, where))
            return self._stores[(root, access)]
        return open_store("/")

    def scratch_dir(self, label: str) -> Path:
        """A new directory private to one run under ``work_dir/out`` (the per-run scratch space):
        staging copies and extractions live here; the caller deletes it when the run ends."""
        return open_run(self.work_dir, label).path  # with an owner record: reclaimed if the run dies

    def stat(self, href: str) -> ObjectInfo | None:
        """Size and identity (ETag/version, or checksum) of a remote object; None when absent."""
        if href.startswith("s3://"):
            return self.store_for(href).stat(href)
        if href.startswith(("http://", "https://")):
            try:
                req = urllib.request.Request(href, method="HEAD")  # noqa: S310
                with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310
                    size = int(r.headers.get("Content-Length") or -1)
                    tag = r.headers.get("ETag") or (
                        f"last-modified:{r.headers['Last-Modified']}"
                        if r.headers.get("Last-Modified")
                        else None
                    )
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                raise StorageError(href, f"HEAD failed: HTTP {e.code}") from e
            except OSError as e:
                raise StorageError(href, f"HEAD failed: {e}") from e
            return ObjectInfo(href, size, None, etag=tag)
        p = _local_path(href)
        return ObjectInfo(str(p), p.stat().st_size, None) if p.is_file() else None

    def fetch(self, href: str, dest_dir: Path, expect: ObjectInfo | None = None) -> Path:
        """A local path for ``href``: local files are used in place; s3:// and http(s) are downloaded
        into ``dest_dir`` (a run's private staging directory).

        A copy already in ``dest_dir`` is reused only when its recorded identity (size + ETag/version,
        or checksum) is the object's current one. ``expect`` (e.g. what a raw item recorded) pins
        the object: an S3 object that changed since is refused instead of mixed in.
        """
        if not href.startswith(("s3://", "http://", "https://")):
            p = _local_path(href)
            if not p.exists():
                raise StorageError(href, "file does not exist")
            return p
        info = self.stat(href)
        if info is None:
            raise StorageError(href, "object does not exist")
        if expect is not None and _changed(expect, info):
            raise StorageError(
                href, "object changed since it was indexed (size or ETag differs): index it again"
            )
        dest = dest_dir / Path(urlsplit(href).path).name
        stamp = dest_dir / f".{dest.name}.identity"
        if dest.is_file() and stamp.is_file() and stamp.read_text() == info.identity:
            log.info("%s: reusing the staged copy %s (same %s)", href, dest, info.identity)
            return dest
        dest_dir.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        if href.startswith("s3://"):
            self.store_for(href).get_file(href, dest, expect=info)
        else:
            _download(href, dest)
        if info.size >= 0 and dest.stat().st_size != info.size:
            dest.unlink(missing_ok=True)
            raise StorageError(href, f"download incomplete: {dest.stat().st_size} of {info.size} bytes")
        stamp.write_text(info.identity)
        return dest

    # ------------------------------------------------------------- run scratch (hsi.scratch)
    def open_run(self, prefix: str = "run") -> RunScratch:
        """Reclaim the scratch of dead runs, then open this run's own scratch directory."""
        self.reclaim_runs()
        return open_run(self.work_dir, prefix)

    def finish_run(self, scratch: RunScratch) -> list[str]:
        """End a run: abort the uploads it left unfinished, delete its scratch; returns what was aborted."""
        try:
            return self.undo_run(scratch.path)
        finally:
            scratch.close()

    def undo_run(self, run_dir: Path) -> list[str]:
        """Abort the unfinished multipart uploads recorded below ``run_dir`` (``*.mpu.json``)."""
        import json

        aborted = []
        for rec in sorted(run_dir.rglob("*.mpu.json")):
            try:
                uri = json.loads(rec.read_text())["uri"]
            except (OSError, ValueError, KeyError):
                continue
            store = self.store_for(uri)
            abort = getattr(store, "abort_recorded", None)
            if abort is not None and (done := abort(rec)):
                aborted.append(done)
        return aborted

    def reclaim_runs(self, *, everything: bool = False, grace_s: float = 600.0) -> list[Reclaimed]:
        """Delete the scratch of runs whose owner died (``everything``: of every run not alive here)."""
        return reclaim(self.work_dir, undo=self.undo_run, everything=everything, grace_s=grace_s)

    def reclaim_dead_runs(self, release: Callable[[Holder], object] | None) -> list[Reclaimed]:
        """What dead runs of this machine left: their scratch (and unfinished uploads), then their
        item leases, released with ``release(holder)`` (Prefect's client in the flows, plain HTTP in
        the CLI's fast path) rather than left to expire. Returns the reclaimed scratch."""
        reclaimed = self.reclaim_runs()
        release_dead_holders(self.work_dir, release)
        return reclaimed

    def abort_stale_uploads(
        self, prefix_uri: str | None = None, older_than_s: float = STALE_UPLOAD_S
    ) -> list[str]:
        """Abort unfinished uploads (S3 multipart, local partial files) below ``prefix_uri`` (default: the
        storage root) whose writer is dead or that are older than ``older_than_s``."""
        abort = getattr(self.store, "abort_stale_uploads", None)
        if abort is None:
            return []
        return list(abort(prefix_uri or self.store.root, older_than_s))


def _changed(expect: ObjectInfo, now: ObjectInfo) -> bool:
    if expect.size >= 0 and now.size >= 0 and expect.size != now.size:
        return True
    if expect.version_id and now.version_id and expect.version_id != now.version_id:
        return True
    if expect.etag and now.etag and expect.etag != now.etag:
        return True
    return bool(expect.checksum and now.checksum and expect.checksum != now.checksum)


def _local_path(href: str) -> Path:
    return Path(href[len("file://") :] if href.startswith("file://") else href)


def _download(url: str, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:  # noqa: S310
            shutil.copyfileobj(r, f, 8 << 20)
        tmp.replace(dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(url, f"download failed: {e}") from e


def access_opts(s: S3Access, sessions: SessionResolver | None, where: str) -> dict[str, object]:
    part = getattr(s, "part_size_mib", None)  # the storage section's multipart part size
    extra: dict[str, object] = {"part_size": part << 20} if part else {}
    if s.credentials_block:
        if sessions is None:
            raise ConfigError(
                f"{where}.credentials_block {s.credentials_block!r}: a Prefect credentials block is resolved "
                "only when running through the flows (hsi_pipeline.tasks); elsewhere use aws_profile or "
                "the AWS environment"
            )
        return {
            "endpoint_url": s.endpoint_url,
            "region": s.region,
            "session": sessions(s.credentials_block),
            **extra,
        }
    return {
        "endpoint_url": s.endpoint_url,
        "region": s.region,
        "profile": s.aws_profile,
        "shared_credentials_file": s.shared_credentials_file,
        **extra,
    }
