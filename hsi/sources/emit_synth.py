"""Synthetic EMIT granules in the exact EMIT V001 netCDF4 layout (written with h5netcdf).

``synthesize_emit(out_dir, level="l2a")`` writes ``EMIT_L2A_RFL_001_<time>_<orbit>_<scene>.nc`` and
its ``EMIT_L2A_MASK_...nc``; ``level="l1b"`` writes ``EMIT_L1B_RAD_...nc`` and ``EMIT_L1B_OBS_...nc``.
Layout per the EMIT product user guides: root dims ``downtrack`` x ``crosstrack`` x ``bands`` (285
real EMIT band centres, :file:`hsi/data/emit_bands.csv`), cube float32 ``_FillValue`` -9999;
``sensor_band_parameters`` (``wavelengths``, ``fwhm``, RFL ``good_wavelengths``; OBS
``observation_bands``; MASK ``mask_bands``); ``location`` (``lat``, ``lon``, ``elev`` per sensor pixel,
``glt_x``/``glt_y`` over ``ortho_y`` x ``ortho_x``, 1-based, 0 = none) and the global attributes
``geotransform`` (GDAL order, EPSG:4326) and ``spatial_ref``. The GLT comes from a plausible flight
line (:mod:`hsi.sources.flightline`: ISS-like heading, roll/pitch wobble).

The cube is written in line blocks (memory independent of the granule size); default size is a
full EMIT scene, 1242 cross-track x 1280 down-track. Same parameters and seed, same values.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import h5netcdf
import h5py
import numpy as np
from numpy.typing import NDArray

from hsi.errors import InvalidInputError
from hsi.sources.bad_bands import is_bad_default
from hsi.sources.emit import MASK_BANDS, OBS_BANDS
from hsi.sources.flightline import FlightLine, flight_line
from hsi.sources.spectra import at_sensor_radiance_factor, endmember_matrix
from hsi.sources.synthetic import SECONDARY_ENDMEMBER, SyntheticScene

__all__ = ["emit_band_table", "emit_granule_name", "synthesize_emit"]

FILL = -9999.0
_STR = h5py.string_dtype()  # variable-length UTF-8 strings, as netCDF4 writes them
_BLOCK_BYTES = 8 << 20
_LINE_SECONDS = 0.00862  # ~60 m along-track at ISS ground speed


def emit_band_table() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(wavelengths, fwhm) of EMIT's 285 bands, float32 as in the granules."""
    text = resources.files("hsi.data").joinpath("emit_bands.csv").read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    wl = np.array([float(r["center_nm"]) for r in rows], dtype=np.float32)
    fw = np.array([float(r["fwhm_nm"]) for r in rows], dtype=np.float32)
    return wl, fw


def emit_granule_name(product: str, when: datetime, orbit: int, scene: int, version: str = "001") -> str:
    level = "L1B" if product in ("RAD", "OBS") else "L2A"
    return f"EMIT_{level}_{product}_{version}_{when:%Y%m%dT%H%M%S}_{orbit:07d}_{scene:03d}"


def _solar_geometry(when: datetime, lon: float, lat: float) -> tuple[float, float, float]:
    """(zenith, azimuth, earth-sun distance AU) at the scene centre (pvlib SPA)."""
    import pandas as pd
    import pvlib

    t = pd.DatetimeIndex([when])
    pos = pvlib.solarposition.get_solarposition(t, lat, lon)
    d = pvlib.solarposition.nrel_earthsun_distance(t)
    return float(pos["apparent_zenith"].iloc[0]), float(pos["azimuth"].iloc[0]), float(np.asarray(d)[0])


def _common(f: h5netcdf.File, fl: FlightLine, lines: int, samples: int, when: datetime, title: str) -> None:
    h, w = fl.glt_x.shape
    f.dimensions = {"downtrack": lines, "crosstrack": samples, "ortho_y": h, "ortho_x": w}
    f.attrs["title"] = title
    f.attrs["summary"] = "Synthetic granule written by hsi-pipeline in the EMIT V001 layout"
    f.attrs["instrument"] = "EMIT"
    f.attrs["platform"] = "ISS"
    f.attrs["geotransform"] = np.asarray(fl.gdal_geotransform, dtype=np.float64)
    f.attrs["spatial_ref"] = fl.crs_wkt
    f.attrs["time_coverage_start"] = when.strftime("%Y-%m-%dT%H:%M:%S+0000")
    f.attrs["time_coverage_end"] = (when + timedelta(seconds=lines * _LINE_SECONDS)).strftime(
        "%Y-%m-%dT%H:%M:%S+0000"
    )
    f.attrs["northernmost_latitude"] = float(fl.y.max())
    f.attrs["southernmost_latitude"] = float(fl.y.min())
    f.attrs["easternmost_longitude"] = float(fl.x.max())
    f.attrs["westernmost_longitude"] = float(fl.x.min())
    loc = f.create_group("location")
    for name, arr, units in (("lat", fl.y, "degrees_north"), ("lon", fl.x, "degrees_east")):
        v = loc.create_variable(name, ("downtrack", "crosstrack"), "f8", data=arr, fillvalue=FILL)
        v.attrs["units"] = units
    elev = 1500.0 + 200.0 * np.sin(fl.x * 40.0) * np.cos(fl.y * 35.0)
    v = loc.create_variable("elev", ("downtrack", "crosstrack"), "f8", data=elev, fillvalue=FILL)
    v.attrs["units"] = "m"
    for name, glt in (("glt_x", fl.glt_x), ("glt_y", fl.glt_y)):
        v = loc.create_variable(name, ("ortho_y", "ortho_x"), "i4", data=glt, fillvalue=0)
        v.attrs["long_name"] = f"GLT {'sample' if name == 'glt_x' else 'line'} lookup (1-based, 0 = no data)"


