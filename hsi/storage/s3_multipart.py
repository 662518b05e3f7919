"""Resumable multipart uploads to S3 and the aborting of unfinished ones (mixed into ``S3Store``).

Above the threshold ``S3Store.put_file`` runs the multipart upload itself and records it in
``<local file>.mpu.json`` (upload id, checksum, completed parts) next to the file, i.e. in the run's
scratch directory (:mod:`hsi.scratch`). A retry of the same file after an outage finds the record,
asks the server which parts it holds (``ListParts``) and sends only the missing ones; the checksum is
not recomputed. The record is deleted when the upload completes. See :mod:`hsi.storage.s3`.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from hsi.errors import StorageError
from hsi.faults import InjectedFault, fault_point
from hsi.storage.base import ObjectInfo, file_checksum

__all__ = ["CHECKSUM_META", "MPU_SUFFIX", "ResumableMultipart"]

log = logging.getLogger("hsi.storage.s3")

MPU_SUFFIX = ".mpu.json"  # the record of a resumable multipart upload, next to the local file
CHECKSUM_META = "sha256"  # -> x-amz-meta-sha256


class ResumableMultipart:
    """The multipart half of ``S3Store``: it provides the client, part size, concurrency and errors."""

    _client: Any
    _part_size: int
    _concurrency: int

    def _key(self, uri: str, allow_empty: bool = False) -> tuple[str, str]:
        raise NotImplementedError

    def _error(self, uri: str, op: str, e: BaseException) -> StorageError:
        raise NotImplementedError

    def _put_multipart(self, local: Path, uri: str, bucket: str, key: str, ctype: str | None) -> ObjectInfo:
        st = local.stat()
        rec_path = local.with_name(local.name + MPU_SUFFIX)
        ident = {"uri": uri, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "part_size": self._part_size}
        rec = _read_record(rec_path)
        done: dict[int, str] = {}
        if rec is not None and all(rec.get(k) == v for k, v in ident.items()):
            held = self._server_parts(uri, bucket, key, rec["upload_id"])
            if held is None:  # the upload is gone (aborted or expired): start again
                rec = None
            else:
                done = held
                log.info(
                    "%s: resuming upload %s (%d parts already stored)", uri, rec["upload_id"][:12], len(done)
                )
        elif rec is not None:  # the file changed since: the old upload is useless
            self._abort(bucket, key, rec["upload_id"])
            rec = None
        if rec is None:
            checksum = file_checksum(local)
            kw: dict[str, Any] = {"Bucket": bucket, "Key": key, "Metadata": {CHECKSUM_META: checksum}}
            if ctype:
                kw["ContentType"] = ctype
            try:
                upload_id = self._client.create_multipart_upload(**kw)["UploadId"]
            except Exception as e:
                raise self._error(uri, "upload", e) from e
            rec = {**ident, "upload_id": upload_id, "checksum": checksum, "created": time.time()}
            _write_record(rec_path, rec)
            done = {}
        upload_id, n_parts = rec["upload_id"], -(-st.st_size // self._part_size)
        lock = threading.Lock()

        def send(n: int) -> None:
            off = (n - 1) * self._part_size
            with open(local, "rb") as f:
                f.seek(off)
                body = f.read(min(self._part_size, st.st_size - off))
            resp = self._client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body
            )
            with lock:
                done[n] = resp["ETag"]
            fault_point("mid-upload")

        missing = [n for n in range(1, n_parts + 1) if n not in done]
        try:
            if self._concurrency > 1 and len(missing) > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(self._concurrency) as ex:
                    for fut in [ex.submit(send, n) for n in missing]:
                        fut.result()
            else:
                for n in missing:
                    send(n)
            self._client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"ETag": done[n], "PartNumber": n} for n in range(1, n_parts + 1)]
                },
            )
        except InjectedFault:
            raise
        except Exception as e:
            err = self._error(uri, "upload", e)
            sent = len(done) - (n_parts - len(missing))
            log.info(
                "%s: upload interrupted after %d of %d parts (this attempt sent %d)",
                uri,
                len(done),
                n_parts,
                sent,
            )
            raise err from e
        rec_path.unlink(missing_ok=True)
        return ObjectInfo(uri, st.st_size, rec["checksum"])

    def _server_parts(self, uri: str, bucket: str, key: str, upload_id: str) -> dict[int, str] | None:
        """Parts the server holds for ``upload_id`` (None: no such upload)."""
        parts: dict[int, str] = {}
        marker = 0
        try:
            while True:
                resp = self._client.list_parts(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
                for p in resp.get("Parts", []) or []:
                    if int(p["Size"]) > 0:
                        parts[int(p["PartNumber"])] = p["ETag"]
                if not resp.get("IsTruncated"):
                    return parts
                marker = int(resp["NextPartNumberMarker"])
        except Exception as e:
            if error_code(e) in {"NoSuchUpload", "404"}:
                return None
            raise self._error(uri, "list parts", e) from e

    def _abort(self, bucket: str, key: str, upload_id: str) -> bool:
        try:
            self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as e:
            if error_code(e) in {"NoSuchUpload", "404"}:
                return False
            raise self._error(f"s3://{bucket}/{key}", "abort upload", e) from e
        return True

    def abort_recorded(self, record: Path) -> str | None:
        """Abort the upload recorded in ``record`` (a ``*.mpu.json``); returns its URI when one was aborted."""
        rec = _read_record(record)
        if rec is None:
            return None
        bucket, key = self._key(rec["uri"])
        aborted = self._abort(bucket, key, rec["upload_id"])
        record.unlink(missing_ok=True)
        return f"{rec['uri']} (upload {rec['upload_id'][:12]})" if aborted else None

    def incomplete_uploads(self, prefix_uri: str) -> builtins.list[tuple[str, str, float]]:
        """Unfinished multipart uploads below ``prefix_uri``: (uri, upload id, seconds since initiated)."""
        bucket, prefix = self._key(prefix_uri, allow_empty=True)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        out: builtins.list[tuple[str, str, float]] = []
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        now = time.time()
        try:
            while True:
                resp = self._client.list_multipart_uploads(**kw)
                for u in resp.get("Uploads", []) or []:
                    out.append((f"s3://{bucket}/{u['Key']}", u["UploadId"], now - u["Initiated"].timestamp()))
                if not resp.get("IsTruncated"):
                    return out
                kw["KeyMarker"], kw["UploadIdMarker"] = resp["NextKeyMarker"], resp["NextUploadIdMarker"]
        except Exception as e:
            raise self._error(prefix_uri, "list uploads", e) from e

    def abort_stale_uploads(self, prefix_uri: str, older_than_s: float) -> builtins.list[str]:
        """Abort unfinished multipart uploads below ``prefix_uri`` initiated more than ``older_than_s`` ago."""
        aborted = []
        for uri, upload_id, age in self.incomplete_uploads(prefix_uri):
            if age >= older_than_s:
                bucket, key = self._key(uri)
                if self._abort(bucket, key, upload_id):
                    aborted.append(f"{uri} (upload {upload_id[:12]}, {age:.0f} s old)")
        return aborted


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "upload_id" in rec and "uri" in rec else None


def _write_record(path: Path, rec: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)


def error_code(e: BaseException) -> str | None:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        code = (resp.get("Error") or {}).get("Code")
        if code:
            return str(code)
        status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(status) if status else None
    return None
