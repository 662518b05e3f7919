"""EMIT granules: our reader (xarray + h5netcdf) against an independent reader written here from the
EMIT product specification (h5py on the netCDF4/HDF5 groups and variables), and the synthetic
granules' format (names, dims, groups, attributes, companions)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from hsi.activation import convert
from hsi.errors import UnsupportedSourceError
from hsi.sources import detect_source, read_scene
from hsi.sources.emit import MASK_BANDS, OBS_BANDS, EmitSource, parse_emit_name, read_companion
from hsi.sources.emit_synth import synthesize_emit
from hsi_pipeline.cli.main import app

NAME = "EMIT_L2A_RFL_001_20220903T163129_2224611_012"


@pytest.fixture(scope="module")
def granules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("emit")
    return {
        "l2a": synthesize_emit(d / "l2a", level="l2a", crosstrack=40, downtrack=56, seed=0),
        "l1b": synthesize_emit(d / "l1b", level="l1b", crosstrack=40, downtrack=56, seed=0),
    }


def _spec_read(path: Path) -> dict[str, object]:
    """Independent EMIT reader: the product user guide's variables, read with h5py."""
    with h5py.File(path, "r") as f:
        var = "reflectance" if "reflectance" in f else "radiance"
        sbp = f["sensor_band_parameters"]
        return {
            "var": var,
            "cube": f[var][...],
            "fill": float(np.asarray(f[var].attrs["_FillValue"]).ravel()[0]),
            "wavelengths": sbp["wavelengths"][...],
            "fwhm": sbp["fwhm"][...],
            "good": sbp["good_wavelengths"][...] if "good_wavelengths" in sbp else None,
            "glt_x": f["location/glt_x"][...],
            "glt_y": f["location/glt_y"][...],
            "lat": f["location/lat"][...],
            "geotransform": tuple(float(v) for v in f.attrs["geotransform"]),
            "spatial_ref": f.attrs["spatial_ref"],
            "dims": {k: len(f[k]) for k in ("downtrack", "crosstrack", "bands", "ortho_y", "ortho_x")},
        }


def test_names_ids_levels_and_detection(granules: dict[str, Path]) -> None:
    rfl, rad = granules["l2a"], granules["l1b"]
    assert rfl.name == NAME + ".nc"
    assert detect_source(rfl).name == "emit" and detect_source(rfl.parent).name == "emit"
    m = read_scene(rfl)
    assert (m.scene_id, m.item_id, m.level, m.quantity) == (NAME, f"emit-{NAME}", "l2a", "reflectance")
    assert (m.raw_collection, m.activated_collection, m.geometry) == ("emit-raw", "emit-l2a", "sensor")
    r = read_scene(rad)
    assert (r.level, r.quantity, r.units) == ("l1b", "radiance", "uW nm-1 cm-2 sr-1")
    assert Path(r.extra["obs"]).name == NAME.replace("L2A_RFL", "L1B_OBS") + ".nc"
    assert Path(m.extra["mask"]).name == NAME.replace("RFL", "MASK") + ".nc"
    assert parse_emit_name(NAME.replace("RFL", "MASK") + ".nc") is not None
    # companions travel with their cube, they are not scenes: read, they say so
    with pytest.raises(
        UnsupportedSourceError, match="OBS and MASK granules are read as companions of their cube"
    ):
        read_scene(Path(m.extra["mask"]))
    assert not EmitSource().matches(Path(m.extra["mask"]))  # a directory scan never lists them


