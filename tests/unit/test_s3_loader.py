"""S3 stores share one botocore data loader: the S3 model is parsed once per process, not per store."""

from __future__ import annotations

import pytest

from hsi.errors import StorageError
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


def test_gdal_sessions_follow_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rasterio AWSSession of a store is built once per set of credentials (the batch opens a
    cube per scene; building one costs a boto3 session) and rebuilt when the credentials change."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    store = s3.S3Store("s3://bucket/p", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    first = store.aws_session()
    assert store.aws_session() is first
    opts = first.get_credential_options()
    assert (opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"]) == ("key-1", "secret-1")
    assert opts["AWS_SESSION_TOKEN"] == ""  # never a stranger's token from the environment
    # rotated credentials (what a refreshing provider returns): a new session with the new keys
    creds = store._session.get_credentials()  # type: ignore[union-attr]
    monkeypatch.setattr(creds, "access_key", "key-2")
    monkeypatch.setattr(creds, "secret_key", "secret-2")
    rotated = store.aws_session()
    assert rotated is not first
    opts = rotated.get_credential_options()
    assert (opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"]) == ("key-2", "secret-2")
    assert store.aws_session() is rotated


@pytest.mark.parametrize("region_env", [None, "eu-west-1"])
def test_a_missing_profile_is_our_error_whatever_the_environment(
    tmp_path, monkeypatch: pytest.MonkeyPatch, region_env: str | None
) -> None:
    """With AWS_DEFAULT_REGION set, botocore resolves the region without reading the profile: the
    store must still name the missing profile itself (CI 23 met botocore's ProfileNotFound)."""
    creds = tmp_path / "credentials"
    creds.write_text("[present]\naws_access_key_id = a\naws_secret_access_key = b\n")
    if region_env:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region_env)
    else:
        monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(StorageError, match=f"AWS profile 'nope' not found in {creds}"):
        s3.S3Store(
            "s3://b/p", endpoint_url="http://127.0.0.1:9", profile="nope", shared_credentials_file=creds
        )
    assert s3.S3Store(
        "s3://b/p", endpoint_url="http://127.0.0.1:9", profile="present", shared_credentials_file=creds
    )
