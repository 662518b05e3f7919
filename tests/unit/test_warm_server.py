"""What the fork server (deployments/local/warm.py) prepares once for its runs: one verified TLS context
for Prefect's clients, everything else left to ``ssl``."""

from __future__ import annotations

import importlib
import ssl
from pathlib import Path

import certifi
import pytest

from hsi_pipeline.deployments.local.prefect_warmups import TLS_CLIENT_MODULES, share_tls_contexts


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    mods = [importlib.import_module(n) for n in TLS_CLIENT_MODULES]
    for m in mods:
        monkeypatch.setattr(m, "ssl", ssl)  # restored after the test
    share_tls_contexts()
    return mods


def test_prefect_clients_share_one_verified_context_per_bundle(shared: list[object], tmp_path: Path) -> None:
    orchestration = shared[0]
    tls = orchestration.ssl  # type: ignore[attr-defined]
    assert tls is not ssl and all(m.ssl is tls for m in shared)  # type: ignore[attr-defined]
    a = tls.create_default_context(cafile=certifi.where())
    assert a is tls.create_default_context(cafile=certifi.where())  # made once (in the server)
    assert (
        a.verify_mode == ssl.CERT_REQUIRED and a.check_hostname and a.get_ca_certs()
    )  # a real, verifying one
    # another bundle is its own context; a changed bundle is loaded again
    other = tmp_path / "ca.pem"
    other.write_text(Path(certifi.where()).read_text())
    b = tls.create_default_context(cafile=str(other))
    assert b is not a and b is tls.create_default_context(cafile=str(other))
    other.write_text(Path(certifi.where()).read_text() + "\n")
    assert tls.create_default_context(cafile=str(other)) is not b


def test_contexts_a_caller_changes_are_never_shared(shared: list[object]) -> None:
    tls = shared[0].ssl  # type: ignore[attr-defined]
    # Prefect's insecure mode edits the context it gets: that call gets a fresh one each time
    insecure = tls.create_default_context()
    insecure.check_hostname = False
    assert tls.create_default_context() is not insecure and tls.create_default_context().check_hostname
    assert tls.CERT_NONE == ssl.CERT_NONE and tls.Purpose is ssl.Purpose  # the rest is ssl itself
    srv = tls.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=certifi.where())
    assert srv is not tls.create_default_context(cafile=certifi.where())


def test_prefect_client_schemas_are_built_in_the_server() -> None:
    from prefect.client.schemas.objects import FlowRun, WorkQueue

    from hsi_pipeline.deployments.local.prefect_warmups import complete_prefect_models

    complete_prefect_models()
    assert FlowRun.__pydantic_complete__ and WorkQueue.__pydantic_complete__
    assert complete_prefect_models() == 0  # nothing left to build
    run = FlowRun.model_validate(
        {
            "id": "00000000-0000-0000-0000-000000000001",
            "flow_id": "00000000-0000-0000-0000-000000000002",
            "name": "x",
        }
    )
    assert run.name == "x"  # the built validator validates


def test_the_worker_renders_each_settings_object_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings
    from prefect.settings.base import PrefectBaseSettings

    from hsi_pipeline.deployments.local.prefect_warmups import memoize_settings_environment

    original = PrefectBaseSettings.to_environment_variables
    monkeypatch.setattr(PrefectBaseSettings, "to_environment_variables", original)  # restored after
    memoize_settings_environment()
    memoize_settings_environment()  # once only
    assert getattr(PrefectBaseSettings.to_environment_variables, "hsi_memo", False)

    a = Settings(api={"url": "http://127.0.0.1:1/api"})
    env = a.to_environment_variables(exclude_unset=True)
    assert env == original(a, exclude_unset=True)  # what Prefect renders
    env["PREFECT_API_URL"] = "changed by a caller"
    assert a.to_environment_variables(exclude_unset=True)["PREFECT_API_URL"] == "http://127.0.0.1:1/api"
    # another settings object (temporary_settings makes new ones) is rendered on its own
    b = Settings(api={"url": "http://127.0.0.1:2/api"})
    assert b.to_environment_variables(exclude_unset=True)["PREFECT_API_URL"] == "http://127.0.0.1:2/api"
    assert a.to_environment_variables() == original(a)  # other arguments: their own rendering
