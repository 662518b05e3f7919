"""EMIT (``emit``): NASA/JPL EMIT L1B radiance and L2A reflectance granules (netCDF4), sensor geometry.

Read through xarray with the h5netcdf engine, following the EMIT product user guides (L1B RAD/OBS,
L2A RFL/MASK, V001):

* names ``EMIT_<L1B|L2A>_<RAD|OBS|RFL|MASK|RFLUNCERT>_<vvv>_<YYYYMMDDTHHMMSS>_<orbit>_<scene>.nc``;
  the native name (without ``.nc``) is the scene id; ``RAD`` -> level ``l1b`` radiance
  (uW cm-2 sr-1 nm-1), ``RFL`` -> level ``l2a`` reflectance;
* the cube is the root variable ``radiance`` / ``reflectance`` with dims (downtrack, crosstrack,
  bands), float32, ``_FillValue`` -9999, in **sensor geometry**;
* group ``sensor_band_parameters``: ``wavelengths``, ``fwhm`` (nm) and, in RFL, ``good_wavelengths``
  (1 = good); OBS: ``observation_bands``; MASK: ``mask_bands``;
* group ``location``: ``lat``, ``lon``, ``elev`` per sensor pixel and the GLT ``glt_x`` / ``glt_y``
  (dims ortho_y, ortho_x; 1-based sensor sample/line, 0 = no pixel);
* global attributes ``geotransform`` (GDAL order, of the GLT grid, EPSG:4326) and ``spatial_ref`` (WKT),
  ``time_coverage_start``.

The scene's map grid is the GLT's: activation orthorectifies through it exactly (:mod:`hsi.glt`).
Companion granules of the same acquisition (``OBS`` for RAD, ``MASK`` for RFL) next to the cube
are recorded in ``extra`` (``obs`` / ``mask``) and read with :func:`read_companion`.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hsi.errors import DataFileError, UnsupportedSourceError
from hsi.scene import BandInfo, GltRef, RasterLayout, SceneMetadata
from hsi.sources.bad_bands import is_bad_default

if TYPE_CHECKING:
    from io import RawIOBase

    from hsi.sources.archive import ArchiveLimits

    GranuleFile = IO[bytes] | RawIOBase  # a seekable binary file object of a granule's bytes

__all__ = [
    "EMIT_RADIANCE_UNITS",
    "MASK_BANDS",
    "OBS_BANDS",
    "EmitName",
    "EmitSource",
    "companion_names",
    "companion_path",
    "parse_emit_name",
    "read_companion",
]

log = logging.getLogger(__name__)

EMIT_RADIANCE_UNITS = "uW nm-1 cm-2 sr-1"
NAME_RE = re.compile(
    r"^EMIT_(L1B|L2A)_(RAD|OBS|RFL|MASK|RFLUNCERT)_(\d{3})_(\d{8}T\d{6})_(\d{7})_(\d{3})(?:\.nc)?$"
)
_CUBES = {"RAD": ("l1b", "radiance", "radiance"), "RFL": ("l2a", "reflectance", "reflectance")}
_COMPANIONS = {"obs": ("L1B", "OBS", "obs"), "mask": ("L2A", "MASK", "mask")}
_COMPANION_OF = {"RAD": "obs", "RFL": "mask"}  # the granule that travels with each cube
# The EMIT L1B OBS bands and L2A MASK bands, in file order (product user guides).
OBS_BANDS = (
    "Path length (m)",
    "To-sensor azimuth (0 to 360 degrees CW from N)",
    "To-sensor zenith (0 to 90 degrees from zenith)",
    "To-sun azimuth (0 to 360 degrees CW from N)",
    "To-sun zenith (0 to 90 degrees from zenith)",
    "Solar phase (degrees between to-sensor and to-sun vectors in principal plane)",
    "Slope (local surface slope as derived from DEM in degrees)",
    "Aspect (local surface aspect 0 to 360 degrees clockwise from N)",
    "Cosine(i) (apparent local illumination factor based on DEM slope and aspect and to sun vector)",
    "UTC Time (decimal hours for mid-line pixels)",
    "Earth-sun distance (AU)",
)
MASK_BANDS = (
    "Cloud flag",
    "Cirrus flag",
    "Water flag",
    "Spacecraft Flag",
    "Dilated Cloud Flag",
    "AOD550",
    "H2O (g cm-2)",
    "Aggregate Flag",
)
OBS_SOLAR_ZENITH = 4  # 0-based band of the to-sun zenith in OBS
OBS_EARTH_SUN = 10


class EmitName:
    """The parts of an EMIT granule name."""

    def __init__(self, m: re.Match[str]) -> None:
        self.level, self.product, self.version, stamp, self.orbit, self.scene = m.groups()
        self.datetime = datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        self.stamp = stamp

    @property
    def stem(self) -> str:
        return f"EMIT_{self.level}_{self.product}_{self.version}_{self.stamp}_{self.orbit}_{self.scene}"

    def companion(self, kind: str) -> str:
        lvl, prod, _ = _COMPANIONS[kind]
        return f"EMIT_{lvl}_{prod}_{self.version}_{self.stamp}_{self.orbit}_{self.scene}.nc"


def parse_emit_name(name: str) -> EmitName | None:
    m = NAME_RE.match(Path(name).name)
    return EmitName(m) if m else None


def companion_names(name: str) -> list[str]:
    """File names of the companion granule(s) that travel with an EMIT cube (RAD: OBS, RFL: MASK)."""
    parsed = parse_emit_name(name)
    kind = _COMPANION_OF.get(parsed.product) if parsed else None
    return [parsed.companion(kind)] if parsed and kind else []


def companion_path(cube: Path, kind: str) -> Path | None:
    """The ``obs`` / ``mask`` granule of the same acquisition next to ``cube`` (None if absent)."""
    parsed = parse_emit_name(cube.name)
    if parsed is None:
        return None
    p = cube.with_name(parsed.companion(kind))
    return p if p.is_file() else None


def _open(path: Path, group: str | None = None, fileobj: GranuleFile | None = None) -> Any:
    """The granule at ``path``, or its bytes from ``fileobj`` when given (read from its start)."""
    import xarray as xr

    src: Any = path  # xarray takes a path or a readable, seekable binary file object
    if fileobj is not None:
        fileobj.seek(0)
        src = fileobj
    try:
        return xr.open_dataset(
            src,
            engine="h5netcdf",
            group=group,
            mask_and_scale=False,
            decode_times=False,
            cache=False,
        )
    except (OSError, ValueError) as exc:  # a file object not HDF5: xarray says ValueError
        where = f" (group {group!r})" if group else ""
        raise DataFileError(path, f"cannot read as an EMIT netCDF4 granule{where}: {exc}") from exc


def _geo(
    path: Path, attrs: dict[str, Any], loc: Any
) -> tuple[tuple[float, float, float, float, float, float], str, GltRef]:
    import numpy as np  # on use: detecting and listing sources stays light (fast CLI checks)

    if "geotransform" not in attrs or "spatial_ref" not in attrs:
        raise DataFileError(
            path, "global attributes 'geotransform' and 'spatial_ref' are required (EMIT V001)"
        )
    gt = [float(v) for v in np.asarray(attrs["geotransform"]).ravel()]
    if len(gt) != 6:
        raise DataFileError(path, f"'geotransform' has {len(gt)} values, expected 6 (GDAL order)")
    transform = (gt[1], gt[2], gt[0], gt[4], gt[5], gt[3])
    wkt = str(attrs["spatial_ref"])
    for v in ("glt_x", "glt_y"):
        if v not in loc.variables:
            raise DataFileError(path, f"group 'location' has no {v!r} (the GLT)")
    h, w = loc["glt_x"].shape
    glt = GltRef(
        path=path,
        width=int(w),
        height=int(h),
        transform=transform,
        crs_wkt=wkt,
        x_variable="location/glt_x",
        y_variable="location/glt_y",
    )
    return transform, wkt, glt


def _time_attr(attrs: dict[str, Any], key: str) -> datetime | None:
    text = str(attrs.get(key, ""))
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).astimezone(UTC)
        except ValueError:
            continue
    return None


def _when(attrs: dict[str, Any], name: EmitName) -> datetime:
    return _time_attr(attrs, "time_coverage_start") or name.datetime


def read_granule(
    path: Path,
    *,
    variable: str,
    quantity: str,
    level: str,
    label_var: str | None,
    fileobj: GranuleFile | None = None,
) -> SceneMetadata:
    """Metadata of one EMIT granule whose cube is ``variable`` (headers only, no pixels).

    With ``fileobj`` the granule's bytes are read from it (e.g. ranged reads of a remote object) and
    ``path`` only names it: the result's paths are ``path`` and companions are looked for next to it."""
    import numpy as np

    name = parse_emit_name(path.name)
    if name is None:
        raise UnsupportedSourceError(f"{path}: not an EMIT granule name (EMIT_<level>_<product>_...nc)")
    root = _open(path, fileobj=fileobj)
    try:
        if variable not in root.variables:
            raise DataFileError(path, f"no variable {variable!r} at the root of the granule")
        var = root[variable]
        if var.ndim != 3:
            raise DataFileError(
                path, f"{variable!r} has dims {var.dims}, expected (downtrack, crosstrack, bands)"
            )
        lines, samples, count = (int(n) for n in var.shape)
        fill = var.attrs.get("_FillValue", var.encoding.get("_FillValue"))
        units = var.attrs.get("units")
        attrs = dict(root.attrs)
        dtype = np.dtype(var.dtype).name
    finally:
        root.close()
    sbp = _open(path, "sensor_band_parameters", fileobj)
    loc = _open(path, "location", fileobj)
    try:
        transform, wkt, glt = _geo(path, attrs, loc)
        if label_var is not None:
            labels = [str(v) for v in np.asarray(sbp[label_var].values)] if label_var in sbp else []
            bands = tuple(
                BandInfo(
                    index=i + 1,
                    center_wavelength=None,
                    fwhm=None,
                    label=labels[i] if i < len(labels) else None,
                )
                for i in range(count)
            )
        else:
            wl = np.asarray(sbp["wavelengths"].values, dtype=np.float64)
            fw = np.asarray(sbp["fwhm"].values, dtype=np.float64) if "fwhm" in sbp else np.full(count, np.nan)
            if len(wl) != count:
                raise DataFileError(path, f"{len(wl)} wavelengths for {count} bands")
            good = (
                np.asarray(sbp["good_wavelengths"].values).astype(bool)
                if "good_wavelengths" in sbp
                else np.array([not is_bad_default(float(w)) for w in wl])
            )
            bands = tuple(
                BandInfo(
                    index=i + 1,
                    center_wavelength=float(wl[i]),
                    fwhm=float(fw[i]) if np.isfinite(fw[i]) else None,
                    good=bool(good[i]),
                )
                for i in range(count)
            )
    finally:
        sbp.close()
        loc.close()
    layout = RasterLayout(
        data_path=path,
        header_path=None,
        width=samples,
        height=lines,
        count=count,
        dtype=dtype,
        interleave="bip",
        byte_order="little",
        variable=variable,
    )
    extra = {"product": name.product, "orbit": name.orbit, "emit_scene": name.scene, "format": "netcdf4"}
    start, end = _when(attrs, name), _time_attr(attrs, "time_coverage_end")
    if end is not None and end >= start:  # the acquisition's span: STAC start/end_datetime
        extra["end_datetime"] = end.isoformat()
    if units is not None:
        extra["units_in_file"] = str(units)
    kind = _COMPANION_OF.get(name.product)
    comp = companion_path(path, kind) if kind else None
    if kind and comp is not None:
        extra[kind] = str(comp)
    return SceneMetadata(
        source="emit",
        scene_id=name.stem,
        level=level,
        quantity=quantity,
        layout=layout,
        bands=bands,
        nodata=float(np.asarray(fill).ravel()[0]) if fill is not None else -9999.0,
        crs_wkt=wkt,
        transform=transform,
        datetime=start,
        units=EMIT_RADIANCE_UNITS if quantity == "radiance" else None,
        sensor="EMIT",
        extra=extra,
        glt=glt,
    )


