"""AVIRIS-NG sidecars (GLT, IGM, LOC, OBS, OBS_ORT): found for single files and archives, GLT
conventions checked independently (OBS_ORT = OBS through the sign-coded GLT), our GLT path renders
the raw OBS exactly as the delivered OBS_ORT, and activation registers them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsi.activation import convert
from hsi.cog import write_cog
from hsi.glt import attach_glt, glt_from_envi
from hsi.sources import read_scene
from hsi.sources.ng_sidecars import SIDECAR_KINDS, read_aux
from hsi.sources.synthetic import synthesize


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ngsc")
    return synthesize(
        d, source="aviris-ng", level="l1b", width=40, height=52, rotation_deg=30, seed=8, sidecars=True
    )


def _envi(path: Path, bands: int, dtype: str, lines: int, samples: int) -> np.ndarray:
    return np.fromfile(path, dtype=dtype).reshape(lines, samples, bands)  # BIP


def test_sidecars_found_single_files_and_archive(scene: Path, tmp_path: Path) -> None:
    meta = read_scene(scene)
    assert {k for k in meta.extra if k.startswith("sidecar_")} == {f"sidecar_{k}" for k in SIDECAR_KINDS}
    arc = synthesize(
        tmp_path, source="aviris-ng", level="l1b", width=20, height=24, seed=8, sidecars=True, archive=True
    )
    m2 = read_scene(arc, work_dir=tmp_path / "x")
    assert {k for k in m2.extra if k.startswith("sidecar_")} == {f"sidecar_{k}" for k in SIDECAR_KINDS}


def test_obs_ort_is_obs_through_the_sign_coded_glt(scene: Path) -> None:
    meta = read_scene(scene)
    h, w = meta.layout.height, meta.layout.width
    glt = _envi(Path(meta.extra["sidecar_glt"]), 2, "<i4", h, w)
    obs = _envi(Path(meta.extra["sidecar_obs"]), 11, "<f8", h, w)
    ort = _envi(Path(meta.extra["sidecar_obs_ort"]), 11, "<f8", h, w)
    gx, gy = glt[..., 0], glt[..., 1]
    assert (gx < 0).any() and (gx > 0).any() and (gx == 0).any()
    valid = gx != 0
    assert np.array_equal(ort[valid], obs[np.abs(gy[valid]) - 1, np.abs(gx[valid]) - 1])
    assert (ort[~valid] == -9999).all()


def test_glt_path_renders_raw_obs_exactly_as_obs_ort(scene: Path, tmp_path: Path) -> None:
    meta = read_scene(scene)
    raw_obs = read_aux(
        Path(meta.extra["sidecar_obs"]), source="aviris-ng", scene_id=meta.scene_id, quantity="obs"
    )
    ortho_obs = read_aux(
        Path(meta.extra["sidecar_obs_ort"]), source="aviris-ng", scene_id=meta.scene_id, quantity="obs"
    )
    via_glt = attach_glt(raw_obs, glt_from_envi(Path(meta.extra["sidecar_glt"])))
    write_cog(via_glt, tmp_path / "a.tif")  # raw OBS -> GLT (rotated grid) -> north-up
    write_cog(ortho_obs, tmp_path / "b.tif")  # delivered OBS_ORT (rotated grid) -> north-up
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert a.transform == b.transform and a.shape == b.shape
        assert int((a.read() != b.read()).sum()) == 0


def test_activation_registers_sidecars_and_obs_on_the_cube_grid(scene: Path, tmp_path: Path) -> None:
    conv = convert(scene, tmp_path / "out")
    assert {"glt", "igm", "loc", "obs_raw", "obs_ort", "glt_header", "obs"} <= set(conv.files)
    assert any("GLT checked against the ortho image" in n for n in conv.notes)
    with rasterio.open(conv.files["cube"]) as c, rasterio.open(conv.files["obs"]) as o:
        assert (c.transform, c.shape) == (o.transform, o.shape) and o.count == 11
        assert o.descriptions[4].endswith("To-sun zenith (0 to 90 degrees from zenith)")


@pytest.mark.parametrize(
    ("names", "kinds"),
    [  # the v1 (2014) to v2z1 (2021) READMEs: a short token, or none, before the kind
        (("ort_glt", "ort_igm", "obs_ort", "obs", "loc"), {"glt", "igm", "obs_ort", "obs", "loc"}),
        (("rdn_v2p9_glt", "rdn_v2p9_obs_ort"), {"glt", "obs_ort"}),
    ],
)
def test_sidecars_of_every_naming_generation_are_found(scene: Path, tmp_path: Path, names, kinds) -> None:
    """The synthetic scene's sidecars renamed to each generation's scheme, the image kept."""
    src = read_scene(scene)
    d = tmp_path / "renamed"
    d.mkdir()
    stem = src.scene_id
    img = d / f"{stem}_rdn_v2p9_img"
    img.symlink_to(src.layout.data_path)
    (d / f"{img.name}.hdr").symlink_to(src.layout.header_path)
    by_kind = {k.removeprefix("sidecar_"): Path(v) for k, v in src.extra.items() if k.startswith("sidecar_")}
    for n in names:
        kind = next(k for k in sorted(by_kind, key=len, reverse=True) if n.endswith(k))
        (d / f"{stem}_{n}").symlink_to(by_kind[kind])
        (d / f"{stem}_{n}.hdr").symlink_to(by_kind[kind].with_name(by_kind[kind].name + ".hdr"))
    meta = read_scene(img)
    assert {k.removeprefix("sidecar_") for k in meta.extra if k.startswith("sidecar_")} == kinds
