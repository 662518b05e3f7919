"""S3 object store (AWS S3 or any S3-compatible server such as SeaweedFS or MinIO).

The boto3 client is built here, at the edge, from explicit arguments (endpoint, region, profile,
shared credentials file) or the standard AWS environment/credential chain. Callers that resolve
credentials elsewhere (e.g. a prefect-aws ``AwsCredentials`` block, in tasks/flows) inject a
``boto3.Session`` or a ready client. No credential is ever put in a URI, an href or a message.

Writes: ``put_file`` uses boto3's managed transfer (multipart above ``multipart_threshold``, in
``part_size`` parts); an S3 object only becomes visible when the PUT / CompleteMultipartUpload
succeeds, so readers never see a partial object. The sha2-256 multihash is stored as object
metadata (``x-amz-meta-sha256``) so :meth:`S3Store.stat` returns it from a HEAD. (The hash is
computed in a streaming pass before the upload: S3 metadata must be sent when the upload starts.)

Resumable uploads: above the threshold ``put_file`` runs the multipart upload itself and records it in
``<local file>.mpu.json`` (upload id, checksum, completed parts) next to the file, i.e. in the run's
scratch directory (:mod:`hsi.scratch`). A retry of the same file after an outage finds the record,
asks the server which parts it holds (``ListParts``) and sends only the missing ones; the checksum is
not recomputed. The record is deleted when the upload completes. A run that ends without completing
aborts its recorded uploads (:func:`abort_recorded`); a run killed before it could is reclaimed by
the next run, which aborts them then. :meth:`S3Store.abort_stale_uploads` aborts any other unfinished
upload below a prefix older than a grace period (e.g. from another host).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import mimetypes
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hsi.errors import StorageError, StorageUnavailableError
from hsi.storage.base import CHUNK, ObjectInfo, file_checksum, multihash_sha256
from hsi.storage.s3_multipart import CHECKSUM_META, MPU_SUFFIX, ResumableMultipart, error_code

__all__ = ["MPU_SUFFIX", "S3Store", "parse_s3_uri"]

if TYPE_CHECKING:  # pragma: no cover
    import boto3

    from hsi.config import StorageConfig

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 64 * MiB

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_AUTH = {
    "403",
    "AccessDenied",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "InvalidClientTokenId",
}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key). The key may be empty (bucket root)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StorageError(str(uri), "not an s3:// URI")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(uri, "s3:// URI without a bucket")
    return bucket, key


@functools.cache
def _shared_loader() -> Any:
    """One botocore data loader for every session this module makes: the S3 service model and the
    endpoint data are parsed once per process (~0.15 s each time otherwise), not once per store."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def _botocore_session() -> Any:
    """A fresh botocore session that reads service data through the shared loader."""
    import botocore.session

    bs = botocore.session.Session()
    bs.register_component("data_loader", _shared_loader())
    return bs


def warm_up() -> None:
    """Parse botocore's S3 model and endpoint data now (no request is made, no credential is looked
    up): a fork server calls this so the flow runs it starts build their S3 clients in milliseconds."""
    import boto3

    boto3.Session(botocore_session=_botocore_session()).client(
        "s3", region_name="us-east-1", aws_access_key_id="warm-up", aws_secret_access_key="warm-up"
    )


