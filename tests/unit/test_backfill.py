"""Backfill scan: which listed objects become ``hsi.raw.available`` events, with the bridge's ids."""

from __future__ import annotations

from datetime import UTC, datetime

from hsi.backfill import Listed, scan, split_s3
from hsi.bridge import DEFAULT_RULES
from hsi.events import raw_object_event_id

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 6, 1, tzinfo=UTC)


def _listing() -> list[Listed]:
    return [
        Listed("in/ang20250101t000000_rfl_v2_img", 10, "e1", None, T0),
        Listed("in/ang20250101t000000_rfl_v2_img.hdr", 1, "h1", None, T0),
        Listed("in/ang20250102t000000_rfl_v2_img", 10, "e2", None, T1),  # no header: waits
        Listed("in/ang20250103t000000.tar.gz", 50, "e3", "v3", T1),
        Listed("in/ang20250103t000000_obs", 5, "x", None, T1),  # sidecar
        Listed("in/notes.txt", 5, "x", None, T1),
    ]


def test_scan_pairs_envi_data_with_headers_and_uses_the_bridge_event_ids() -> None:
    s = scan("b", _listing(), DEFAULT_RULES, catalog_href="http://stac")
    assert s.listed == 6
    assert [(o.item_id, o.key) for o in s.scenes] == [
        ("aviris-ng-ang20250101t000000", "in/ang20250101t000000_rfl_v2_img"),
        ("aviris-ng-ang20250103t000000", "in/ang20250103t000000.tar.gz"),
    ]
    envi, archive = s.scenes
    assert envi.event["id"] == str(raw_object_event_id("b", envi.key, None, "e1"))  # same id as the bridge's
    assert archive.event["id"] == str(raw_object_event_id("b", archive.key, "v3", "e3"))
    assert envi.event["payload"]["extra"]["header_key"] == "in/ang20250101t000000_rfl_v2_img.hdr"
    assert archive.event["payload"]["uri"] == "s3://b/in/ang20250103t000000.tar.gz"
    reasons = dict(s.skipped)
    assert "without its header" in reasons["in/ang20250102t000000_rfl_v2_img"]
    assert "sidecar" in reasons["in/ang20250103t000000_obs"] and "in/notes.txt" in reasons


def test_scan_filters_by_pattern_and_since() -> None:
    only_archives = scan("b", _listing(), DEFAULT_RULES, pattern="**/*.tar.gz")
    assert [o.key for o in only_archives.scenes] == ["in/ang20250103t000000.tar.gz"]
    recent = scan("b", _listing(), DEFAULT_RULES, since=datetime(2025, 3, 1, tzinfo=UTC))
    assert [o.key for o in recent.scenes] == ["in/ang20250103t000000.tar.gz"]
    assert split_s3("s3://bucket/a/b") == ("bucket", "a/b") and split_s3("s3://bucket") == ("bucket", "")