def read_companion(path: Path, kind: str) -> SceneMetadata:
    """An EMIT ``obs`` (L1B OBS, 11 geometry bands) or ``mask`` (L2A MASK, 8 bands) granule."""
    if kind == "obs":
        return read_granule(
            path, variable="obs", quantity="observation-geometry", level="l1b", label_var="observation_bands"
        )
    if kind == "mask":
        return read_granule(path, variable="mask", quantity="mask", level="l2a", label_var="mask_bands")
    raise ValueError(f"unknown EMIT companion {kind!r}")


def _cube_in(directory: Path) -> Path | None:
    found = sorted(
        p
        for p in directory.rglob("EMIT_*.nc")
        if (n := parse_emit_name(p.name)) is not None and n.product in _CUBES
    )
    rfl = [p for p in found if "_RFL_" in p.name]
    best = rfl or found
    return best[0] if best else None


class EmitSource:
    """EMIT L1B RAD / L2A RFL granules (sensor geometry + GLT)."""

    name = "emit"
    sensor = "EMIT"

    def matches(self, path: Path | str) -> bool:
        p = Path(path)
        parsed = parse_emit_name(p.name)
        if parsed is not None:
            return parsed.product in _CUBES
        return p.is_dir() and _cube_in(p) is not None

    def read(
        self,
        path: Path,
        work_dir: Path | None = None,
        limits: ArchiveLimits | None = None,
        *,
        fileobj: GranuleFile | None = None,
    ) -> SceneMetadata:
        """Metadata of a granule (or of the RAD/RFL granule in a directory); ``limits`` is accepted for
        the source protocol and unused (EMIT granules are not archives).

        ``fileobj``: read the granule's bytes from this seekable file object instead of from ``path``,
        which then only names the granule (a placeholder of it, next to its companions' placeholders):
        how an ``s3://`` granule is indexed by ranged reads (:mod:`hsi.staging`)."""
        p = Path(path)
        if p.is_dir() and fileobj is None:
            cube = _cube_in(p)
            if cube is None:
                raise UnsupportedSourceError(f"{p}: no EMIT RAD or RFL granule in this directory")
            p = cube
        parsed = parse_emit_name(p.name)
        if parsed is None or parsed.product not in _CUBES:
            raise UnsupportedSourceError(
                f"{p}: not an EMIT RAD/RFL granule name (EMIT_L1B_RAD_... or EMIT_L2A_RFL_...); "
                "OBS and MASK granules are read as companions of their cube, RFLUNCERT is not "
                "activated: index the RAD or RFL granule"
            )
        if not p.is_file():
            raise DataFileError(p, "file not found")
        level, quantity, variable = _CUBES[parsed.product]
        return read_granule(
            p, variable=variable, quantity=quantity, level=level, label_var=None, fileobj=fileobj
        )