def _cloud_field(lines: NDArray[np.float64], samples: NDArray[np.float64], seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed + 31)
    p = rng.random(4) * 2 * math.pi
    return (
        np.sin(lines / 37.0 + p[0]) * np.cos(samples / 41.0 + p[1])
        + 0.5 * np.sin((lines + samples) / 19.0 + p[2])
        + 0.3 * np.cos((lines - samples) / 13.0 + p[3])
    )


def synthesize_emit(
    out_dir: Path | str,
    *,
    level: Literal["l1b", "l2a"] = "l2a",
    crosstrack: int = 1242,
    downtrack: int = 1280,
    seed: int = 0,
    heading_deg: float = 38.0,
    centre: tuple[float, float] = (-112.5, 36.2),
    when: datetime | None = None,
    companions: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write one synthetic EMIT granule (+ its OBS or MASK companion); return the cube's path."""
    if level not in ("l1b", "l2a"):
        raise InvalidInputError(f"EMIT synthetic level must be 'l1b' or 'l2a', got {level!r}")
    if crosstrack <= 0 or downtrack <= 0:
        raise InvalidInputError(f"EMIT granule size must be positive, got {crosstrack}x{downtrack}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    when = when or datetime(2022, 9, 3, 16, 31, 29, tzinfo=UTC) + timedelta(minutes=97 * seed)
    orbit, scene_no = 2224611 + seed, 12
    wl, fw = emit_band_table()
    nb = len(wl)
    fl = flight_line(
        downtrack, crosstrack, heading_deg=heading_deg, geographic=True, centre=centre, seed=seed
    )
    sza, saz, dist = _solar_geometry(when, centre[0], centre[1])
    product = "RAD" if level == "l1b" else "RFL"
    stem = emit_granule_name(product, when, orbit, scene_no)
    path = out / f"{stem}.nc"
    rng = np.random.default_rng(seed)
    layout = SyntheticScene(crosstrack, downtrack, False, rng)
    em = endmember_matrix(wl.astype(np.float64))  # (6, nb)
    cloud_spec = np.clip(0.55 + 0.05 * np.sin(wl / 300.0), 0, 1).astype(np.float32)
    gain, path_rad = at_sensor_radiance_factor(wl.astype(np.float64), solar_zenith_deg=sza)
    good = np.array([0 if is_bad_default(float(w)) else 1 for w in wl], dtype=np.uint8)
    rows_per_block = max(1, _BLOCK_BYTES // max(1, crosstrack * nb * 4))
    part = path.with_name(path.name + ".part")
    mask_part = None
    mask_f: Any = None
    title = f"EMIT {'L1B At-Sensor Calibrated Radiance' if level == 'l1b' else 'L2A Estimated Surface Reflectance'} 60 m V001"
    with h5netcdf.File(part, "w") as f:
        _common(f, fl, downtrack, crosstrack, when, title)
        f.dimensions["bands"] = nb
        sbp = f.create_group("sensor_band_parameters")
        sbp.create_variable("wavelengths", ("bands",), "f4", data=wl).attrs["units"] = "nm"
        sbp.create_variable("fwhm", ("bands",), "f4", data=fw).attrs["units"] = "nm"
        if level == "l2a":
            sbp.create_variable("good_wavelengths", ("bands",), "u1", data=good)
        var_name = "radiance" if level == "l1b" else "reflectance"
        cube = f.create_variable(var_name, ("downtrack", "crosstrack", "bands"), "f4", fillvalue=FILL)
        cube.attrs["units"] = "uW/cm^2/SR/nm" if level == "l1b" else "unitless"
        if companions and level == "l2a":
            mask_part = out / (emit_granule_name("MASK", when, orbit, scene_no) + ".nc.part")
            mask_f = h5netcdf.File(mask_part, "w")
            _common(mask_f, fl, downtrack, crosstrack, when, "EMIT L2A Masks 60 m V001")
            mask_f.dimensions["bands"] = len(MASK_BANDS)
            msbp = mask_f.create_group("sensor_band_parameters")
            msbp.create_variable("mask_bands", ("bands",), _STR, data=np.array(MASK_BANDS, dtype=object))
            mvar = mask_f.create_variable("mask", ("downtrack", "crosstrack", "bands"), "f4", fillvalue=FILL)
        try:
            cols = np.arange(crosstrack, dtype=np.float64)[None, :]
            for r0 in range(0, downtrack, rows_per_block):
                r1 = min(downtrack, r0 + rows_per_block)
                cls, _ = layout.block(r0, r1)
                flat = cls.ravel()
                npx = flat.size
                frac = rng.uniform(0.78, 0.97, npx).astype(np.float32)
                frac[flat == 4] = 1.0
                bright = rng.uniform(0.9, 1.1, npx).astype(np.float32)
                ab = np.zeros((npx, em.shape[0]), dtype=np.float32)
                idx = np.arange(npx)
                ab[idx, SECONDARY_ENDMEMBER[flat]] = (1 - frac) * bright
                ab[idx, flat] = frac * bright
                refl = ab @ em
                cf = _cloud_field(np.arange(r0, r1, dtype=np.float64)[:, None], cols, seed)
                cloud = (cf > 1.25).ravel()
                refl[cloud] = cloud_spec
                refl += rng.normal(0, 0.002, refl.shape).astype(np.float32)
                if level == "l1b":
                    block = refl * gain.astype(np.float32) + path_rad.astype(np.float32)
                else:
                    block = refl
                    block[:, good == 0] = FILL  # EMIT L2A writes fill in the deep water bands
                cube[r0:r1, :, :] = block.reshape(r1 - r0, crosstrack, nb)
                if mask_f is not None:
                    m = np.zeros((npx, len(MASK_BANDS)), dtype=np.float32)
                    m[:, 0] = cloud
                    m[:, 1] = (cf < -1.35).ravel()  # thin cirrus somewhere else
                    m[:, 2] = np.isin(flat, (4, 5))
                    m[:, 4] = (cf > 1.05).ravel()  # dilated cloud
                    m[:, 5] = 0.08 + 0.02 * np.sin(idx / 500.0)
                    m[:, 6] = 1.2 + 0.3 * np.cos(idx / 700.0)
                    m[:, 7] = (m[:, 0] + m[:, 1] + m[:, 3] + m[:, 4]) > 0
                    mvar[r0:r1, :, :] = m.reshape(r1 - r0, crosstrack, len(MASK_BANDS))
                if progress is not None:
                    progress(r1, downtrack)
        finally:
            if mask_f is not None:
                mask_f.close()
    if companions and level == "l1b":
        _write_obs(out / (emit_granule_name("OBS", when, orbit, scene_no) + ".nc"), fl, when, sza, saz, dist)
    if mask_part is not None:
        mask_part.replace(mask_part.with_name(mask_part.name[: -len(".part")]))
    part.replace(path)
    return path


def _write_obs(path: Path, fl: FlightLine, when: datetime, sza: float, saz: float, dist: float) -> None:
    lines, samples = fl.x.shape
    part = path.with_name(path.name + ".part")
    with h5netcdf.File(part, "w") as f:
        _common(f, fl, lines, samples, when, "EMIT L1B Observation Data 60 m V001")
        f.dimensions["bands"] = len(OBS_BANDS)
        sbp = f.create_group("sensor_band_parameters")
        sbp.create_variable("observation_bands", ("bands",), _STR, data=np.array(OBS_BANDS, dtype=object))
        obs = f.create_variable("obs", ("downtrack", "crosstrack", "bands"), "f4", fillvalue=FILL)
        u = (np.arange(samples) - (samples - 1) / 2) / max(1.0, (samples - 1) / 2)
        view_zen = np.abs(u) * 5.5
        hours = when.hour + when.minute / 60 + when.second / 3600
        for r0 in range(0, lines, 256):
            r1 = min(lines, r0 + 256)
            ln = np.arange(r0, r1, dtype=np.float64)[:, None]
            o = np.zeros((r1 - r0, samples, len(OBS_BANDS)), dtype=np.float32)
            o[..., 0] = 408000.0 / np.cos(np.radians(view_zen))[None, :]
            o[..., 1] = np.where(u < 0, (fl.heading_deg - 90) % 360, (fl.heading_deg + 90) % 360)[None, :]
            o[..., 2] = view_zen[None, :]
            o[..., 3] = saz + 0.002 * ln
            o[..., 4] = sza + 0.6 * u[None, :] + 0.001 * ln  # sun zenith varies across the swath
            o[..., 5] = np.abs(o[..., 4] - o[..., 2])
            o[..., 6] = 2.0
            o[..., 7] = 180.0
            o[..., 8] = np.cos(np.radians(o[..., 4]))
            o[..., 9] = hours + ln * _LINE_SECONDS / 3600
            o[..., 10] = dist
            obs[r0:r1, :, :] = o
    part.replace(path)
