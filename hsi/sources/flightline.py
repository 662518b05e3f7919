"""A plausible imaging-spectrometer flight line and the GLT built from it (synthetic data).

Each sensor pixel (line, sample) lands on the ground along a straight track with a heading, a
cross-track footprint that widens towards the swath edges, and small roll/pitch wobble (sinusoids
of a few tenths of a pixel to ~1.5 px), so the GLT is not a plain rotation. The GLT is built the way
the EMIT and AVIRIS-NG processors do it: for every output cell, the nearest sensor pixel within
0.75 pixel (k-d tree); cells no pixel centre falls into but that have such a neighbour are
*infill*. ``signed=True`` marks infill cells negative (AVIRIS-NG); EMIT GLTs are all positive.
Entries are 1-based; 0 = no pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from rasterio.crs import CRS
from scipy.spatial import cKDTree

__all__ = ["FlightLine", "flight_line"]

_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQ = 111_320.0


@dataclass(frozen=True)
class FlightLine:
    glt_x: NDArray[np.int32]  # (rows, cols) 1-based sample, 0 = none, negative = infill (signed)
    glt_y: NDArray[np.int32]  # 1-based line
    transform: tuple[float, float, float, float, float, float]  # rasterio order, north-up
    crs_wkt: str
    x: NDArray[np.float64]  # (lines, samples) ground x of each sensor pixel (lon or easting)
    y: NDArray[np.float64]  # (lines, samples) ground y (lat or northing)
    heading_deg: float

    @property
    def gdal_geotransform(self) -> tuple[float, ...]:
        a, b, c, d, e, f = self.transform
        return (c, a, b, f, d, e)


def flight_line(
    lines: int,
    samples: int,
    *,
    pixel_m: float = 60.0,
    heading_deg: float = 35.0,
    geographic: bool = True,
    centre: tuple[float, float] = (-112.5, 36.2),  # lon, lat (geographic) or easting, northing (UTM)
    epsg: int = 32612,
    signed: bool = False,
    seed: int = 0,
) -> FlightLine:
    rng = np.random.default_rng(seed + 7919)
    phase = rng.random(3) * 2 * math.pi
    ln = np.arange(lines, dtype=np.float64)[:, None]
    sm = np.arange(samples, dtype=np.float64)[None, :]
    u = (sm - (samples - 1) / 2) / max(1.0, (samples - 1) / 2)  # -1 .. 1 across the swath
    roll_px = 1.5 * np.sin(2 * math.pi * ln / 97.0 + phase[0]) + 0.4 * np.sin(
        2 * math.pi * ln / 23.0 + phase[1]
    )
    pitch_px = 0.6 * np.sin(2 * math.pi * ln / 61.0 + phase[2])
    cross = ((sm - (samples - 1) / 2) * (1 + 0.04 * u**2) + roll_px) * pixel_m
    along = (ln - (lines - 1) / 2 + pitch_px) * pixel_m
    h = math.radians(heading_deg)
    east = along * math.sin(h) + cross * math.cos(h)
    north = along * math.cos(h) - cross * math.sin(h)
    east, north = np.broadcast_to(east, (lines, samples)), np.broadcast_to(north, (lines, samples))
    if geographic:
        lon0, lat0 = centre
        x = lon0 + east / (_M_PER_DEG_LON_EQ * math.cos(math.radians(lat0)))
        y = lat0 + north / _M_PER_DEG_LAT
        res = pixel_m / _M_PER_DEG_LON_EQ
        crs_wkt = CRS.from_epsg(4326).to_wkt()
        # metres per output cell along x and y, to express the search radius in cells
        scale = np.array([res * _M_PER_DEG_LON_EQ * math.cos(math.radians(lat0)), res * _M_PER_DEG_LAT])
    else:
        x, y = centre[0] + east, centre[1] + north
        res = pixel_m
        crs_wkt = CRS.from_epsg(epsg).to_wkt()
        scale = np.array([pixel_m, pixel_m])
    left, top = math.floor(x.min() / res) * res - res, math.ceil(y.max() / res) * res + res
    cols = int(math.ceil((x.max() - left) / res)) + 2
    rows = int(math.ceil((top - y.min()) / res)) + 2
    # nearest sensor pixel for every output cell centre, in metres
    pts = np.column_stack([((x - left) / res).ravel() * scale[0], ((top - y) / res).ravel() * scale[1]])
    tree = cKDTree(pts)
    gc, gr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    q = np.column_stack([gc.ravel() * scale[0], gr.ravel() * scale[1]])
    dist, idx = tree.query(q, distance_upper_bound=0.75 * pixel_m)
    found = np.isfinite(dist)
    glt_x = np.zeros(rows * cols, dtype=np.int32)
    glt_y = np.zeros(rows * cols, dtype=np.int32)
    glt_x[found] = (idx[found] % samples + 1).astype(np.int32)
    glt_y[found] = (idx[found] // samples + 1).astype(np.int32)
    if signed:  # cells no pixel centre falls into are nearest-neighbour infill: negative
        hit = np.zeros(rows * cols, dtype=bool)
        fc = np.floor((x - left) / res).astype(np.int64).ravel()
        fr = np.floor((top - y) / res).astype(np.int64).ravel()
        hit[fr * cols + fc] = True
        infill = found & ~hit
        glt_x[infill] *= -1
        glt_y[infill] *= -1
    transform = (res, 0.0, left, 0.0, -res, top)
    return FlightLine(
        glt_x=glt_x.reshape(rows, cols),
        glt_y=glt_y.reshape(rows, cols),
        transform=transform,
        crs_wkt=crs_wkt,
        x=np.ascontiguousarray(x),
        y=np.ascontiguousarray(y),
        heading_deg=heading_deg,
    )
