"""Synthetic AVIRIS-NG sidecars for a synthetic ortho image: GLT, IGM, LOC, OBS, OBS_ORT.

The raw (sensor-geometry) frame has the image's size; the GLT maps each ortho pixel to the raw
pixel a wobbling flight line (along-track jitter of up to ~1.5 lines, cross-track of ~1 sample)
put there. Raw pixels claimed by more than one ortho pixel are *infill* after the first and are
written negative, as AVIRIS-NG does; ortho fill pixels get 0. OBS_ORT is OBS rendered through the
GLT, exactly. Formats as delivered: GLT int32 BIP 2 bands (sample, line) with the image's
``map info``; IGM / LOC / OBS float64 BIP without map info (raw geometry); OBS_ORT float64 BIP with
``map info``. Everything derives from ``seed``; memory is a few 2-D planes of the image size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pyproj import CRS as PCRS
from pyproj import Transformer
from rasterio.transform import Affine

from hsi.sources.envi import format_header, parse_header_text, read_header
from hsi.sources.georef import map_info_crs_wkt, map_info_transform
from hsi.sources.ng_sidecars import OBS_BAND_NAMES

__all__ = ["write_ng_sidecars"]

FILL = -9999.0


def _header(samples: int, lines: int, bands: int, dtype: int, names: list[str], map_info: str | None) -> str:
    fields: dict[str, object] = {
        "description": "{synthetic AVIRIS-NG sidecar (hsi-pipeline)}",
        "samples": samples,
        "lines": lines,
        "bands": bands,
        "header offset": 0,
        "file type": "ENVI Standard",
        "data type": dtype,
        "interleave": "bip",
        "byte order": 0,
        "band names": "{" + ", ".join(names) + "}",
    }
    if dtype != 3:
        fields["data ignore value"] = FILL
    if map_info:
        fields["map info"] = map_info
    return format_header(fields)


def write_ng_sidecars(image_hdr: Path, *, seed: int = 0) -> dict[str, Path]:
    """Write the five sidecars next to ``image_hdr``; return ``kind -> data file``."""
    hdr = read_header(image_hdr)
    raw_fields = parse_header_text(image_hdr.read_text())
    map_info = raw_fields.get("map info")
    w, h, nb = hdr.samples, hdr.lines, hdr.bands
    stem = image_hdr.name[: -len(".hdr")]
    stem = stem[: -len("_img")] if stem.endswith("_img") else stem
    d = image_hdr.parent
    # ortho fill = the image's fill (first band), read line by line
    cube = np.memmap(image_hdr.with_suffix(""), dtype="<f4", mode="r", shape=(h, nb, w))
    fill = np.asarray(cube[:, 0, :]) == FILL
    del cube
    rng = np.random.default_rng(seed + 4243)
    ph = rng.random(3) * 2 * math.pi
    rr, cc = np.mgrid[0:h, 0:w]
    line = np.clip(
        np.rint(
            rr + 1.5 * np.sin(2 * math.pi * cc / 41 + ph[0]) + 0.5 * np.sin(2 * math.pi * rr / 17 + ph[1])
        ),
        0,
        h - 1,
    ).astype(np.int64)
    samp = np.clip(np.rint(cc + 1.0 * np.sin(2 * math.pi * rr / 29 + ph[2])), 0, w - 1).astype(np.int64)
    gx, gy = samp + 1, line + 1
    flat = line * w + samp
    order = np.flatnonzero(~fill.ravel())
    _, first = np.unique(flat.ravel()[order], return_index=True)
    infill_flat = np.ones(h * w, dtype=bool)
    infill_flat[order[first]] = False
    infill = infill_flat.reshape(h, w)
    gx = np.where(fill, 0, np.where(infill, -gx, gx)).astype(np.int32)
    gy = np.where(fill, 0, np.where(infill, -gy, gy)).astype(np.int32)
    out: dict[str, Path] = {}

    def write(kind: str, arr: np.ndarray, dtype: int, names: list[str], mi: str | None) -> None:
        path = d / f"{stem}_{kind}"
        np.ascontiguousarray(arr).tofile(path)
        path.with_name(path.name + ".hdr").write_text(
            _header(arr.shape[1], arr.shape[0], arr.shape[2], dtype, names, mi)
        )
        out[kind] = path

    write(
        "glt",
        np.stack([gx, gy], axis=-1).astype("<i4"),
        3,
        ["GLT Sample Lookup", "GLT Line Lookup"],
        map_info,
    )
    # raw geometry: each raw pixel's ground position (the ortho centre it mostly lands on)
    t = Affine(*map_info_transform(hdr.map_info)) if hdr.map_info is not None else Affine.identity()
    e, n = t @ (cc + 0.5, rr + 0.5)
    elev = 1200.0 + 80.0 * np.sin(e / 700.0) * np.cos(n / 900.0)
    write(
        "igm",
        np.stack([e, n, elev], axis=-1).astype("<f8"),
        5,
        ["Easting (m)", "Northing (m)", "Elevation (m)"],
        None,
    )
    wkt = map_info_crs_wkt(hdr.map_info, hdr.coordinate_system_string, image_hdr)
    if wkt:
        tr = Transformer.from_crs(PCRS.from_wkt(wkt), "EPSG:4326", always_xy=True)
        lon, lat = tr.transform(e, n)
    else:
        lon, lat = e, n
    write(
        "loc",
        np.stack([lon, lat, elev], axis=-1).astype("<f8"),
        5,
        ["Longitude (WGS-84)", "Latitude (WGS-84)", "Elevation (m)"],
        None,
    )
    u = (cc - (w - 1) / 2) / max(1.0, (w - 1) / 2)
    obs = np.empty((h, w, 11), dtype="<f8")
    obs[..., 0] = 4000.0 / np.cos(np.radians(np.abs(u) * 18))
    obs[..., 1] = np.where(u < 0, 270.0, 90.0)
    obs[..., 2] = np.abs(u) * 18
    obs[..., 3] = 160.0 + 0.01 * rr
    obs[..., 4] = 32.0 + 1.5 * u + 0.002 * rr  # to-sun zenith
    obs[..., 5] = np.abs(obs[..., 4] - obs[..., 2])
    obs[..., 6] = 3.0
    obs[..., 7] = 200.0
    obs[..., 8] = np.cos(np.radians(obs[..., 4]))
    obs[..., 9] = 18.0 + rr * 0.003 / 3600
    obs[..., 10] = 1.0142
    write("obs", obs, 5, list(OBS_BAND_NAMES), None)
    ort = np.full_like(obs, FILL)
    valid = gx != 0
    ort[valid] = obs[np.abs(gy[valid]) - 1, np.abs(gx[valid]) - 1]
    write("obs_ort", ort, 5, list(OBS_BAND_NAMES), map_info)
    return out
