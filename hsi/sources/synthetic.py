"""Realistic synthetic AVIRIS-NG / AVIRIS-Classic scenes, in the sensors' exact file formats.

:func:`synthesize` writes, line block by line block (memory independent of scene size):

* ``aviris-ng``: float32 BIL little-endian, 425 bands; ``ang<YYYYMMDD>t<HHMMSS>_rfl_v2p9_img`` (l2,
  fill -9999) or ``..._rdn_v2p9_img`` (l1b radiance, uW nm-1 cm-2 sr-1); archive names
  ``<id>_rfl_v2p9.tar.gz`` / ``<id>.tar.gz``;
* ``aviris-classic``: int16 big-endian BIP, 224 channels in 4 overlapping spectrometers (sensor
  order, not monotonic); l1b ``<flight>rdn_e_sc01_ort_img`` with ``.gain`` (DN = radiance x gain)
  and ``.spc`` sidecars; l2 ``<flight>_refl_img`` int16 reflectance x 10000
  (``reflectance scale factor = 10000``); fill -9999; archives ``<flight>.tar.gz`` / ``<flight>_refl.tar.gz``.

Pixels are mixtures of the :mod:`hsi.sources.spectra` endmembers arranged in spatially coherent
patches (a coarse class map sampled through a smooth warp: land with healthy/stressed/dead
vegetation and soil, water bodies with oil slicks), with per-pixel brightness variation and
band-dependent sensor noise. A rotated grid (``rotation_deg != 0``) gets ``rotation=`` in
``map info`` and fill outside a slanted swath. ``truth=True`` writes ``<stem>_truth.npy``
(uint8 class per pixel, 255 = fill; class names in ``<stem>_truth.json``).

Everything derives from the parameters and ``seed``: same inputs, same bytes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from hsi.errors import InvalidInputError
from hsi.sources.aviris_classic import parse_classic_name
from hsi.sources.aviris_ng import parse_ng_name
from hsi.sources.envi import format_header, is_bad_default
from hsi.sources.spectra import ENDMEMBERS, at_sensor_radiance_factor, endmember_matrix

__all__ = ["CLASSES", "FILL", "SensorTable", "sensor_table", "synthesize", "synthetic_scene_id"]

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = tuple(ENDMEMBERS)  # class k = endmember k
FILL = -9999
TRUTH_FILL = 255
SECONDARY_ENDMEMBER = np.array([3, 3, 3, 2, 4, 4])  # secondary endmember mixed into each class
_BLOCK_BYTES = 4 << 20  # float32 working set per block (a few of these live at once)
_POOL = 4099  # rows of the precomputed noise pool (prime)


class SensorTable:
    """Band centres, FWHM and (Classic) spectrometer gains of a sensor, from ``hsi/data``."""

    def __init__(
        self,
        wavelength: NDArray[np.float64],
        fwhm: NDArray[np.float64],
        gain: NDArray[np.float64] | None = None,
    ) -> None:
        self.wavelength = wavelength
        self.fwhm = fwhm
        self.gain = gain
        self.bbl = np.array(
            [0 if is_bad_default(w, f) else 1 for w, f in zip(wavelength, fwhm, strict=True)], dtype=np.int8
        )


def sensor_table(source: str) -> SensorTable:
    """The band table of ``aviris-ng`` (425) or ``aviris-classic`` (224) in sensor order."""
    fname = {"aviris-ng": "aviris_ng_bands.csv", "aviris-classic": "aviris_classic_bands.csv"}.get(source)
    if fname is None:
        raise InvalidInputError(f"synthetic source must be 'aviris-ng' or 'aviris-classic', got {source!r}")
    rows = list(csv.DictReader(resources.files("hsi.data").joinpath(fname).read_text().splitlines()))
    wl = np.array([float(r["center_nm"]) for r in rows])
    fw = np.array([float(r["fwhm_nm"]) for r in rows])
    gain = None
    if source == "aviris-classic":
        gain = np.array([{"A": 300.0, "B": 600.0, "C": 1200.0, "D": 2400.0}[r["spectrometer"]] for r in rows])
    return SensorTable(wl, fw, gain)


def synthetic_scene_id(source: str, seed: int) -> str:
    """Deterministic native id: ``ang20240101t000000`` + seed minutes / ``f240101t01p00r01`` + seed runs."""
    base = datetime(2024, 1, 1, tzinfo=UTC)
    if source == "aviris-ng":
        return (base + timedelta(minutes=seed)).strftime("ang%Y%m%dt%H%M%S")
    day = base + timedelta(days=seed // 99)
    return f"f{day:%y%m%d}t01p00r{seed % 99 + 1:02d}"


class SyntheticScene:
    """Spatial layout: class per pixel from a warped coarse class map, computed per line block."""

    def __init__(self, width: int, height: int, rotated: bool, rng: np.random.Generator) -> None:
        self.w, self.h = width, height
        self.cell = max(6, min(width, height) // 10)
        gh, gw = height // self.cell + 3, width // self.cell + 3
        macro = max(2, 3)
        mh, mw = gh // macro + 2, gw // macro + 2
        is_water = rng.random((mh, mw)) < 0.3
        is_water[0, 0] = True  # always some water and some land
        is_water[-1, -1] = False
        water_fine = np.kron(is_water, np.ones((macro, macro), dtype=bool))[:gh, :gw]
        land = rng.choice(4, size=(gh, gw), p=[0.4, 0.2, 0.15, 0.25])
        oil = rng.random((gh, gw)) < 0.4
        self.classes = np.where(water_fine, np.where(oil, 5, 4), land).astype(np.uint8)
        self.phase = rng.random(4) * 2 * math.pi
        self.rotated = rotated
        self.slope = 0.25 * width / max(height, 1)

    def block(self, r0: int, r1: int) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        y = np.arange(r0, r1, dtype=np.float64)[:, None]
        x = np.arange(self.w, dtype=np.float64)[None, :]
        c, p = self.cell, self.phase
        dy = 0.35 * c * np.sin(x / (0.9 * c) + p[0]) + 0.2 * c * np.sin((x + y) / (0.45 * c) + p[1])
        dx = 0.35 * c * np.sin(y / (0.8 * c) + p[2]) + 0.2 * c * np.sin((x - y) / (0.5 * c) + p[3])
        iy = np.clip(((y + dy) / c + 1).astype(np.int64), 0, self.classes.shape[0] - 1)
        ix = np.clip(((x + dx) / c + 1).astype(np.int64), 0, self.classes.shape[1] - 1)
        cls = self.classes[iy, ix]
        if self.rotated:
            centre = self.w / 2 + self.slope * (y - self.h / 2)
            fill = np.abs(x - centre) > 0.42 * self.w
        else:
            fill = np.zeros(cls.shape, dtype=bool)
        return cls, fill


def _names(source: str, level: str, scene_id: str) -> tuple[str, str, str]:
    """``(cube file name, sidecar stem, archive stem)``."""
    if source == "aviris-ng":
        tag = "rfl" if level == "l2" else "rdn"
        stem = f"{scene_id}_{tag}_v2p9"
        return f"{stem}_img", stem, (stem if level == "l2" else scene_id)
    if level == "l2":
        return f"{scene_id}_refl_img", f"{scene_id}_refl", f"{scene_id}_refl"
    return f"{scene_id}rdn_e_sc01_ort_img", f"{scene_id}rdn_e", scene_id


def _header(
    source: str, level: str, width: int, height: int, table: SensorTable, rotation_deg: float, seed: int
) -> dict[str, object]:
    ng = source == "aviris-ng"
    px = 5.2 if ng else 14.4
    easting = 400000.0 + 10.0 * (seed % 1000)
    northing = 4100000.0
    rot = f", rotation={rotation_deg:g}" if rotation_deg else ""
    quantity = "surface reflectance" if level == "l2" else "at-sensor radiance"
    fields: dict[str, object] = {
        "description": "{" + f"{'AVIRIS-NG' if ng else 'AVIRIS-Classic'} {level.upper()} {quantity}, "
        f"synthetic (hsi-pipeline, seed={seed})" + "}",
        "samples": width,
        "lines": height,
        "bands": len(table.wavelength),
        "header offset": 0,
        "file type": "ENVI Standard",
        "data type": 4 if ng else 2,
        "interleave": "bil" if ng else "bip",
        "byte order": 0 if ng else 1,
        "map info": "{"
        + f"UTM, 1, 1, {easting:.2f}, {northing:.2f}, {px}, {px}, 11, North, WGS-84{rot}"
        + "}",
        "wavelength units": "Nanometers",
        "wavelength": [f"{w:.6f}" for w in table.wavelength],
        "fwhm": [f"{f:.6f}" for f in table.fwhm],
        "bbl": [str(int(b)) for b in table.bbl],
        "data ignore value": FILL,
    }
    if level == "l2" and not ng:
        fields["reflectance scale factor"] = 10000
    if level == "l1b" and ng:
        fields["radiance units"] = "uW nm-1 cm-2 sr-1"
    return fields


def synthesize(
    out_dir: Path | str,
    *,
    source: Literal["aviris-ng", "aviris-classic"] = "aviris-ng",
    level: Literal["l2", "l1b"] = "l2",
    width: int = 96,
    height: int = 128,
    rotation_deg: float = 0.0,
    seed: int = 0,
    scene_id: str | None = None,
    archive: bool | Literal["tar.gz", "zip"] = False,
    progress: Callable[[int, int], None] | None = None,
    truth: bool = False,
    sidecars: bool = False,
) -> Path:
    """Write one synthetic scene into ``out_dir``; return its header path (or archive path).
    ``sidecars=True`` (AVIRIS-NG) also writes the GLT, IGM, LOC, OBS and OBS_ORT products
    (:mod:`hsi.sources.ng_synth`)."""
    if level not in ("l2", "l1b"):
        raise InvalidInputError(f"synthetic level must be 'l2' or 'l1b', got {level!r}")
    if width <= 0 or height <= 0:
        raise InvalidInputError(f"synthetic scene size must be positive, got {width}x{height}")
    table = sensor_table(source)
    scene_id = scene_id or synthetic_scene_id(source, seed)
    parse = parse_ng_name if source == "aviris-ng" else parse_classic_name
    if parse(scene_id) is None:
        raise InvalidInputError(f"scene_id {scene_id!r} is not a valid {source} name")
    out_dir = Path(out_dir)
    cube_name, side_stem, arc_stem = _names(source, level, scene_id)
    target = out_dir / (arc_stem + "._staging") if archive else out_dir
    if archive:
        shutil.rmtree(target, ignore_errors=True)
        target = target / arc_stem
    target.mkdir(parents=True, exist_ok=True)

    hdr_path = target / f"{cube_name}.hdr"
    hdr_path.write_text(format_header(_header(source, level, width, height, table, rotation_deg, seed)))
    if source == "aviris-classic":
        _write_sidecars(target / side_stem, table, gain=level == "l1b")
    _write_cube(
        target / cube_name,
        source,
        level,
        width,
        height,
        table,
        rotation_deg,
        seed,
        progress,
        (target / f"{cube_name}_truth") if truth else None,
    )
    if sidecars:
        if source != "aviris-ng":
            raise InvalidInputError("sidecars (GLT/IGM/LOC/OBS) are synthesized for aviris-ng only")
        from hsi.sources.ng_synth import write_ng_sidecars

        write_ng_sidecars(hdr_path, seed=seed)
    if not archive:
        log.info("synthesized %s %s scene %s (%dx%d) at %s", source, level, scene_id, width, height, hdr_path)
        return hdr_path
    fmt = "zip" if archive == "zip" else "tar.gz"
    arc = out_dir / f"{arc_stem}.{fmt}"
    _pack(target, arc, fmt)
    shutil.rmtree(target.parent)
    log.info("synthesized %s %s scene %s (%dx%d) as %s", source, level, scene_id, width, height, arc)
    return arc


def _write_sidecars(stem: Path, table: SensorTable, *, gain: bool) -> None:
    if gain and table.gain is not None:
        stem.with_name(stem.name + ".gain").write_text(
            "".join(f"{g:.6f} {i + 1}\n" for i, g in enumerate(table.gain))
        )
    stem.with_name(stem.name + ".spc").write_text(
        "".join(
            f"{w:.6f}\t{f:.6f}\t{0.5:.6f}\t{0.5:.6f}\t{i + 1:.6f}\n"
            for i, (w, f) in enumerate(zip(table.wavelength, table.fwhm, strict=True))
        )
    )


def _pack(src_dir: Path, arc: Path, fmt: str) -> None:
    tmp = arc.with_name(arc.name + ".part")
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    if fmt == "zip":
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for p in files:
                zf.write(p, f"{src_dir.name}/{p.relative_to(src_dir).as_posix()}")
    else:
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tf:
            for p in files:
                info = tf.gettarinfo(p, f"{src_dir.name}/{p.relative_to(src_dir).as_posix()}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(p, "rb") as fh:
                    tf.addfile(info, fh)
    tmp.replace(arc)


def _write_cube(
    path: Path,
    source: str,
    level: str,
    width: int,
    height: int,
    table: SensorTable,
    rotation_deg: float,
    seed: int,
    progress: Callable[[int, int], None] | None,
    truth_stem: Path | None,
) -> None:
    rng = np.random.default_rng(seed)
    scene = SyntheticScene(width, height, rotation_deg != 0.0, rng)
    wl = table.wavelength
    nb = len(wl)
    em = endmember_matrix(wl)  # (6, nb)
    gain, path_rad = at_sensor_radiance_factor(wl)
    radiance = level == "l1b"
    if radiance:
        em = em * gain.astype(np.float32)[None, :]
        offset = path_rad.astype(np.float32)
        sigma = (0.02 + 0.004 * gain + 0.002 * path_rad).astype(np.float32)  # NEdL-like
    else:
        offset = np.zeros(nb, dtype=np.float32)
        sigma = (0.0015 + 0.006 * (1 - np.clip(gain / gain.max(), 0, 1)) ** 6).astype(np.float32)
    pool = rng.standard_normal((_POOL, nb), dtype=np.float32) * sigma[None, :]
    ng = source == "aviris-ng"
    out_dtype = np.dtype("<f4") if ng else np.dtype(">i2")
    scale = None if ng else (table.gain.astype(np.float32) if radiance else np.float32(10000.0))  # type: ignore[union-attr]
    rows_per_block = max(1, _BLOCK_BYTES // max(1, width * nb * 4))
    n_end = em.shape[0]
    truth_arr = None
    if truth_stem is not None:
        truth_arr = np.lib.format.open_memmap(
            f"{truth_stem}.npy", mode="w+", dtype=np.uint8, shape=(height, width)
        )
        truth_stem.with_suffix(".json").write_text(
            json.dumps({"classes": list(CLASSES), "fill": TRUTH_FILL, "shape": [height, width]}, indent=1)
        )
    with open(path, "wb") as fh:
        for r0 in range(0, height, rows_per_block):
            r1 = min(height, r0 + rows_per_block)
            cls, fill = scene.block(r0, r1)
            npx = cls.size
            flat = cls.ravel()
            frac = rng.uniform(0.78, 0.97, npx).astype(np.float32)
            frac[flat == 4] = 1.0
            bright = rng.uniform(0.9, 1.1, npx).astype(np.float32)
            ab = np.zeros((npx, n_end), dtype=np.float32)
            idx = np.arange(npx)
            ab[idx, SECONDARY_ENDMEMBER[flat]] = (1 - frac) * bright
            ab[idx, flat] = frac * bright
            cube = ab @ em  # (npx, nb)
            cube += offset
            start, step = int(rng.integers(_POOL)), int(rng.integers(1, _POOL))
            cube += pool[(start + idx * step) % _POOL]
            if scale is not None:
                cube *= scale
                np.rint(cube, out=cube)
                np.clip(cube, -32767, 32767, out=cube)
            cube[fill.ravel()] = FILL
            block = cube.reshape(r1 - r0, width, nb)
            if ng:  # BIL: line, band, sample
                np.ascontiguousarray(block.transpose(0, 2, 1)).astype(out_dtype, copy=False).tofile(fh)
            else:  # BIP: line, sample, band
                block.astype(out_dtype).tofile(fh)
            if truth_arr is not None:
                truth_arr[r0:r1] = np.where(fill, TRUTH_FILL, cls)
            if progress is not None:
                progress(r1, height)
    if truth_arr is not None:
        truth_arr.flush()
        del truth_arr
