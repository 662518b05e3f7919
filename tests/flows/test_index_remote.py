"""Indexing scenes that are not local files: an https-style URL (served on 127.0.0.1) of a JPL-like archive."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hsi.config import load_config
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi_pipeline.flows.activate import activate_scene
from hsi_pipeline.flows.index import index_scenes

pytestmark = pytest.mark.usefixtures("prefect_harness")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_index_and_activate_an_archive_from_a_url(
    tmp_path: Path, config_file: Path, http_dir: tuple[Path, str]
) -> None:
    root, base = http_dir
    arc = synthesize(root, source="aviris-classic", level="l1b", width=24, height=30, seed=12, archive=True)
    url = f"{base}/{arc.name}"
    rows = index_scenes(hrefs=[url], config=str(config_file))
    item_id = rows[0]["item_id"]
    assert rows[0]["collection"] == "aviris-classic-raw" and item_id.startswith("aviris-classic-f")
    svc = Services.from_config(load_config(config_file))
    raw = svc.catalog.get_item("aviris-classic-raw", item_id)
    assert raw.assets["archive"].href == url  # the raw item points at the provider's copy
    assert raw.assets["archive"].extra_fields["file:size"] == arc.stat().st_size
    res = activate_scene(item_id=item_id, config=str(config_file))
    assert res["status"] == "activated"
    act = svc.catalog.get_item("aviris-classic-l1b", item_id)
    assert len(act.assets["cube"].extra_fields["bands"]) == 224
