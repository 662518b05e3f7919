"""Raw staging keyed by identity, against a real S3 server (moto on 127.0.0.1).

* indexing an S3 scene reads only headers: no GET of the data object; an archive is read as one
  stream (tar) or by ranged GETs of its directory and header members (zip); nothing stays on disk;
* a corrected scene of the same size re-uploaded to the same key is a new input: its raw item gets
  a new ETag and the activation key changes (so the activated item is recomputed, not "up to date");
* a staged copy is reused only for the same identity, and fetching an object that changed since it
  was indexed is refused instead of silently processing other bytes;
* the staging copy is the run's own (in the directory the caller gives, removed with it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import rasterio

from hsi import activation as act
from hsi.cog import CogProfile
from hsi.config import PipelineConfig
from hsi.errors import StorageError, UnsupportedSourceError
from hsi.services import Services
from hsi.sources.synthetic import synthesize
from hsi.storage import file_checksum

try:
    from tests.integration.moto_server import aws_env, moto_endpoint
except ImportError:  # pragma: no cover - run from tests/integration
    from moto_server import aws_env, moto_endpoint  # type: ignore[no-redef]

__all__ = ["aws_env", "moto_endpoint"]  # fixtures re-exported for pytest

BUCKET = "landing-staging"


@pytest.fixture
def s3(moto_endpoint: str) -> Iterator[Any]:
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=o["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def svc(tmp_path: Path, moto_endpoint: str) -> Services:
    cfg = PipelineConfig.model_validate({
        "storage": {"root": str(tmp_path / "assets")}, "catalog": {"url": str(tmp_path / "catalog")},
        "work_dir": str(tmp_path / "work"),
        "inputs": [{"prefix": f"s3://{BUCKET}", "endpoint_url": moto_endpoint, "region": "us-east-1"}],
    })  # fmt: skip
    return Services.from_config(cfg)


def _gets(svc: Services) -> list[dict[str, Any]]:
    """GetObject requests the landing bucket's client really sends (recorded by botocore's event hooks)."""
    seen: list[dict[str, Any]] = []
    client = svc.store_for(f"s3://{BUCKET}/x").client  # type: ignore[attr-defined]
    client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: seen.append(dict(params))
    )
    return seen


def _upload(s3: Any, directory: Path, prefix: str = "raw") -> dict[str, Path]:
    files = {p.name: p for p in sorted(directory.iterdir()) if p.is_file()}
    for name, p in files.items():
        s3.upload_file(str(p), BUCKET, f"{prefix}/{name}")  # a plain upload: no sha256 metadata
    return files


def _left(svc: Services) -> list[Path]:
    return sorted(p for p in svc.work_dir.rglob("*") if p.is_file())


def test_index_reads_headers_only_and_a_same_size_reupload_is_a_new_input(
    tmp_path: Path, s3: Any, svc: Services
) -> None:
    hdr = synthesize(tmp_path / "scene", source="aviris-ng", level="l2", width=32, height=48, seed=3)
    data = hdr.with_suffix("")
    _upload(s3, hdr.parent)
    href = f"s3://{BUCKET}/raw/{data.name}"
    gets = _gets(svc)

    raw1 = act.index_scene(svc, href)
    assert {g["Key"] for g in gets} == {f"raw/{hdr.name}"}  # the header; never the 2.6 MB data object
    assert _left(svc) == []  # no staging copy outlives the index
    asset = raw1.assets["data"]
    assert asset.href == href and asset.extra_fields["file:size"] == data.stat().st_size
    assert asset.extra_fields["hsi:etag"] == s3.head_object(Bucket=BUCKET, Key=f"raw/{data.name}")["ETag"]
    assert raw1.assets["header"].extra_fields["file:checksum"] == file_checksum(hdr)
    key1, _ = act.activation_key(svc, raw1, CogProfile())

    # the run's private staging copy: the bytes the item describes
    stage = svc.scratch_dir("activate-test")
    entry = act.fetch_raw(svc, raw1, stage)
    assert file_checksum(stage / data.name) == file_checksum(data) and entry == stage / hdr.name

    # a corrected scene, same size, same key
    cube = np.fromfile(data, dtype="<f4")
    cube[:1000] += 0.01
    corrected = tmp_path / "corrected"
    cube.tofile(corrected)
    assert corrected.stat().st_size == data.stat().st_size
    s3.upload_file(str(corrected), BUCKET, f"raw/{data.name}")

    raw2 = act.index_scene(svc, href)
    assert raw2.assets["data"].extra_fields["hsi:etag"] != asset.extra_fields["hsi:etag"]
    key2, _ = act.activation_key(svc, raw2, CogProfile())
    assert key2 != key1  # the activated item is stale: it will be recomputed, not reported up to date

    # the old copy in the staging directory has the same size but another identity: not reused
    act.fetch_raw(svc, raw2, stage)
    assert file_checksum(stage / data.name) == file_checksum(corrected)
    # an item that describes the old object cannot fetch other bytes under its name
    with pytest.raises(StorageError, match="changed since it was indexed"):
        act.fetch_raw(svc, raw1, svc.scratch_dir("activate-stale"))


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_index_of_an_s3_archive_reads_only_its_headers(
    tmp_path: Path, s3: Any, svc: Services, fmt: str
) -> None:
    arc = synthesize(tmp_path / "in", source="aviris-classic", level="l1b", width=48, height=64, seed=9,
                     archive=fmt)  # fmt: skip
    s3.upload_file(str(arc), BUCKET, f"raw/{arc.name}")
    href = f"s3://{BUCKET}/raw/{arc.name}"
    gets = _gets(svc)
    raw = act.index_scene(svc, href)
    # the archive holds scene 1 of the flight line (..rdn_e_sc01_ort_img): the item is that scene's
    assert raw.id == f"aviris-classic-{arc.name.split('.')[0]}-sc01" and raw.assets["archive"].href == href
    assert raw.assets["archive"].extra_fields["file:size"] == arc.stat().st_size
    assert raw.geometry is not None and raw.properties["hsi:level"] == "l1b"  # read from the header
    assert _left(svc) == []  # nothing was extracted to stay
    if fmt == "tar.gz":
        assert len(gets) == 1 and "Range" not in gets[0]  # one streaming read, no extraction of pixels
    else:
        ranged = [
            int(g["Range"].split("-")[1]) - int(g["Range"].split("=")[1].split("-")[0]) + 1 for g in gets
        ]
        assert all("Range" in g for g in gets) and sum(ranged) < arc.stat().st_size / 4
    assert raw.assets["archive"].extra_fields["hsi:etag"]  # the identity a later fetch is pinned to


@pytest.mark.usefixtures("prefect_harness")
def test_activation_of_an_s3_scene_stages_privately_and_leaves_nothing(
    tmp_path: Path, s3: Any, svc: Services, moto_endpoint: str
) -> None:
    """The activation flow (new-scene path: index inline, then activate) downloads the raw object once,
    into its own scratch directory, and removes it when the run ends; a rerun skips."""
    import yaml

    from hsi_pipeline.flows.activate import activate_scene

    hdr = synthesize(tmp_path / "scene", source="aviris-ng", level="l2", width=24, height=32, seed=8)
    _upload(s3, hdr.parent)
    href = f"s3://{BUCKET}/raw/{hdr.with_suffix('').name}"
    cfg = tmp_path / "hsi.yaml"
    cfg.write_text(yaml.safe_dump(svc.config.model_dump(mode="json", exclude_defaults=True)))
    res = activate_scene(uri=href, config=str(cfg))
    assert res["status"] == "activated"
    item = svc.catalog.get_item("aviris-ng-l2", res["item_id"])
    assert item is not None and item.properties["hsi:inputs"][0]["checksums"]["data"].startswith("size:")
    assert _left(svc) == []  # the staging copy went with the run
    assert activate_scene(uri=href, config=str(cfg))["status"] == "skipped"


def test_index_of_an_s3_emit_granule_and_activation_stages_its_companion(
    tmp_path: Path, s3: Any, svc: Services
) -> None:
    """EMIT from S3: netCDF4 metadata cannot be read from a placeholder, so indexing reads the
    granule's metadata by ranged GETs (only of it); its OBS companion is found by name (never a GET,
    no other EMIT_* key touched) and recorded as an asset, and activation's fetch stages the
    companion next to the granule."""
    from hsi.sources.emit import companion_names
    from hsi.sources.emit_synth import synthesize_emit

    nc = synthesize_emit(tmp_path / "emit", level="l1b", crosstrack=20, downtrack=24, seed=4)
    other = synthesize_emit(tmp_path / "other", level="l2a", crosstrack=8, downtrack=8, seed=9)
    (obs_name,) = companion_names(nc.name)
    _upload(s3, nc.parent)
    _upload(s3, other.parent)  # another acquisition under the same prefix: not this scene's sibling
    heads: list[str] = []
    client = svc.store_for(f"s3://{BUCKET}/x").client  # type: ignore[attr-defined]
    client.meta.events.register(
        "provide-client-params.s3.HeadObject", lambda params, **_: heads.append(params["Key"])
    )
    gets = _gets(svc)

    raw = act.index_scene(svc, f"s3://{BUCKET}/raw/{nc.name}")
    assert {g["Key"] for g in gets} == {f"raw/{nc.name}"}  # the granule; never the companion
    assert all("Range" in g and g["IfMatch"] for g in gets)  # ranged reads pinned to its ETag
    assert f"raw/{obs_name}" in heads  # the companion: a HEAD for its identity
    assert not any(other.stem in k or "MASK" in k for k in heads)  # the other granule is not looked at
    assert _left(svc) == []
    assert (raw.collection_id, raw.properties["hsi:level"]) == ("emit-raw", "l1b")
    assert set(raw.assets) == {"data", "obs"}
    obs = raw.assets["obs"]
    assert obs.href == f"s3://{BUCKET}/raw/{obs_name}" and obs.media_type == "application/x-netcdf"
    assert obs.extra_fields["file:size"] == (nc.parent / obs_name).stat().st_size
    assert obs.extra_fields["hsi:etag"] == s3.head_object(Bucket=BUCKET, Key=f"raw/{obs_name}")["ETag"]
    # no checksum was computed from the companion's sparse placeholder
    assert "file:checksum" not in obs.extra_fields or obs.extra_fields["file:checksum"] == file_checksum(
        nc.parent / obs_name
    )

    stage = svc.scratch_dir("activate-emit")
    entry = act.fetch_raw(svc, raw, stage)
    assert entry == stage / nc.name and file_checksum(entry) == file_checksum(nc)
    assert file_checksum(stage / obs_name) == file_checksum(nc.parent / obs_name)
    conv = act.convert(entry, stage / "cog", profile=CogProfile(), work_dir=stage / "extract")
    assert conv.meta.glt is not None and "obs" in conv.files  # orthorectified with its OBS companion
    with rasterio.open(conv.files["obs"]) as ds:
        assert ds.count == 11 and (ds.width, ds.height) == (conv.cog.width, conv.cog.height)


def _comparable(item: Any) -> dict[str, Any]:
    """A raw item without what differs by where it was read: asset hrefs (kept by file name), the
    remote identity fields, and the time of indexing."""
    d = item.to_dict()
    for a in d["assets"].values():
        a["href"] = a["href"].rsplit("/", 1)[-1]
        for k in ("hsi:etag", "hsi:version_id", "hsi:mtime_ns"):  # S3's identity / a local file's
            a.pop(k, None)
    for k in ("created", "updated"):
        d["properties"].pop(k, None)
    d.pop("links", None)
    return dict(d)


def test_index_of_an_s3_emit_granule_reads_its_metadata_by_ranged_gets_only(
    tmp_path: Path, s3: Any, svc: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """An s3:// EMIT granule (24 MB, its pixels dominate) is indexed from a few ranged GETs of its
    metadata: the raw item is the one indexed from the same granule on local disk (ids, properties,
    bands, assets, geometry), and the bytes the S3 server sent are a small share of the object."""
    from hsi.sources.emit import companion_names
    from hsi.sources.emit_synth import synthesize_emit

    nc = synthesize_emit(tmp_path / "emit", level="l2a", crosstrack=128, downtrack=160, seed=5)
    (mask_name,) = companion_names(nc.name)
    size = nc.stat().st_size
    assert size > 20 << 20
    store = svc.store_for(f"s3://{BUCKET}/x")
    for p in (nc, nc.parent / mask_name):  # with the sha256 metadata, as our store writes objects
        store.put_file(p, f"s3://{BUCKET}/emit/{p.name}")
    local = act.index_scene(svc, str(nc))

    gets = _gets(svc)
    received: list[int] = []  # Content-Length of every GetObject response the client received
    client = store.client  # type: ignore[attr-defined]
    client.meta.events.register(
        "after-call.s3.GetObject",
        lambda parsed=None, **_: received.append(int((parsed or {}).get("ContentLength") or 0)),
    )
    with caplog.at_level(logging.INFO, logger="hsi.staging"):
        remote = act.index_scene(svc, f"s3://{BUCKET}/emit/{nc.name}")

    assert {g["Key"] for g in gets} == {f"emit/{nc.name}"}  # the granule only; the MASK is a HEAD
    assert all(g["Range"].startswith("bytes=") and g["IfMatch"] for g in gets)
    assert len(received) == len(gets) <= 8
    assert sum(received) < size / 10, f"{sum(received)} of {size} bytes read"
    assert f"{len(gets)} ranged GETs, {sum(received)} of {size} bytes" in caplog.text  # the log agrees
    assert _left(svc) == []
    assert _comparable(remote) == _comparable(local)
    assert remote.assets["data"].href == f"s3://{BUCKET}/emit/{nc.name}"
    assert remote.assets["mask"].href == f"s3://{BUCKET}/emit/{mask_name}"
    assert remote.assets["data"].extra_fields["file:checksum"] == file_checksum(nc)
    bands = remote.assets["data"].extra_fields["bands"]  # compared above; here: really read
    assert len(bands) == 285 and bands == local.assets["data"].extra_fields["bands"]
    assert remote.properties["hsi:bad_bands"]
    assert remote.properties["datetime"] == local.properties["datetime"]
    assert remote.geometry == local.geometry and remote.bbox == local.bbox


def test_index_of_an_s3_emit_granule_that_is_not_one_names_the_object(
    tmp_path: Path, s3: Any, svc: Services
) -> None:
    """A corrupt granule fails with the object's name (not the scratch placeholder's), after a GET
    of its first block only; nothing stays on disk."""
    name = "EMIT_L2A_RFL_001_20220903T163129_2224611_012.nc"
    bad = tmp_path / name
    bad.write_bytes(b"not HDF5" * 200_000)
    s3.upload_file(str(bad), BUCKET, f"bad/{name}")
    gets = _gets(svc)
    with pytest.raises(UnsupportedSourceError, match=f"s3://{BUCKET}/bad") as exc:
        act.index_scene(svc, f"s3://{BUCKET}/bad/{name}")
    assert str(svc.work_dir) not in str(exc.value)
    assert len(gets) == 1 and gets[0]["Range"] == f"bytes=0-{(256 << 10) - 1}"
    assert _left(svc) == []


def test_an_s3_emit_granule_replaced_while_it_is_indexed_is_refused(
    tmp_path: Path, s3: Any, svc: Services
) -> None:
    """The ranged GETs are pinned to the ETag of the object indexed: a granule replaced between two
    of them is refused as a storage error (not read as a mix, nor reported as a corrupt granule)."""
    from hsi.sources.emit_synth import synthesize_emit

    size = {"level": "l1b", "crosstrack": 96, "downtrack": 128, "companions": False}
    nc = synthesize_emit(tmp_path / "a", seed=1, **size)  # type: ignore[arg-type]
    other = synthesize_emit(tmp_path / "b", seed=2, **size)  # type: ignore[arg-type]
    s3.upload_file(str(nc), BUCKET, f"swap/{nc.name}")
    client = svc.store_for(f"s3://{BUCKET}/x").client  # type: ignore[attr-defined]
    swapped: list[bool] = []

    def swap(**_: Any) -> None:
        if not swapped:
            swapped.append(True)
            s3.upload_file(str(other), BUCKET, f"swap/{nc.name}")

    client.meta.events.register("after-call.s3.GetObject", swap)
    with pytest.raises(StorageError, match="changed while it was read"):
        act.index_scene(svc, f"s3://{BUCKET}/swap/{nc.name}")
    assert swapped and _left(svc) == []