def test_synthetic_granule_follows_the_specification(granules: dict[str, Path]) -> None:
    spec = _spec_read(granules["l2a"])
    assert (
        spec["dims"]["bands"] == 285 and spec["dims"]["crosstrack"] == 40 and spec["dims"]["downtrack"] == 56
    )
    assert spec["cube"].shape == (56, 40, 285) and spec["cube"].dtype == np.float32  # type: ignore[union-attr]
    assert spec["fill"] == -9999.0
    wl = spec["wavelengths"]
    assert wl[0] == np.float32(381.00558) and wl[-1] == np.float32(2492.9238)  # type: ignore[index]
    assert "WGS 84" in str(spec["spatial_ref"])
    gx = spec["glt_x"]
    assert gx.dtype.kind == "i" and gx.min() == 0 and gx.max() <= 40  # type: ignore[union-attr]
    # every sensor pixel lands somewhere, and a GLT that is not a plain rotation (wobble)
    assert np.unique(spec["glt_y"][spec["glt_y"] > 0]).size == 56  # type: ignore[index]


def test_our_reader_equals_the_specification_reader(granules: dict[str, Path]) -> None:
    for path in granules.values():
        spec = _spec_read(path)
        m = read_scene(path)
        assert [b.center_wavelength for b in m.bands] == [float(w) for w in spec["wavelengths"]]  # type: ignore[union-attr]
        assert [b.fwhm for b in m.bands] == [float(w) for w in spec["fwhm"]]  # type: ignore[union-attr]
        if spec["good"] is not None:
            assert [b.good for b in m.bands] == [bool(g) for g in spec["good"]]  # type: ignore[union-attr]
        gt = spec["geotransform"]
        assert m.glt is not None and m.glt.transform == (gt[1], gt[2], gt[0], gt[4], gt[5], gt[3])  # type: ignore[index]
        assert (m.glt.height, m.glt.width) == spec["glt_x"].shape  # type: ignore[union-attr]
        assert m.nodata == spec["fill"]


@pytest.mark.parametrize("level", ["l2a", "l1b"])
def test_activation_orthorectifies_cube_and_companion(
    granules: dict[str, Path], tmp_path: Path, level: str
) -> None:
    path = granules[level]
    conv = convert(path, tmp_path / "out")
    kind = "mask" if level == "l2a" else "obs"
    assert set(conv.files) == {"cube", "rgb", "thumbnail", kind}
    spec = _spec_read(path)
    gx, gy = spec["glt_x"], spec["glt_y"]
    valid = gx != 0  # type: ignore[operator]

    def ortho(cube: np.ndarray, fill: float) -> np.ndarray:  # independent GLT application
        out = np.full((cube.shape[2], *gx.shape), fill, dtype=cube.dtype)  # type: ignore[union-attr]
        out[:, valid] = cube[gy[valid] - 1, gx[valid] - 1, :].T  # type: ignore[index]
        return out

    with rasterio.open(conv.files["cube"]) as ds:
        assert int((ds.read() != ortho(spec["cube"], spec["fill"])).sum()) == 0  # type: ignore[arg-type]
    with h5py.File(Path(conv.meta.extra[kind]), "r") as f:
        comp = f[kind][...]
        names = [
            n.decode() if isinstance(n, bytes) else n
            for n in f[
                f"sensor_band_parameters/{kind}_bands"
                if kind == "mask"
                else "sensor_band_parameters/observation_bands"
            ][...]
        ]
    assert tuple(names) == (MASK_BANDS if kind == "mask" else OBS_BANDS)
    with rasterio.open(conv.files[kind]) as ds:
        assert int((ds.read() != ortho(comp, -9999.0)).sum()) == 0
        assert ds.descriptions[0].endswith(names[0])
    meta = read_companion(Path(conv.meta.extra[kind]), kind)
    assert [b.label for b in meta.bands] == names


def test_cli_synth_emit(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["synth", str(tmp_path), "--source", "emit", "--level", "l1b", "--width", "12", "--height", "20"]
    )
    assert res.exit_code == 0, res.output
    out = Path(res.output.strip().splitlines()[-1])
    assert out.name.startswith("EMIT_L1B_RAD_001_") and out.exists()
    assert (tmp_path / out.name.replace("_RAD_", "_OBS_")).exists()
    bad = CliRunner().invoke(app, ["synth", str(tmp_path), "--source", "emit", "--level", "l2"])
    assert bad.exit_code == 0  # l2 means l2a for EMIT
