"""S3 stores share one botocore data loader: the S3 model is parsed once per process, not per store."""

from __future__ import annotations

import pytest

from hsi.storage import s3


def test_stores_share_the_parsed_s3_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s3.warm_up()  # what the fork server does: no request, no credential lookup
    stores = [
        s3.S3Store(f"s3://bucket-{i}/p", endpoint_url="http://127.0.0.1:9", region="us-east-1")
        for i in range(3)
    ]
    loaders = {id(st._session._session.get_component("data_loader")) for st in stores}  # type: ignore[union-attr]
    assert loaders == {id(s3._shared_loader())}
    paths = s3._shared_loader().search_paths
    assert len(paths) == len(set(paths))  # boto3's per-session data path is not piled up
    # the clients are complete and independent: each addresses its own endpoint with path-style URLs
    url = stores[1].client.generate_presigned_url("get_object", Params={"Bucket": "bucket-1", "Key": "k"})
    assert url.startswith("http://127.0.0.1:9/bucket-1/k?")
