"""StacApiCatalog against the stack's real stac-fastapi-pgstac (PostgreSQL + PostGIS). No mocks.

Failure modes (401, 500-then-recover, malformed JSON) come from a tiny fault-injection HTTP proxy
on 127.0.0.1 placed in front of the real API; everything it does not inject is forwarded.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pystac
import pytest
import requests

from hsi.catalog import Catalog, open_catalog
from hsi.catalog.stacapi import StacApiCatalog
from hsi.config import CatalogAuth, CatalogConfig
from hsi.errors import CatalogError, CatalogUnavailableError, TransientError
from tests.integration.fault_proxy import FaultProxy

# ---------------------------------------------------------------------------------------- builders


def make_collection(cid: str) -> pystac.Collection:
    return pystac.Collection(
        id=cid,
        description=f"test collection {cid}",
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent([[datetime(2000, 1, 1, tzinfo=UTC), None]]),
        ),
        license="CC-BY-4.0",
    )


def make_item(
    cid: str, iid: str, *, x: float = 10.0, y: float = 45.0, when: datetime | None = None, **props: Any
) -> pystac.Item:
    geom = {"type": "Polygon", "coordinates": [[[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]]}
    item = pystac.Item(
        iid,
        geom,
        [x, y, x + 1, y + 1],
        when or datetime(2021, 6, 1, 12, tzinfo=UTC),
        dict(props),
        collection=cid,
    )
    item.add_asset(
        "data", pystac.Asset(f"s3://hsi/test/{iid}.tif", media_type=pystac.MediaType.COG, roles=["data"])
    )
    item.add_link(
        pystac.Link(
            "derived_from", f"http://example.invalid/items/{iid}-src", media_type="application/geo+json"
        )
    )
    return item


@pytest.fixture
def collection(stac_catalog: StacApiCatalog) -> Iterator[str]:
    cid = f"hsi-test-{uuid.uuid4().hex[:10]}"
    stac_catalog.ensure_collection(make_collection(cid))
    yield cid
    for it in list(stac_catalog.search(collections=[cid])):
        stac_catalog.delete_item(cid, it.id)


# ---------------------------------------------------------------------------------------- fault proxy


@pytest.fixture
def proxy(stack: dict[str, Any]) -> Iterator[FaultProxy]:
    p = FaultProxy(stack["stac_api"])
    yield p
    p.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------- happy paths


def test_protocol_and_factory(stack: dict[str, Any], stac_catalog: StacApiCatalog) -> None:
    assert isinstance(stac_catalog, Catalog)
    cat = open_catalog(stack["stac_api"] + "/", timeout_s=5.0, retries=1)
    assert isinstance(cat, StacApiCatalog)
    assert cat.href == stack["stac_api"]
    assert cat.item_href("c 1", "a/b") == stack["stac_api"] + "/collections/c%201/items/a%2Fb"


def test_ensure_collection_is_idempotent(stac_catalog: StacApiCatalog, collection: str) -> None:
    stac_catalog.ensure_collection(make_collection(collection))  # exists: no error, nothing replaced
    got = stac_catalog.get_collection(collection)
    assert got is not None and got.id == collection
    assert stac_catalog.get_collection(collection + "-absent") is None


def test_upsert_twice_is_one_item_with_replaced_content(
    stac_catalog: StacApiCatalog, collection: str
) -> None:
    assert stac_catalog.get_item(collection, "scene-1") is None
    stac_catalog.upsert_item(make_item(collection, "scene-1", version=1))
    stac_catalog.upsert_item(make_item(collection, "scene-1", version=2, extra="yes"))
    found = list(stac_catalog.search(collections=[collection]))
    assert [i.id for i in found] == ["scene-1"]
    got = stac_catalog.get_item(collection, "scene-1")
    assert got is not None
    assert got.properties["version"] == 2 and got.properties["extra"] == "yes"
    assert got.collection_id == collection
    assert got.assets["data"].href == "s3://hsi/test/scene-1.tif"
    assert [ln.href for ln in got.links if ln.rel == "derived_from"] == [
        "http://example.invalid/items/scene-1-src"
    ]


def test_search_filters(stac_catalog: StacApiCatalog, collection: str) -> None:
    stac_catalog.upsert_item(make_item(collection, "a", x=10, y=45, when=datetime(2021, 6, 1, tzinfo=UTC)))
    stac_catalog.upsert_item(make_item(collection, "b", x=20, y=45, when=datetime(2022, 6, 1, tzinfo=UTC)))
    stac_catalog.upsert_item(
        make_item(collection, "c", x=10.5, y=45.5, when=datetime(2023, 6, 1, tzinfo=UTC))
    )

    def ids(**kw: Any) -> list[str]:
        return sorted(i.id for i in stac_catalog.search(**kw))

    assert ids(collections=[collection]) == ["a", "b", "c"]
    assert ids(collections=[collection], ids=["a", "c", "zz"]) == ["a", "c"]
    assert ids(ids=["b"], collections=[collection]) == ["b"]
    assert ids(collections=[collection], bbox=(9.0, 44.0, 10.2, 45.2)) == ["a"]
    assert ids(collections=[collection], bbox=(10.8, 45.8, 21.0, 47.0)) == ["a", "b", "c"]
    assert ids(
        collections=[collection],
        datetime_range=(datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 12, 31, tzinfo=UTC)),
    ) == ["b"]
    assert ids(collections=[collection], datetime_range=(datetime(2022, 1, 1), None)) == [
        "b",
        "c",
    ]  # naive = UTC
    assert ids(collections=[collection], datetime_range=(None, datetime(2021, 12, 31, tzinfo=UTC))) == ["a"]
    assert ids(
        collections=[collection],
        bbox=(9.0, 44.0, 12.0, 47.0),
        datetime_range=(datetime(2023, 1, 1, tzinfo=UTC), None),
    ) == ["c"]
    assert len(list(stac_catalog.search(collections=[collection], limit=2))) == 2
    assert ids(collections=[collection + "-absent"]) == []


def test_search_leaves_out_the_excluded_fields(stac_catalog: StacApiCatalog, collection: str) -> None:
    """The fields extension: the batch's chunk tasks search activated items without the cube's band
    list (pgstac's search of 20 items of 425 bands: 0.83 s with it, 0.13 s without)."""
    item = make_item(collection, "banded")
    bands = [{"name": f"b{i}", "eo:center_wavelength": 0.4 + i / 1000} for i in range(425)]
    item.add_asset(
        "cube",
        pystac.Asset(
            "s3://hsi/test/banded.tif",
            media_type=pystac.MediaType.COG,
            roles=["data"],
            extra_fields={"bands": bands, "file:checksum": "1220" + "ab" * 32},
        ),
    )
    stac_catalog.upsert_item(item)
    full = next(stac_catalog.search(collections=[collection], ids=["banded"]))
    light = next(stac_catalog.search(collections=[collection], ids=["banded"], exclude=["assets.cube.bands"]))
    assert full.assets["cube"].extra_fields["bands"] == bands
    assert "bands" not in light.assets["cube"].extra_fields
    assert light.assets["cube"].extra_fields["file:checksum"] == "1220" + "ab" * 32
    assert light.assets["data"].href == full.assets["data"].href and light.geometry == full.geometry


def test_delete(stac_catalog: StacApiCatalog, collection: str) -> None:
    stac_catalog.upsert_item(make_item(collection, "gone"))
    assert stac_catalog.delete_item(collection, "gone") is True
    assert stac_catalog.delete_item(collection, "gone") is False
    assert stac_catalog.get_item(collection, "gone") is None
    assert list(stac_catalog.search(collections=[collection], ids=["gone"])) == []


def test_concurrent_upserts_of_same_item(stac_catalog: StacApiCatalog, collection: str) -> None:
    barrier = threading.Barrier(4)

    def upsert(n: int) -> int:
        cat = StacApiCatalog(stac_catalog.href)  # own session per writer, like separate workers
        barrier.wait(timeout=30)
        cat.upsert_item(make_item(collection, "contended", writer=n))
        return n

    with ThreadPoolExecutor(4) as ex:
        done = sorted(ex.map(upsert, range(4)))
    assert done == [0, 1, 2, 3]
    found = list(stac_catalog.search(collections=[collection]))
    assert [i.id for i in found] == ["contended"]
    assert found[0].properties["writer"] in {0, 1, 2, 3}


def test_upsert_into_missing_collection_is_a_clear_error(stac_catalog: StacApiCatalog) -> None:
    cid = f"hsi-test-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(CatalogError, match=f"collection {cid} does not exist") as ei:
        stac_catalog.upsert_item(make_item(cid, "x"))
    assert ei.value.status == 404 and not isinstance(ei.value, TransientError)
    with pytest.raises(CatalogError, match="no collection id"):
        stac_catalog.upsert_item(pystac.Item("x", None, None, datetime(2020, 1, 1, tzinfo=UTC), {}))


# ---------------------------------------------------------------------------------------- failures


def test_unreachable_url_is_catalog_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hsi")  # each retry is logged at INFO (detail, shown with -v)
    url = f"http://127.0.0.1:{_closed_port()}"
    cat = StacApiCatalog(url, retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(CatalogUnavailableError) as ei:
        cat.get_item("c", "i")
    assert url in str(ei.value) and "after 3 attempts" in str(ei.value)
    assert isinstance(ei.value, TransientError) and ei.value.status is None
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(CatalogUnavailableError, match="127.0.0.1"):
        list(cat.search(collections=["c"]))
    with pytest.raises(CatalogUnavailableError, match=url):
        cat.upsert_item(make_item("c", "i"))


def test_500_then_recover_is_retried(
    proxy: FaultProxy, stac_catalog: StacApiCatalog, collection: str
) -> None:
    cat = StacApiCatalog(proxy.url, retries=3, backoff_s=0.01)
    proxy.inject(2, "500", lambda m, p: m == "POST" and p.endswith("/items"))
    cat.upsert_item(make_item(collection, "flaky", v=1))
    assert [s for m, p, s in proxy.seen if m == "POST"] == [500, 500, 201]
    proxy.inject(3, "500", lambda m, p: m == "GET" and "/items/flaky" in p)
    got = cat.get_item(collection, "flaky")
    assert got is not None and got.properties["v"] == 1
    proxy.inject(2, "500", lambda m, p: p.startswith("/search"))
    assert [i.id for i in cat.search(collections=[collection])] == ["flaky"]
    assert sum(1 for m, p, s in proxy.seen if p.startswith("/search") and s == 500) == 2


def test_persistent_500_gives_up_with_status(proxy: FaultProxy, collection: str) -> None:
    cat = StacApiCatalog(proxy.url, retries=2, backoff_s=0.01)
    proxy.inject(100, "500")
    with pytest.raises(CatalogUnavailableError) as ei:
        cat.get_item(collection, "x")
    assert ei.value.status == 500 and cat.item_href(collection, "x") in str(ei.value)
    assert "HTTP 500" in str(ei.value)
    assert len(proxy.seen) == 3


def test_401_is_not_retried_and_names_url_and_status(
    proxy: FaultProxy, collection: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = "tok-" + uuid.uuid4().hex
    proxy.require_token = token
    caplog.set_level(logging.DEBUG)
    anon = StacApiCatalog(proxy.url, retries=3, backoff_s=0.01)
    with pytest.raises(CatalogError) as ei:
        anon.get_item(collection, "x")
    err = ei.value
    assert err.status == 401 and not isinstance(err, TransientError)
    assert anon.item_href(collection, "x") in str(err) and "HTTP 401" in str(err)
    assert len(proxy.seen) == 1  # not retried
    with pytest.raises(CatalogError) as ei2:
        list(anon.search(collections=[collection]))
    assert ei2.value.status == 401

    monkeypatch.setenv("HSI_TEST_STAC_TOKEN", "wrong-" + token)
    wrong = StacApiCatalog.from_config(
        CatalogConfig(
            url=proxy.url, retries=1, auth=CatalogAuth(type="bearer", token_env="HSI_TEST_STAC_TOKEN")
        )
    )
    with pytest.raises(CatalogError) as ei3:
        wrong.upsert_item(make_item(collection, "x"))
    assert ei3.value.status == 401

    monkeypatch.setenv("HSI_TEST_STAC_TOKEN", token)
    good = StacApiCatalog.from_config(
        CatalogConfig(url=proxy.url, auth=CatalogAuth(type="bearer", token_env="HSI_TEST_STAC_TOKEN"))
    )
    good.upsert_item(make_item(collection, "authed", secretish=False))
    assert good.get_item(collection, "authed") is not None
    assert [i.id for i in good.search(collections=[collection])] == ["authed"]
    assert good.delete_item(collection, "authed") is True
    assert f"Bearer {token}" in proxy.auth_headers

    # no credential anywhere: messages, logs (incl. pystac-client/urllib3 debug logs), items
    text = "\n".join([str(err), str(ei2.value), str(ei3.value), caplog.text])
    assert token not in text
    assert good.get_item(collection, "authed") is None  # deleted above


def test_auth_env_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HSI_TEST_MISSING_TOKEN", raising=False)
    with pytest.raises(CatalogError, match="HSI_TEST_MISSING_TOKEN"):
        StacApiCatalog(
            "http://127.0.0.1:1", auth=CatalogAuth(type="bearer", token_env="HSI_TEST_MISSING_TOKEN")
        )
    with pytest.raises(CatalogError, match="not allowed"):
        StacApiCatalog("http://user:pw@127.0.0.1:1")


def test_malformed_json_is_a_clear_error(
    proxy: FaultProxy, stac_catalog: StacApiCatalog, collection: str
) -> None:
    stac_catalog.upsert_item(make_item(collection, "m"))
    cat = StacApiCatalog(proxy.url, retries=1, backoff_s=0.01)
    proxy.inject(1, "malformed", lambda m, p: "/items/m" in p)
    with pytest.raises(CatalogError, match="malformed JSON") as ei:
        cat.get_item(collection, "m")
    assert cat.item_href(collection, "m") in str(ei.value)
    assert not isinstance(ei.value, TransientError)
    assert cat.get_item(collection, "m") is not None  # next answer is fine again
    proxy.inject(1, "malformed", lambda m, p: p.startswith("/search"))
    with pytest.raises(CatalogError, match="malformed JSON"):
        list(cat.search(collections=[collection]))


def test_items_written_carry_no_credentials(
    proxy: FaultProxy, collection: str, monkeypatch: pytest.MonkeyPatch, stack_secret_key: str
) -> None:
    token = "tok-" + uuid.uuid4().hex
    monkeypatch.setenv("HSI_TEST_STAC_TOKEN", token)
    cat = StacApiCatalog(proxy.url, auth=CatalogAuth(type="bearer", token_env="HSI_TEST_STAC_TOKEN"))
    cat.upsert_item(make_item(collection, "clean"))
    raw = requests.get(cat.item_href(collection, "clean"), timeout=10).text
    assert token not in raw and stack_secret_key not in raw
    assert json.loads(raw)["id"] == "clean"
    assert "@" not in cat.href


def test_derived_is_reverse_lineage(stac_catalog: StacApiCatalog, collection: str) -> None:
    src = f"scene-{uuid.uuid4().hex[:8]}"
    ref = {"collection": collection, "id": src, "href": "", "checksums": {}}
    stac_catalog.upsert_item(make_item(collection, src))
    stac_catalog.upsert_item(make_item(collection, f"{src}-ndvi", **{"hsi:inputs": [ref]}))
    stac_catalog.upsert_item(make_item(collection, f"{src}-pca", **{"hsi:inputs": [ref]}))
    stac_catalog.upsert_item(make_item(collection, f"{src}-lookalike"))  # same prefix, other inputs
    got = sorted(i.id for i in stac_catalog.derived(collection, src))
    assert got == [f"{src}-ndvi", f"{src}-pca"]
    assert list(stac_catalog.derived(collection, f"{src}-ndvi")) == []


def test_bulk_upsert_registers_every_good_item_in_one_request_and_names_the_refused_one(
    stac_catalog: StacApiCatalog, collection: str
) -> None:
    good = [make_item(collection, f"bulk-{k}", x=10.0 + k, quality=k) for k in range(3)]
    bad = make_item(collection, "bulk-bad")
    bad.geometry = None  # pgstac requires a geometry: the API refuses this one item
    failed = stac_catalog.upsert_items([*good, bad])
    assert set(failed) == {f"{collection}/bulk-bad"} and "geometry" in failed[f"{collection}/bulk-bad"]
    stored = {i.id: i for i in stac_catalog.search(collections=[collection])}
    assert sorted(stored) == ["bulk-0", "bulk-1", "bulk-2"]
    assert [stored[f"bulk-{k}"].properties["quality"] for k in range(3)] == [0, 1, 2]
    assert stored["bulk-2"].assets["data"].href == "s3://hsi/test/bulk-2.tif"
    # again with new content: replaced, still one item each (upsert)
    assert (
        stac_catalog.upsert_items(
            [make_item(collection, f"bulk-{k}", x=10.0 + k, quality=10 + k) for k in range(3)]
        )
        == {}
    )
    again = {i.id: i.properties["quality"] for i in stac_catalog.search(collections=[collection])}
    assert again == {"bulk-0": 10, "bulk-1": 11, "bulk-2": 12}
    # the collection's extent covers the items (one refresh per bulk write)
    col = stac_catalog.get_collection(collection)
    assert col is not None
    assert col.extent.spatial.bboxes[0] == [10.0, 45.0, 13.0, 46.0]


def test_bulk_upsert_into_a_missing_collection_fails_each_item_clearly(stac_catalog: StacApiCatalog) -> None:
    cid = f"hsi-missing-{uuid.uuid4().hex[:8]}"
    failed = stac_catalog.upsert_items([make_item(cid, "a"), make_item(cid, "b")])
    assert set(failed) == {f"{cid}/a", f"{cid}/b"}
    assert all(f"collection {cid} does not exist" in r for r in failed.values())
