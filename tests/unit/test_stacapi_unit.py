"""StacApiCatalog pieces that need no server: auth handling, hrefs, datetime and link shaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests
from requests.adapters import HTTPAdapter

from hsi.catalog.http import _auth_header, _AuthAdapter
from hsi.catalog.stacapi import StacApiCatalog
from hsi.catalog.stacapi_search import _rfc3339
from hsi.config import CatalogAuth, CatalogConfig
from hsi.errors import CatalogError


def test_rfc3339() -> None:
    assert _rfc3339(None) == ".."
    assert _rfc3339(datetime(2021, 1, 2, 3, 4, 5)) == "2021-01-02T03:04:05Z"  # naive = UTC
    assert _rfc3339(datetime(2021, 1, 2, 5, tzinfo=timezone(timedelta(hours=2)))) == "2021-01-02T03:00:00Z"
    assert _rfc3339(datetime(2021, 1, 2, tzinfo=UTC)) == "2021-01-02T00:00:00Z"


def test_auth_from_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_TOKEN", "s3cr3t")
    header, secrets = _auth_header("http://x", CatalogAuth(type="bearer", token_env="T_TOKEN"))
    assert header == "Bearer s3cr3t" and "s3cr3t" in secrets
    monkeypatch.setenv("T_USER", "alice")
    monkeypatch.setenv("T_PASS", "pw")
    header, secrets = _auth_header(
        "http://x", CatalogAuth(type="basic", username_env="T_USER", password_env="T_PASS")
    )
    assert header == "Basic YWxpY2U6cHc=" and "pw" in secrets
    monkeypatch.delenv("T_PASS")
    with pytest.raises(CatalogError, match="T_PASS") as ei:
        _auth_header("http://x", CatalogAuth(type="basic", username_env="T_USER", password_env="T_PASS"))
    assert "alice" not in str(ei.value)
    with pytest.raises(CatalogError, match="without the env var name"):
        _auth_header("http://x", CatalogAuth(type="bearer"))


def test_auth_adapter_only_sends_to_the_catalog_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = _AuthAdapter("http://127.0.0.1:8082", "Bearer t")
    sent: list[requests.PreparedRequest] = []
    monkeypatch.setattr(HTTPAdapter, "send", lambda self, req, *a, **k: sent.append(req))  # no network
    for url in ("http://127.0.0.1:8082/collections", "http://evil.invalid/collections"):
        adapter.send(requests.Request("GET", url).prepare())
    assert sent[0].headers.get("Authorization") == "Bearer t"
    assert "Authorization" not in sent[1].headers


def test_constructor_and_hrefs(monkeypatch: pytest.MonkeyPatch) -> None:
    cat = StacApiCatalog("http://127.0.0.1:1/stac/")
    assert cat.href == "http://127.0.0.1:1/stac"
    assert (
        cat.item_href("hsi-ndvi", "a b/c") == "http://127.0.0.1:1/stac/collections/hsi-ndvi/items/a%20b%2Fc"
    )
    with pytest.raises(CatalogError, match="http"):
        StacApiCatalog("ftp://x")
    with pytest.raises(CatalogError, match="not allowed") as ei:
        StacApiCatalog("https://user:hunter2@example.invalid")
    assert "hunter2" not in str(ei.value)
    monkeypatch.setenv("T_TOKEN", "tok")
    cfg = CatalogConfig(
        url="http://127.0.0.1:1", timeout_s=3, retries=5, auth=CatalogAuth(type="bearer", token_env="T_TOKEN")
    )
    c2 = StacApiCatalog.from_config(cfg)
    assert (c2._http.timeout, c2._http.retries) == (3.0, 5)


def test_api_managed_links_are_not_sent() -> None:
    d = {
        "links": [
            {"rel": "self", "href": "x"},
            {"rel": "root", "href": "r"},
            {"rel": "derived_from", "href": "d"},
            {"rel": "collection", "href": "c"},
            {"rel": "via", "href": "v"},
        ]
    }
    assert [ln["rel"] for ln in StacApiCatalog._clean(d)["links"]] == ["derived_from", "via"]
    assert StacApiCatalog._clean({})["links"] == []  # an item POST must carry links


def test_unreachable_api_is_named_not_the_collection_a_lookup_tried() -> None:
    """`hsi activate ID` looks in emit-raw first: the error must name the API, not that collection."""
    import socket

    from hsi.errors import CatalogUnavailableError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/stac"
    cat = StacApiCatalog(api, retries=1, backoff_s=0.0, timeout_s=2.0)
    with pytest.raises(CatalogUnavailableError) as ei:
        cat.get_item("emit-raw", "some-id")
    assert str(ei.value).startswith(f"catalog {api}: cannot reach the STAC API")
    assert "emit-raw" not in str(ei.value)
