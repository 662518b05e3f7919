"""Published files are world-readable: catalog and asset files 0644, directories 0755 (issue 11 item 8).

Run under a restrictive umask (077) so the modes come from the code, not from the caller's umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest

from hsi.catalog.static import StaticCatalog
from hsi.stac.items import collection_for
from hsi.storage import LocalStore


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


@pytest.mark.usefixtures("strict_umask")
def test_store_writes_0644_files_in_0755_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "assets")
    src = tmp_path / "x.tif"
    src.write_bytes(b"cube")
    store.put_file(src, store.uri("coll", "item", "x.tif"))
    store.put_bytes(b"{}", store.uri("coll", "item", "x.json"))
    store.put_bytes(b"{}", store.uri("coll", "item", "x.json"))  # overwrite keeps the mode
    modes = _modes(tmp_path / "assets")
    assert modes == {"coll": 0o755, "coll/item": 0o755, "coll/item/x.tif": 0o644, "coll/item/x.json": 0o644}


@pytest.mark.usefixtures("strict_umask")
def test_static_catalog_files_are_world_readable(tmp_path: Path) -> None:
    cat = StaticCatalog(str(tmp_path / "catalog"))
    cat.ensure_collection(collection_for("aviris-ng-l2"))
    when = datetime(2024, 1, 1, tzinfo=UTC)
    item = pystac.Item(
        "a", {"type": "Point", "coordinates": [0, 0]}, [0, 0, 0, 0], when, {}, collection="aviris-ng-l2"
    )
    cat.upsert_item(item)
    modes = _modes(tmp_path / "catalog")
    assert modes, "nothing written"
    bad = {
        k: oct(v) for k, v in modes.items() if v != (0o755 if (tmp_path / "catalog" / k).is_dir() else 0o644)
    }
    assert not bad
    assert not list((tmp_path / "catalog").rglob("*.lock"))  # lock files live outside the published tree
