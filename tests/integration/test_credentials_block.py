"""``credentials_block`` (a prefect-aws ``AwsCredentials`` block) is honoured for ``inputs[]`` and for an
s3:// static catalog, against a real Prefect test server and a moto S3 server that enforces credentials.

The environment holds other (refused) AWS keys: only the block's keys reach the objects.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_aws import AwsCredentials

from hsi import activation as act
from hsi.config import PipelineConfig
from hsi.errors import ConfigError
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi_pipeline.tasks.runtime import services
from tests.integration.moto_server import free_port, prefect_api, stop_process, tool_bin, wait_for

__all__ = ["prefect_api"]  # fixture re-exported for pytest

BUCKET = "landing-blk"
BLOCK = f"hsi-test-landing-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def secured_s3(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[dict[str, Any]]:
    """A moto server that enforces IAM after its first 3 calls (which create the one allowed user)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto-auth") / "moto.log").open("wb")
    proc = subprocess.Popen([tool_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env={"INITIAL_NO_AUTH_ACTION_COUNT": "3", "PATH": "/usr/bin:/bin"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and httpx.get(f"{url}/moto-api/", timeout=2).status_code == 200,
                 timeout=30, what="moto server")  # fmt: skip
        kw = {"endpoint_url": url, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
        iam.create_user(UserName="landing")
        key = iam.create_access_key(UserName="landing")["AccessKey"]
        iam.put_user_policy(UserName="landing", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))  # fmt: skip
        s3 = boto3.client(
            "s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **kw
        )
        s3.create_bucket(Bucket=BUCKET)
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}):  # a real Prefect server
            AwsCredentials(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                           region_name="us-east-1").save(BLOCK, overwrite=True)  # fmt: skip
            try:
                yield {"url": url, "s3": s3}
            finally:
                AwsCredentials.delete(BLOCK)  # type: ignore[call-arg]
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def wrong_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"AWS_ACCESS_KEY_ID": "refused", "AWS_SECRET_ACCESS_KEY": "refused"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _scene(tmp_path: Path, s3: Any, prefix: str) -> str:
    hdr = synthesize(tmp_path / "scene", source="aviris-ng", level="l2", width=16, height=20, seed=2)
    for p in hdr.parent.iterdir():
        s3.upload_file(str(p), BUCKET, f"{prefix}/{p.name}")
    return f"s3://{BUCKET}/{prefix}/{hdr.with_suffix('').name}"


def test_inputs_credentials_block_reaches_the_landing_bucket(
    tmp_path: Path, secured_s3: dict[str, Any], wrong_env_keys: None
) -> None:
    href = _scene(tmp_path, secured_s3["s3"], "inputs")
    cfg = PipelineConfig.model_validate({
        "storage": {"root": str(tmp_path / "assets")}, "catalog": {"url": str(tmp_path / "catalog")},
        "work_dir": str(tmp_path / "work"),
        "inputs": [{"prefix": f"s3://{BUCKET}", "endpoint_url": secured_s3["url"], "region": "us-east-1",
                    "credentials_block": BLOCK}],
    })  # fmt: skip
    item = act.index_scene(services(cfg), href)
    assert item.assets["data"].href == href and item.assets["data"].extra_fields["hsi:etag"]
    # without the Prefect layer a block cannot be resolved: one clear configuration error
    with pytest.raises(ConfigError, match=f"credentials_block '{BLOCK}'"):
        Services.from_config(cfg).store_for(href)


def test_static_s3_catalog_uses_the_storage_credentials_block(
    tmp_path: Path, secured_s3: dict[str, Any], wrong_env_keys: None
) -> None:
    s3 = secured_s3["s3"]
    href = _scene(tmp_path, s3, "catalogued")
    cfg = PipelineConfig.model_validate({
        "storage": {"root": f"s3://{BUCKET}/assets", "endpoint_url": secured_s3["url"], "region": "us-east-1",
                    "credentials_block": BLOCK},
        "catalog": {"url": f"s3://{BUCKET}/catalog"}, "work_dir": str(tmp_path / "work"),
    })  # fmt: skip
    item = act.index_scene(services(cfg), href)
    body = s3.get_object(Bucket=BUCKET, Key=f"catalog/{item.collection_id}/{item.id}/{item.id}.json")["Body"]
    assert json.loads(body.read())["id"] == item.id
