"""Source registry, AVIRIS-NG / AVIRIS-Classic naming and sidecars, directories and archives."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from hsi.errors import HeaderError, UnsupportedSourceError
from hsi.scene import SceneMetadata
from hsi.sources import Source, detect_source, extract, get_source, list_sources, read_scene
from hsi.sources.archive import ArchiveLimits, extract_headers
from hsi.sources.aviris_classic import parse_classic_name
from hsi.sources.aviris_ng import parse_ng_name
from hsi.sources.envi import format_header
from hsi.sources.synthetic import synthesize

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def small_envi(
    directory: Path,
    name: str,
    *,
    bands: int = 4,
    dtype: str = "<f4",
    data_type: int = 4,
    interleave: str = "bil",
    byte_order: int = 0,
    wavelength: bool = True,
    fwhm: bool = True,
    extra: dict[str, object] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(np.zeros((3, bands, 2), dtype=dtype).tobytes())
    fields: dict[str, object] = {
        "samples": 2,
        "lines": 3,
        "bands": bands,
        "header offset": 0,
        "data type": data_type,
        "interleave": interleave,
        "byte order": byte_order,
    }
    if wavelength:
        fields["wavelength"] = [400.0 + 50 * i for i in range(bands)]
    if fwhm:
        fields["fwhm"] = [9.0] * bands
    fields.update(extra or {})
    hdr = directory / f"{name}.hdr"
    hdr.write_text(format_header(fields))
    return hdr


def test_registry_order_and_protocol():
    assert list_sources()[:4] == ["emit", "aviris-ng", "aviris-classic", "envi"]
    for name in list_sources():
        src = get_source(name)
        assert isinstance(src, Source) and src.name == name
    with pytest.raises(UnsupportedSourceError, match="nope"):
        get_source("nope")


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("ang20150420t182050_rdn_v1e_img.hdr", "aviris-ng"),
        ("ang20150420t182050_rfl_v2p9_img", "aviris-ng"),
        ("ang20150420t182050.tar.gz", "aviris-ng"),
        ("ang20150420t182050_rfl_v2p9.tar.gz", "aviris-ng"),
        ("f130329t01p00r06rdn_e_sc01_ort_img", "aviris-classic"),
        ("f130329t01p00r06_refl.tar.gz", "aviris-classic"),
        ("f130329t01p00r06.zip", "aviris-classic"),
        ("whatever.hdr", "envi"),
        ("scene.tgz", "envi"),
    ],
)
def test_detect_source_by_name(tmp_path, name, source):
    assert detect_source(tmp_path / name).name == source


def test_detect_source_refuses_unknown(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("x")
    with pytest.raises(UnsupportedSourceError, match="notes.txt"):
        detect_source(p)


def test_name_parsers():
    assert parse_ng_name("ang20150420t182050_rdn_v1e_img") == (
        "ang20150420t182050",
        datetime(2015, 4, 20, 18, 20, 50, tzinfo=UTC),
        "rdn",
    )
    assert parse_ng_name("ang20150420t182050.tar.gz")[2] is None
    assert parse_ng_name("ang20151340t182050_rdn") is None  # month 13
    assert parse_classic_name("f130329t01p00r06rdn_e_sc01_ort_img") == (
        "f130329t01p00r06",
        datetime(2013, 3, 29, tzinfo=UTC),
    )
    assert parse_classic_name("f920530t01p02r02")[1].year == 1992


@pytest.mark.parametrize(
    ("tag", "level", "quantity", "units"),
    [
        ("rdn_v1e", "l1b", "radiance", "uW nm-1 cm-2 sr-1"),
        ("rfl_v2p9", "l2", "reflectance", None),
        ("corr_v1f", "l2", "reflectance", None),
    ],
)
def test_aviris_ng_products(tmp_path, tag, level, quantity, units):
    hdr = small_envi(tmp_path, f"ang20150420t182050_{tag}_img")
    meta = read_scene(hdr)
    assert meta.source == "aviris-ng" and meta.sensor == "AVIRIS-NG"
    assert meta.scene_id == "ang20150420t182050"
    assert meta.datetime == datetime(2015, 4, 20, 18, 20, 50, tzinfo=UTC)
    assert (meta.level, meta.quantity, meta.units) == (level, quantity, units)
    assert meta.nodata == (-9999 if quantity == "reflectance" else None)
    assert meta.activated_collection == f"aviris-ng-{level}"


@pytest.mark.parametrize(
    ("name", "level"),
    [  # 2023 on (BioSCape): the product code is a later token, the processing level another
        ("ang20231109t092617_027_L2A_OE_main_27577724_RFL_ORT", "l2"),
        ("ang20231109t092617_027_L1B_ORT_main_27577724_RDN_ORT", "l1b"),
    ],
)
def test_aviris_ng_names_of_2023_on(tmp_path, name, level):
    meta = read_scene(small_envi(tmp_path, name))  # the header names no quantity
    assert (meta.scene_id, meta.level) == ("ang20231109t092617", level)


@pytest.mark.parametrize(
    "name",
    ["ang20150420t182050_rdn_v1e_glt", "ang20150420t182050_ort_igm", "ang20150420t182050_obs_ort",
     "ang20231109t092617_027_L1B_ORT_main_27577724_GLT"],
)  # fmt: skip
def test_an_aviris_ng_sidecar_given_as_the_scene_says_what_it_is(tmp_path, name):
    hdr = small_envi(tmp_path, name, bands=3, wavelength=False, fwhm=False)
    with pytest.raises(HeaderError, match="an AVIRIS-NG sidecar .*, not an image: index the scene's image"):
        read_scene(hdr)


def test_upper_case_deliveries_are_found_with_their_sidecars(tmp_path):
    d = tmp_path / "ANG20150420T182050_RDN_V2P9"
    for side in ("GLT", "OBS_ORT"):
        small_envi(d, f"ANG20150420T182050_RDN_V2P9_{side}", bands=3, wavelength=False, fwhm=False)
    small_envi(d, "ANG20150420T182050_RDN_V2P9_IMG")
    for h in d.glob("*.hdr"):
        h.rename(h.with_suffix(".HDR"))
    assert detect_source(d).name == "aviris-ng"
    meta = read_scene(d)
    assert meta.layout.data_path.name == "ANG20150420T182050_RDN_V2P9_IMG" and meta.level == "l1b"
    assert {k for k in meta.extra if k.startswith("sidecar_")} == {"sidecar_glt", "sidecar_obs_ort"}


def test_aviris_ng_header_nodata_wins(tmp_path):
    hdr = small_envi(tmp_path, "ang20150420t182050_rfl_v2p9_img", extra={"data ignore value": -1})
    assert read_scene(hdr).nodata == -1


def test_aviris_ng_directory_skips_sidecars(tmp_path):
    d = tmp_path / "ang20150420t182050_rdn_v1e"
    for side in ("glt", "igm", "loc", "obs_ort", "h2o"):
        small_envi(
            d,
            f"ang20150420t182050_rdn_v1e_{side}",
            bands=3 if side != "h2o" else 60,
            wavelength=False,
            fwhm=False,
        )
    small_envi(d, "ang20150420t182050_rdn_v1e_img")
    meta = read_scene(d)
    assert meta.layout.data_path.name == "ang20150420t182050_rdn_v1e_img"
    assert meta.level == "l1b"


def test_detect_source_of_directory_by_content(tmp_path):
    synthesize(tmp_path / "some dir", source="aviris-classic", level="l2", width=3, height=2)
    assert detect_source(tmp_path / "some dir").name == "aviris-classic"
    small_envi(tmp_path / "other", "cube.img")
    assert detect_source(tmp_path / "other").name == "envi"


def test_aviris_classic_gain_and_spc(tmp_path):
    name = "f130329t01p00r06rdn_e_sc01_ort_img"
    hdr = small_envi(
        tmp_path, name, dtype=">i2", data_type=2, interleave="bip", byte_order=1, wavelength=False, fwhm=False
    )
    (tmp_path / "f130329t01p00r06rdn_e.gain").write_text("300.0 1\n600.0 2\n1200.0 3\n2400.0 4\n")
    # non-monotonic centres (overlapping spectrometers): kept in sensor order
    (tmp_path / "f130329t01p00r06rdn_e.spc").write_text(
        "696.5\t9.7\t1.1\t0.5\t1\n677.3\t8.9\t0.9\t0.5\t2\n686.9\t8.9\t0.9\t0.5\t3\n2400.0\t10\t1\t1\t4\n"
    )
    meta = read_scene(hdr)
    assert meta.source == "aviris-classic" and meta.scene_id == "f130329t01p00r06-sc01"  # scene 1 of the line
    assert meta.datetime == datetime(2013, 3, 29, tzinfo=UTC)
    assert meta.level == "l1b" and meta.units == "uW nm-1 cm-2 sr-1"
    assert (
        meta.layout.byte_order == "big" and meta.layout.interleave == "bip" and meta.layout.dtype == "int16"
    )
    assert meta.wavelengths == (696.5, 677.3, 686.9, 2400.0)
    assert [b.fwhm for b in meta.bands] == [9.7, 8.9, 8.9, 10.0]
    assert [b.scale for b in meta.bands] == pytest.approx([1 / 300, 1 / 600, 1 / 1200, 1 / 2400])
    assert [b.good for b in meta.bands] == [True, True, True, True]
    assert meta.extra["gain file"] == "f130329t01p00r06rdn_e.gain"


def test_aviris_classic_without_wavelengths_or_spc(tmp_path):
    hdr = small_envi(tmp_path, "f130329t01p00r06rdn_e_sc01_ort_img", wavelength=False)
    with pytest.raises(HeaderError, match="wavelength") as info:
        read_scene(hdr)
    assert info.value.field == "wavelength" and hdr.name in str(info.value)


def test_aviris_classic_bad_gain_file(tmp_path):
    hdr = small_envi(tmp_path, "f130329t01p00r06rdn_e_sc01_ort_img")
    (tmp_path / "f130329t01p00r06rdn_e.gain").write_text("300\n600\n")
    with pytest.raises(HeaderError, match=r"f130329t01p00r06rdn_e\.gain.*'gain'.*2 gains"):
        read_scene(hdr)


def test_aviris_classic_reflectance_int16_scale(tmp_path):
    hdr = small_envi(
        tmp_path, "f130329t01p00r06_refl_img", dtype=">i2", data_type=2, interleave="bip", byte_order=1
    )
    meta = read_scene(hdr)
    assert (meta.level, meta.quantity) == ("l2", "reflectance")
    assert meta.bands[0].scale == pytest.approx(1e-4)


def test_generic_ids_and_levels(tmp_path):
    meta = read_scene(small_envi(tmp_path, "My Scene (v2).img"))
    assert meta.source == "envi" and meta.scene_id == "my-scene-v2" and meta.level == "l1b"
    assert meta.datetime is None
    meta2 = read_scene(small_envi(tmp_path, "refl.img", extra={"description": "{Surface Reflectance}"}))
    assert meta2.level == "l2" and meta2.quantity == "reflectance"


# --- archives ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_read_archive(tmp_path, fmt):
    arc = synthesize(tmp_path / "in", source="aviris-ng", level="l2", width=8, height=6, seed=5, archive=fmt)
    assert arc.name == f"ang20240101t000500_rfl_v2p9.{fmt}"
    meta = read_scene(arc, work_dir=tmp_path / "work")
    assert isinstance(meta, SceneMetadata)
    assert meta.scene_id == "ang20240101t000500" and meta.level == "l2"
    assert (tmp_path / "work") in meta.layout.data_path.parents
    again = read_scene(arc, work_dir=tmp_path / "work")  # idempotent extraction
    assert again == meta


def test_archive_without_header(tmp_path):
    arc = tmp_path / "ang20150420t182050.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises((HeaderError, UnsupportedSourceError), match=arc.name):
        read_scene(arc, work_dir=tmp_path / "w")


@pytest.mark.parametrize("member", ["../evil.hdr", "/abs/evil.hdr", "a/../../evil.hdr"])
def test_tar_path_traversal_refused(tmp_path, member):
    arc = tmp_path / "bad.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"ENVI"))
    with pytest.raises(UnsupportedSourceError, match="bad.tar.gz"):
        extract(arc, tmp_path / "w")
    assert not (tmp_path / "evil.hdr").exists()


def test_tar_symlink_refused(tmp_path):
    arc = tmp_path / "link.tgz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo("x.hdr")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnsupportedSourceError, match="link"):
        extract(arc, tmp_path / "w")


def test_zip_path_traversal_refused(tmp_path):
    arc = tmp_path / "bad.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("../../evil.hdr", "ENVI")
    with pytest.raises(UnsupportedSourceError, match="bad.zip"):
        extract(arc, tmp_path / "w")


def test_classic_archive_with_sidecars(tmp_path):
    arc = synthesize(tmp_path, source="aviris-classic", level="l1b", width=5, height=4, seed=0, archive=True)
    assert arc.name == "f240101t01p00r01.tar.gz"
    meta = read_scene(arc, work_dir=tmp_path / "w")
    assert meta.source == "aviris-classic" and meta.extra["gain file"].endswith(".gain")
    shutil.rmtree(tmp_path / "w")


# --- bounded expansion (zip/tar bombs) and header-only reads -----------------------------------------

BOMB = 24 << 20  # zeros: ~1000x smaller compressed


def _tar_bomb(path: Path, members: dict[str, bytes | int]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, body in members.items():
            data = bytes(body) if isinstance(body, int) else body
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _zip_bomb(path: Path, members: dict[str, bytes | int]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, bytes(body) if isinstance(body, int) else body)
    return path


def _left(work: Path) -> list[Path]:
    return sorted(work.rglob("*")) if work.exists() else []


@pytest.mark.parametrize("make", [_tar_bomb, _zip_bomb], ids=["tar.gz", "zip"])
def test_expansion_ratio_bound_refuses_a_bomb_and_leaves_nothing(tmp_path, make):
    arc = make(tmp_path / f"ang20150420t182050_rfl.{'zip' if make is _zip_bomb else 'tar.gz'}",
               {"ang20150420t182050_rfl_img.hdr": b"ENVI\n", "ang20150420t182050_rfl_img": BOMB})  # fmt: skip
    assert BOMB / arc.stat().st_size > 200
    with pytest.raises(UnsupportedSourceError, match=rf"{arc.name}.*max_ratio"):
        read_scene(arc, work_dir=tmp_path / "work")
    assert _left(tmp_path / "work") == []
    # configurable: a looser ratio lets the same archive through to the size bound
    with pytest.raises(UnsupportedSourceError, match=rf"{arc.name}.*max_bytes"):
        extract(arc, tmp_path / "work", ArchiveLimits(max_ratio=None, max_bytes=BOMB - 1))
    assert _left(tmp_path / "work") == []


@pytest.mark.parametrize("make", [_tar_bomb, _zip_bomb], ids=["tar.gz", "zip"])
def test_member_count_bound(tmp_path, make):
    arc = make(
        tmp_path / f"many.{'zip' if make is _zip_bomb else 'tar.gz'}", {f"f{i}.txt": b"x" for i in range(6)}
    )
    with pytest.raises(UnsupportedSourceError, match=r"many\..*6 members.*max_members"):
        extract(arc, tmp_path / "work", ArchiveLimits(max_members=5))
    assert _left(tmp_path / "work") == []
    assert (extract(arc, tmp_path / "work", ArchiveLimits(max_members=6)) / "f5.txt").read_bytes() == b"x"


def test_archive_limits_come_from_the_configuration():
    from hsi.config import PipelineConfig

    cfg = PipelineConfig.model_validate({"archive_limits": {"max_ratio": 50, "max_bytes": None}})
    assert cfg.archive_limits.limits() == ArchiveLimits(max_bytes=None, max_ratio=50.0, max_members=10_000)


def test_failed_read_of_an_archive_without_header_leaves_no_extraction(tmp_path):
    arc = _tar_bomb(tmp_path / "ang20150420t182050.tar.gz", {"readme.txt": b"hi", "data/blob.bin": 1000})
    with pytest.raises((HeaderError, UnsupportedSourceError), match=arc.name):
        read_scene(arc, work_dir=tmp_path / "work")
    assert _left(tmp_path / "work") == []


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_extract_headers_writes_metadata_and_sparse_placeholders(tmp_path, fmt):
    arc = synthesize(
        tmp_path / "in", source="aviris-ng", level="l2", width=40, height=30, seed=5, archive=fmt
    )
    with open(arc, "rb") as f:
        stream = f if fmt == "zip" else io.BufferedReader(_Unseekable(f))  # a tar is read as a stream
        d = extract_headers(stream, tmp_path / "hdrs", name=arc.name, size=arc.stat().st_size)
    meta = read_scene(d, source="aviris-ng")
    full = read_scene(arc, work_dir=tmp_path / "full")
    assert meta.scene_id == full.scene_id and meta.layout.count == full.layout.count == 425
    assert meta.bands == full.bands and meta.transform == full.transform
    data = meta.layout.data_path
    assert data.stat().st_size == full.layout.data_path.stat().st_size > 1 << 20
    assert data.stat().st_blocks == 0  # not a byte of pixels written
    with pytest.raises(UnsupportedSourceError, match="already exists"):
        extract_headers(arc, tmp_path / "hdrs")


def test_extract_headers_applies_the_limits_and_leaves_nothing(tmp_path):
    arc = _tar_bomb(tmp_path / "x.tar.gz", {"x.hdr": b"ENVI\n", "x": BOMB})
    with pytest.raises(UnsupportedSourceError, match="x.tar.gz.*max_ratio"):
        extract_headers(arc, tmp_path / "hdrs")
    assert _left(tmp_path / "hdrs") == []


class _Unseekable(io.RawIOBase):
    def __init__(self, f):
        self._f = f

    def readable(self):
        return True

    def readinto(self, b):
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_indexing_a_local_archive_extracts_nothing_and_leaves_nothing(tmp_path, fmt):
    from hsi.activation import index_scene
    from hsi.config import PipelineConfig
    from hsi.services import Services
    from hsi.storage import file_checksum

    arc = synthesize(
        tmp_path / "in", source="aviris-ng", level="l2", width=16, height=12, seed=2, archive=fmt
    )
    svc = Services.from_config(PipelineConfig.model_validate({
        "storage": {"root": str(tmp_path / "assets")}, "catalog": {"url": str(tmp_path / "catalog")},
        "work_dir": str(tmp_path / "work")}))  # fmt: skip
    item = index_scene(svc, str(arc))
    assert item.id == "aviris-ng-ang20240101t000200" and item.geometry is not None
    assert item.assets["archive"].extra_fields["file:checksum"] == file_checksum(arc)
    assert [p for p in _left(tmp_path / "work") if p.is_file()] == []  # the old index kept a full extraction