class S3Store(ResumableMultipart):
    """Objects in an S3 bucket below ``s3://bucket/prefix``; URIs are ``s3://bucket/key``."""

    def __init__(
        self,
        root: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        shared_credentials_file: str | os.PathLike[str] | None = None,
        session: boto3.Session | None = None,
        client: Any | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        multipart_threshold: int | None = None,
        max_concurrency: int = 4,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 4,
        aws_profile: str | None = None,  # alias of ``profile`` (the StorageConfig field name)
        **_ignored: Any,  # other StorageConfig fields (credentials_block, public_base_url) are not ours
    ) -> None:
        root = root.rstrip("/")
        self._bucket, prefix = parse_s3_uri(root)
        self._prefix = prefix.strip("/")
        self._root = f"s3://{self._bucket}" + (f"/{self._prefix}" if self._prefix else "")
        self._endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self._profile = profile or aws_profile
        self._credentials_file = str(shared_credentials_file) if shared_credentials_file else None
        self._part_size = int(part_size)
        self._threshold = int(multipart_threshold if multipart_threshold is not None else part_size)
        self._concurrency = max_concurrency
        self._session = session
        self._client: Any = client
        self._region = region
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        self._aws_sessions: dict[tuple[str, str, str | None] | None, Any] = {}
        self._aws_sessions_lock = threading.Lock()
        if client is None:
            self._session = session or self._make_session()
            self._region = (
                region or self._session.region_name or ("us-east-1" if self._endpoint_url else None)
            )
            self._client = self._make_client()
        elif self._region is None:
            self._region = getattr(getattr(client, "meta", None), "region_name", None)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, cfg: StorageConfig, **overrides: Any) -> S3Store:
        """A store from the ``storage`` section of the configuration (``root`` must be s3://)."""
        kw: dict[str, Any] = {
            "endpoint_url": cfg.endpoint_url,
            "region": cfg.region,
            "profile": cfg.aws_profile,
            "shared_credentials_file": cfg.shared_credentials_file,
            "part_size": cfg.part_size_mib * MiB,
        }
        kw.update(overrides)
        return cls(cfg.root, **kw)

    def _make_session(self) -> boto3.Session:
        import boto3
        from botocore.exceptions import ProfileNotFound

        bs = _botocore_session()
        if self._credentials_file:
            if not Path(self._credentials_file).expanduser().is_file():
                raise StorageError(
                    self._root, f"shared credentials file {self._credentials_file} does not exist"
                )
            bs.set_config_variable("credentials_file", str(Path(self._credentials_file).expanduser()))
        try:
            session = boto3.Session(botocore_session=bs, profile_name=self._profile)
            # reads the profile: a missing one fails here, with its name (``region_name`` alone does
            # not when AWS_DEFAULT_REGION is set, and the client would raise botocore's own error)
            bs.get_scoped_config()
        except ProfileNotFound as e:
            where = f" in {self._credentials_file}" if self._credentials_file else ""
            raise StorageError(self._root, f"AWS profile '{self._profile}' not found{where}") from e
        paths = bs.get_component("data_loader").search_paths  # boto3 appends its data path per session
        paths[:] = list(dict.fromkeys(paths))
        return session

    def _make_client(self) -> Any:
        from botocore.config import Config

        connect_timeout, read_timeout, max_attempts = self._timeouts
        cfg = Config(
            signature_version="s3v4",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # batch publishing uploads on many threads at once, each file maybe in parts: without
            # room for them urllib3 drops connections with a warning per request
            max_pool_connections=32,
            s3={"addressing_style": "path"} if self._endpoint_url else {},
            # S3-compatible servers do not all implement the newer flexible-checksum trailers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        assert self._session is not None
        return self._session.client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=cfg
        )

    # ------------------------------------------------------------------ ObjectStore

    @property
    def root(self) -> str:
        return self._root

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def endpoint_url(self) -> str | None:
        return self._endpoint_url

    @property
    def client(self) -> Any:
        """The boto3 S3 client (for callers that need an operation this class does not wrap)."""
        return self._client

    def uri(self, *parts: str) -> str:
        tail = "/".join(p.strip("/") for p in parts if p and p.strip("/"))
        return f"{self._root}/{tail}" if tail else self._root

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self._threshold,
            multipart_chunksize=self._part_size,
            max_concurrency=self._concurrency,
            use_threads=self._concurrency > 1,
        )

    def put_file(self, local: Path, uri: str, content_type: str | None = None) -> ObjectInfo:
        bucket, key = self._key(uri)
        local = Path(local)
        if not local.is_file():
            raise StorageError(str(local), "source file does not exist")
        size = local.stat().st_size
        ctype = content_type or mimetypes.guess_type(local.name)[0]
        if size >= self._threshold and size > self._part_size:
            return self._put_multipart(local, uri, bucket, key, ctype)
        checksum = file_checksum(local)
        extra: dict[str, Any] = {"Metadata": {CHECKSUM_META: checksum}}
        if ctype:
            extra["ContentType"] = ctype
        try:
            with open(local, "rb") as f:
                self._client.put_object(Bucket=bucket, Key=key, Body=f, **extra)
        except Exception as e:
            raise self._error(uri, "upload", e) from e
        return ObjectInfo(uri, size, checksum)

    def put_bytes(self, data: bytes, uri: str, content_type: str | None = None) -> ObjectInfo:
        bucket, key = self._key(uri)
        checksum = multihash_sha256(hashlib.sha256(data).hexdigest())
        kw: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": data,
            "Metadata": {CHECKSUM_META: checksum},
        }
        ctype = content_type or mimetypes.guess_type(key)[0]
        if ctype:
            kw["ContentType"] = ctype
        try:
            self._client.put_object(**kw)
        except Exception as e:
            raise self._error(uri, "put", e) from e
        return ObjectInfo(uri, len(data), checksum)

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = self._key(uri)
        try:
            resp = self._client.get_object(Bucket=bucket, Key=key)
            return resp["Body"].read()
        except Exception as e:
            if error_code(e) in _NOT_FOUND:
                raise FileNotFoundError(uri) from e
            raise self._error(uri, "get", e) from e

    def get_file(self, uri: str, local: Path, *, expect: ObjectInfo | None = None) -> Path:
        """Download ``uri`` to ``local`` (atomically). With ``expect``, only that exact object: its
        version is read, or the GET carries ``If-Match: <etag>`` so a changed object is refused
        (:class:`~hsi.errors.StorageError` "changed since it was indexed") instead of mixed in."""
        bucket, key = self._key(uri)
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            if expect is not None and (expect.etag or expect.version_id):
                kw: dict[str, Any] = {"Bucket": bucket, "Key": key}
                if expect.version_id:
                    kw["VersionId"] = expect.version_id
                if expect.etag:
                    kw["IfMatch"] = expect.etag
                body = self._client.get_object(**kw)["Body"]
                with open(tmp, "wb") as f:
                    for block in iter(lambda: body.read(CHUNK), b""):
                        f.write(block)
            else:
                self._client.download_file(bucket, key, tmp, Config=self._transfer_config())
            os.replace(tmp, local)
        except Exception as e:
            Path(tmp).unlink(missing_ok=True)
            if error_code(e) in _NOT_FOUND:
                raise FileNotFoundError(uri) from e
            if error_code(e) in ("PreconditionFailed", "412"):
                raise StorageError(
                    uri, "object changed since it was indexed (ETag differs): index it again"
                ) from None
            raise self._error(uri, "download", e) from e
        return local

    def open_read(self, uri: str, *, expect: ObjectInfo | None = None) -> Any:
        """A streaming binary reader of the object (read sequentially; bounded memory)."""
        bucket, key = self._key(uri)
        kw: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if expect is not None and expect.etag:
            kw["IfMatch"] = expect.etag
        try:
            return self._client.get_object(**kw)["Body"]
        except Exception as e:
            if error_code(e) in _NOT_FOUND:
                raise FileNotFoundError(uri) from e
            raise self._error(uri, "get", e) from e

    def read_range(self, uri: str, start: int, length: int, *, etag: str | None = None) -> bytes:
        """``length`` bytes from ``start`` (one ranged GET; ``etag`` pins the object)."""
        bucket, key = self._key(uri)
        kw: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes={start}-{start + length - 1}"}
        if etag:
            kw["IfMatch"] = etag
        try:
            return bytes(self._client.get_object(**kw)["Body"].read())
        except Exception as e:
            if error_code(e) in ("PreconditionFailed", "412"):
                raise StorageError(uri, "object changed while it was read (ETag differs)") from None
            raise self._error(uri, "ranged get", e) from e

    def open_ranged(self, uri: str, info: ObjectInfo, buffer_size: int = 64 << 10) -> Any:
        """A seekable binary reader of the object made of ranged GETs (e.g. for a zip's directory)."""
        from hsi.storage.blocks import RangedRaw

        raw = RangedRaw(lambda start, length: self.read_range(uri, start, length, etag=info.etag), info.size)
        return io.BufferedReader(raw, buffer_size=buffer_size)

    def stat(self, uri: str, checksum: bool = False) -> ObjectInfo | None:
        bucket, key = self._key(uri)
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except Exception as e:
            if error_code(e) in _NOT_FOUND:
                return None
            raise self._error(uri, "head", e) from e
        size = int(head["ContentLength"])
        known = (head.get("Metadata") or {}).get(CHECKSUM_META)
        if known is None and checksum:
            known = self._stream_checksum(uri, bucket, key)
        version = head.get("VersionId")
        return ObjectInfo(
            uri,
            size,
            known,
            etag=head.get("ETag"),
            version_id=version if version not in (None, "null") else None,
        )

    def _stream_checksum(self, uri: str, bucket: str, key: str) -> str:
        h = hashlib.sha256()
        try:
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
            for block in iter(lambda: body.read(CHUNK), b""):
                h.update(block)
        except Exception as e:
            raise self._error(uri, "read for checksum", e) from e
        return multihash_sha256(h.hexdigest())

    def delete(self, uri: str) -> bool:
        # S3 DELETE is idempotent and does not say whether the key existed: HEAD first
        if self.stat(uri) is None:
            return False
        bucket, key = self._key(uri)
        try:
            self._client.delete_object(Bucket=bucket, Key=key)
        except Exception as e:
            raise self._error(uri, "delete", e) from e
        return True

    def list(self, prefix_uri: str) -> Iterator[str]:
        """Objects equal to the prefix key or below it as a 'directory' (``a/b`` lists ``a/b/...``, not ``a/bc``)."""
        bucket, key = self._key(prefix_uri, allow_empty=True)
        base = key.rstrip("/")
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=base):
                for obj in page.get("Contents", []) or []:
                    k = obj["Key"]
                    if not base or k == base or k.startswith(base + "/"):
                        yield f"s3://{bucket}/{k}"
        except Exception as e:
            raise self._error(prefix_uri, "list", e) from e

    # ------------------------------------------------------------------ GDAL / rasterio

    def gdal_path(self, uri: str) -> str:
        bucket, key = self._key(uri)
        return f"/vsis3/{bucket}/{key}"

    def gdal_env(self) -> dict[str, str]:
        """GDAL config for this store's endpoint and region. Never contains a secret."""
        env: dict[str, str] = {}
        if self._region:
            env["AWS_REGION"] = self._region
        if self._endpoint_url:
            u = urlsplit(self._endpoint_url)
            env["AWS_S3_ENDPOINT"] = u.netloc + (u.path.rstrip("/") if u.path not in ("", "/") else "")
            env["AWS_VIRTUAL_HOSTING"] = "FALSE"
            env["AWS_HTTPS"] = "YES" if u.scheme == "https" else "NO"
        return env

    def aws_session(self) -> Any:
        """A ``rasterio.session.AWSSession`` carrying this store's credentials (for ``rasterio.Env``)."""
        from rasterio.session import AWSSession

        creds = None
        if self._session is not None:
            c = self._session.get_credentials()
            creds = c.get_frozen_credentials() if c is not None else None
        else:  # injected client: botocore keeps its credentials on the request signer
            with contextlib.suppress(AttributeError):
                c = self._client._request_signer._credentials
                creds = c.get_frozen_credentials() if hasattr(c, "get_frozen_credentials") else c
        # one AWSSession per set of credentials: building one builds a boto3 session (~25 ms), and
        # the batch opens a cube per scene; refreshed credentials get a new one
        key = (creds.access_key, creds.secret_key, creds.token) if creds is not None else None
        with self._aws_sessions_lock:
            cached = self._aws_sessions.get(key)
        if cached is not None:
            return cached
        env = self.gdal_env()
        kw: dict[str, Any] = {"region_name": self._region, "endpoint_url": env.get("AWS_S3_ENDPOINT")}
        if creds is None:
            made = AWSSession(aws_unsigned=True, **kw)
        else:
            made = _ExactAWSSession(
                aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key,
                aws_session_token=creds.token,
                **kw,
            )
        with self._aws_sessions_lock:
            self._aws_sessions = {key: made}  # only the current credentials are kept
        return made

    def rasterio_env(self, **options: Any) -> Any:
        """``rasterio.Env`` for reading this store's ``gdal_path()``s: credentials through an AWSSession,
        endpoint/region through :meth:`gdal_env`, plus any extra GDAL ``options``."""
        import rasterio

        return rasterio.Env(session=self.aws_session(), **{**self.gdal_env(), **options})

    # ------------------------------------------------------------------ helpers

    def _key(self, uri: str, allow_empty: bool = False) -> tuple[str, str]:
        bucket, key = parse_s3_uri(uri)
        if not key and not allow_empty:
            raise StorageError(uri, "URI names a bucket, not an object")
        return bucket, key

    def _error(self, uri: str, op: str, e: BaseException) -> StorageError:
        """A StorageError naming the URI and reason; never includes credentials."""
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )
        from botocore.exceptions import (
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        # boto3's S3UploadFailedError / RetriesExceededError wrap the real error (attribute or context)
        cause: BaseException = e
        for _ in range(5):
            if error_code(cause) or type(cause).__module__.startswith("botocore"):
                break
            inner = getattr(cause, "last_exception", None) or cause.__cause__ or cause.__context__
            if inner is None:
                break
            cause = inner
        code = error_code(cause) or error_code(e)
        where = f" at {self._endpoint_url}" if self._endpoint_url else ""
        if isinstance(cause, NoCredentialsError | PartialCredentialsError):
            prof = f" (profile '{self._profile}')" if self._profile else ""
            return StorageError(uri, f"{op} failed: no usable AWS credentials{prof}")
        if isinstance(
            cause, EndpointConnectionError | ConnectTimeoutError | BotoConnectionError | ReadTimeoutError
        ):
            return StorageUnavailableError(
                uri, f"{op} failed: cannot reach S3{where} ({type(cause).__name__})"
            )
        if code in _AUTH:
            prof = f" for profile '{self._profile}'" if self._profile else ""
            return StorageError(uri, f"{op} refused{where}: {code} (check the credentials{prof})")
        if code == "NoSuchBucket":
            return StorageError(uri, f"{op} failed: bucket '{parse_s3_uri(uri)[0]}' does not exist{where}")
        status = _status(cause) or _status(e)
        if status is not None and status >= 500:
            return StorageUnavailableError(uri, f"{op} failed{where}: HTTP {status} {code or ''}".rstrip())
        if code:
            return StorageError(uri, f"{op} failed{where}: {code}")
        return StorageError(uri, f"{op} failed{where}: {type(cause).__name__}")


@functools.cache
def _exact_session_class() -> Any:
    from rasterio.session import AWSSession

    class ExactAWSSession(AWSSession):
        """An AWSSession whose GDAL options always say the session token, empty when there is none:
        otherwise GDAL falls back to ``$AWS_SESSION_TOKEN`` and signs our keys with a stranger's token."""

        def get_credential_options(self) -> dict[str, str]:
            opts = dict(super().get_credential_options())
            if not self.unsigned:
                opts.setdefault("AWS_SESSION_TOKEN", "")
            return opts

    return ExactAWSSession


def _ExactAWSSession(**kw: Any) -> Any:  # noqa: N802 - a class factory (rasterio is imported lazily)
    return _exact_session_class()(**kw)


def _status(e: BaseException) -> int | None:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return int(status) if status else None
    return None
