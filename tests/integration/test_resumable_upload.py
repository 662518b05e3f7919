"""Resumable multipart uploads against the stack's SeaweedFS: a retry after an interruption sends only
the missing parts and does not re-read the file for its checksum; unfinished uploads are aborted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from hsi.faults import InjectedFault
from hsi.storage import file_checksum
from hsi.storage.s3 import MPU_SUFFIX, S3Store

MiB = 1 << 20
PART = 5 * MiB  # the S3 minimum part size (SeaweedFS enforces it)


def _store(s3_store: S3Store, **kw: Any) -> S3Store:
    return S3Store(s3_store.root, client=s3_store.client, **kw)


def _parts_sent(store: S3Store) -> list[int]:
    sent: list[int] = []
    store.client.meta.events.register(
        "provide-client-params.s3.UploadPart", lambda params, **_: sent.append(params["PartNumber"])
    )
    return sent


def test_a_retry_resumes_the_upload_and_sends_only_missing_parts(
    s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(s3_store, part_size=PART, max_concurrency=1)
    local = tmp_path / "cube.tif"
    local.write_bytes(os.urandom(3 * PART + 123))  # 4 parts
    uri = store.uri("c", "i", "cube.tif")
    sent = _parts_sent(store)
    monkeypatch.setenv("HSI_FAULT", "mid-upload")
    monkeypatch.setenv("HSI_FAULT_MODE", "raise")  # "the connection drops" after the first part
    with pytest.raises(InjectedFault):
        store.put_file(local, uri)
    assert sent == [1] and (tmp_path / f"cube.tif{MPU_SUFFIX}").is_file()
    assert store.stat(uri) is None  # nothing visible before completion
    assert [u for u, _, _ in store.incomplete_uploads(store.root)] == [uri]
    monkeypatch.delenv("HSI_FAULT")
    info = store.put_file(local, uri)
    assert sent == [1, 2, 3, 4]  # part 1 was not sent again
    assert info.checksum == file_checksum(local) and info.size == local.stat().st_size
    body = store.get_bytes(uri)
    assert hashlib.sha256(body).digest() == hashlib.sha256(local.read_bytes()).digest()
    assert store.stat(uri).checksum == info.checksum  # type: ignore[union-attr]
    assert not (tmp_path / f"cube.tif{MPU_SUFFIX}").exists()
    assert store.incomplete_uploads(store.root) == []


def test_a_changed_file_restarts_and_a_gone_upload_restarts(
    s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(s3_store, part_size=PART, max_concurrency=1)
    local = tmp_path / "cube.tif"
    local.write_bytes(os.urandom(2 * PART + 1))
    uri = store.uri("c", "j", "cube.tif")
    monkeypatch.setenv("HSI_FAULT", "mid-upload")
    monkeypatch.setenv("HSI_FAULT_MODE", "raise")
    with pytest.raises(InjectedFault):
        store.put_file(local, uri)
    monkeypatch.delenv("HSI_FAULT")
    local.write_bytes(os.urandom(2 * PART + 1))  # rewritten: the recorded upload must not be reused
    store.put_file(local, uri)
    assert store.get_bytes(uri) == local.read_bytes()
    assert store.incomplete_uploads(store.root) == []  # the stale upload was aborted, not left


def test_stale_uploads_below_a_prefix_are_aborted(s3_store: S3Store) -> None:
    bucket, key = s3_store.client, s3_store.uri("c", "k", "cube.tif")
    b, k = key[5:].split("/", 1)
    up = bucket.create_multipart_upload(Bucket=b, Key=k)["UploadId"]
    other = s3_store.root + "-other"  # a sibling prefix is not ours
    ob, ok = (other + "/x.tif")[5:].split("/", 1)
    up2 = bucket.create_multipart_upload(Bucket=ob, Key=ok)["UploadId"]
    try:
        assert s3_store.abort_stale_uploads(s3_store.root, older_than_s=3600) == []  # too young
        aborted = s3_store.abort_stale_uploads(s3_store.root, older_than_s=0)
        assert len(aborted) == 1 and key in aborted[0]
        assert s3_store.incomplete_uploads(s3_store.root) == []
        assert [u for _, u, _ in s3_store.incomplete_uploads(other)] == [up2]
    finally:
        bucket.abort_multipart_upload(Bucket=ob, Key=ok, UploadId=up2)
    assert up
