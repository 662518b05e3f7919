"""S3Store against the stack's real SeaweedFS (S3 API, signatures enforced). No mocks."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsi.errors import StorageError, StorageUnavailableError, TransientError
from hsi.storage import ObjectStore, file_checksum, open_store
from hsi.storage.s3 import S3Store

MiB = 1024 * 1024


def test_is_an_object_store(s3_store: S3Store) -> None:
    assert isinstance(s3_store, ObjectStore)
    assert s3_store.root.startswith("s3://hsi/test/")
    assert s3_store.uri("a", "/b/", "c.tif") == s3_store.root + "/a/b/c.tif"


def test_put_get_stat_list_delete(s3_store: S3Store, tmp_path: Path) -> None:
    u1 = s3_store.uri("dir", "one.json")
    u2 = s3_store.uri("dir", "sub", "two.bin")
    u3 = s3_store.uri("dirx", "three.txt")  # shares the string prefix "dir" but is not below dir/
    info1 = s3_store.put_bytes(b'{"a": 1}', u1, content_type="application/json")
    assert info1.size == 8
    assert info1.checksum == "1220" + hashlib.sha256(b'{"a": 1}').hexdigest()
    src = tmp_path / "two.bin"
    src.write_bytes(os.urandom(1000))
    info2 = s3_store.put_file(src, u2)
    assert info2.checksum == file_checksum(src)
    s3_store.put_bytes(b"x", u3)

    assert s3_store.get_bytes(u1) == b'{"a": 1}'
    out = s3_store.get_file(u2, tmp_path / "back" / "two.bin")
    assert out.read_bytes() == src.read_bytes()
    assert not list((tmp_path / "back").glob("*.part"))

    st = s3_store.stat(u2)
    assert st is not None and st.size == 1000 and st.checksum == info2.checksum  # from HEAD metadata

    assert sorted(s3_store.list(s3_store.uri("dir"))) == [u1, u2]
    assert list(s3_store.list(s3_store.uri("dir", "one.json"))) == [u1]
    assert sorted(s3_store.list(s3_store.root)) == sorted([u1, u2, u3])
    assert (
        s3_store.client.head_object(Bucket="hsi", Key=u1.split("/", 3)[3])["ContentType"]
        == "application/json"
    )

    assert s3_store.delete(u1) is True
    assert s3_store.delete(u1) is False
    assert s3_store.stat(u1) is None
    assert sorted(s3_store.list(s3_store.uri("dir"))) == [u2]


def test_list_is_paginated(s3_store: S3Store) -> None:
    uris = [s3_store.uri("many", f"k{i:04d}") for i in range(1105)]  # > 1000: two ListObjectsV2 pages
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda u: s3_store.put_bytes(b"", u), uris))
    assert sorted(s3_store.list(s3_store.uri("many"))) == sorted(uris)


def test_multipart_upload_and_checksum_metadata(
    pipeline_config: Any, s3_store: S3Store, tmp_path: Path
) -> None:
    small_parts = S3Store.from_config(pipeline_config.storage, part_size=5 * MiB)  # S3 minimum part size
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * MiB + 123))
    uri = small_parts.uri("big", "big.bin")
    info = small_parts.put_file(big, uri)
    assert info.size == big.stat().st_size
    assert info.checksum == file_checksum(big)

    key = uri.split("/", 3)[3]
    head = small_parts.client.head_object(Bucket="hsi", Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # really a 3-part multipart upload
    assert head["Metadata"]["sha256"] == info.checksum  # x-amz-meta-sha256
    st = s3_store.stat(uri)
    assert st is not None and st.checksum == info.checksum and st.size == info.size
    back = small_parts.get_file(uri, tmp_path / "big.back")
    assert file_checksum(back) == info.checksum


def test_stat_checksum_streams_when_metadata_missing(s3_store: S3Store) -> None:
    uri = s3_store.uri("raw", "no-meta.bin")
    data = os.urandom(3 * MiB)
    s3_store.client.put_object(Bucket="hsi", Key=uri.split("/", 3)[3], Body=data)  # written by someone else
    assert s3_store.stat(uri).checksum is None  # cheap stat: HEAD only
    assert s3_store.stat(uri, checksum=True).checksum == "1220" + hashlib.sha256(data).hexdigest()


def test_missing_objects(s3_store: S3Store, tmp_path: Path) -> None:
    uri = s3_store.uri("nope", "missing.tif")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        s3_store.get_bytes(uri)
    with pytest.raises(FileNotFoundError):
        s3_store.get_file(uri, tmp_path / "x")
    assert not list(tmp_path.iterdir())  # no temp file left behind
    assert s3_store.stat(uri) is None
    assert s3_store.stat(uri, checksum=True) is None
    assert s3_store.delete(uri) is False
    assert list(s3_store.list(s3_store.uri("nope"))) == []


def test_rasterio_windowed_read_over_vsis3(s3_store: S3Store, tmp_path: Path, stack_secret_key: str) -> None:
    data = (np.arange(3 * 300 * 400, dtype=np.uint16).reshape(3, 300, 400) % 5000).astype(np.uint16)
    tif = tmp_path / "cube.tif"
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        width=400,
        height=300,
        count=3,
        dtype="uint16",
        crs="EPSG:32611",
        transform=from_origin(500000, 4000000, 5, 5),
        tiled=True,
        blockxsize=128,
        blockysize=128,
        compress="deflate",
    ) as dst:
        dst.write(data)
    uri = s3_store.uri("cogs", "cube.tif")
    s3_store.put_file(tif, uri)

    env = s3_store.gdal_env()
    assert env["AWS_S3_ENDPOINT"] == "127.0.0.1:8333" and env["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert env["AWS_HTTPS"] == "NO"
    assert stack_secret_key not in repr(env)
    path = s3_store.gdal_path(uri)
    assert path == "/vsis3/" + uri[len("s3://") :]
    with s3_store.rasterio_env(), rasterio.open(path) as src:
        assert (src.count, src.width, src.height) == (3, 400, 300)
        win = src.read(2, window=Window(100, 50, 64, 32))
    assert np.array_equal(win, data[1, 50:82, 100:164])


def test_open_store_and_config_roundtrip(stack: dict[str, Any], s3_store: S3Store) -> None:
    store = open_store(
        s3_store.root,
        endpoint_url=stack["s3_endpoint"],
        aws_profile=stack["aws_profile"],
        shared_credentials_file=stack["shared_credentials_file"],
    )
    assert isinstance(store, S3Store)
    uri = store.uri("via-open-store.txt")
    store.put_bytes(b"ok", uri)
    assert s3_store.get_bytes(uri) == b"ok"


def test_bad_credentials_raise_storage_error_naming_uri(
    stack: dict[str, Any],
    s3_store: S3Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    stack_secret_key: str,
) -> None:
    import configparser

    cp = configparser.ConfigParser()
    cp.read(stack["shared_credentials_file"])
    key_id = cp[stack["aws_profile"]]["aws_access_key_id"]
    wrong_secret = "WRONG-" + stack_secret_key[::-1]
    creds = tmp_path / "credentials"
    creds.write_text(f"[bad]\naws_access_key_id = {key_id}\naws_secret_access_key = {wrong_secret}\n")
    bad = S3Store(
        s3_store.root,
        endpoint_url=stack["s3_endpoint"],
        profile="bad",
        shared_credentials_file=str(creds),
        max_attempts=1,
    )
    uri = bad.uri("denied.txt")
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    caplog.set_level(logging.DEBUG)
    errors: list[StorageError] = []
    for op in (
        lambda: bad.put_bytes(b"x", uri),
        lambda: bad.put_file(src, uri),
        lambda: bad.get_bytes(uri),
        lambda: bad.stat(uri),
        lambda: list(bad.list(bad.root)),
    ):
        with pytest.raises(StorageError) as ei:
            op()
        errors.append(ei.value)
        assert not isinstance(ei.value, TransientError)
    for e in errors:
        assert e.uri in (uri, bad.root)
        assert e.uri in str(e)
        assert "refused" in str(e) and "check the credentials for profile 'bad'" in str(e)
    assert "SignatureDoesNotMatch" in str(errors[0])  # a HEAD (stat) only gets a bare 403
    # no credential value in any message or log record
    text = "\n".join(str(e) for e in errors) + "\n" + caplog.text
    for secret in (wrong_secret, stack_secret_key):
        assert secret not in text
    assert s3_store.stat(uri) is None


def test_missing_profile_and_unreachable_endpoint(stack: dict[str, Any], s3_store: S3Store) -> None:
    with pytest.raises(StorageError, match="profile 'nope' not found"):
        S3Store(
            s3_store.root,
            endpoint_url=stack["s3_endpoint"],
            profile="nope",
            shared_credentials_file=stack["shared_credentials_file"],
        )
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = S3Store(
        s3_store.root,
        endpoint_url=f"http://127.0.0.1:{port}",
        profile=stack["aws_profile"],
        shared_credentials_file=stack["shared_credentials_file"],
        max_attempts=1,
        connect_timeout=2,
    )
    uri = dead.uri("x")
    with pytest.raises(StorageUnavailableError, match=f"127.0.0.1:{port}") as ei:
        dead.stat(uri)
    assert isinstance(ei.value, TransientError) and uri in str(ei.value)
