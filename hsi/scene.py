"""The scene model: frozen, typed metadata of one hyperspectral cube.

Sources parse their documents (ENVI header, gain/spc files, archive names ...) into a
:class:`SceneMetadata`; everything downstream (COG writing, STAC building, products) works from
that object, never from a path. The cube itself stays on disk: :func:`hsi.cog.open_cube` opens a
lazy, windowed reader over it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

Interleave = Literal["bsq", "bil", "bip"]
ByteOrder = Literal["little", "big"]


@dataclass(frozen=True)
class BandInfo:
    """One spectral band, in sensor order."""

    index: int  # 1-based band number in the cube
    center_wavelength: float | None  # nm
    fwhm: float | None  # nm
    good: bool = True  # False when the sensor/header marks the band bad (bbl = 0)
    scale: float = 1.0  # physical = raw * scale + offset
    offset: float = 0.0
    label: str | None = None  # what a non-spectral band holds (e.g. EMIT mask "Cloud flag")

    @property
    def name(self) -> str:
        return f"b{self.index:03d}"

    def description(self) -> str:
        """GDAL band description: name and centre wavelength (or label)."""
        if self.label is not None:
            return f"{self.name} {self.label}"
        if self.center_wavelength is None:
            return self.name
        return f"{self.name} {self.center_wavelength:.2f} nm"


def nearest_good_band(bands: Sequence[BandInfo], wavelength: float) -> tuple[BandInfo, float] | None:
    """The good band (with a finite centre) nearest ``wavelength`` and its distance in nm; ties go
    to the earlier band in ``bands``. ``None`` when no band qualifies. Products (band selection)
    and the RGB quicklook both choose bands this way."""
    best: tuple[BandInfo, float] | None = None
    for b in bands:
        wl = b.center_wavelength
        if not b.good or wl is None or not math.isfinite(wl):
            continue
        d = abs(wl - wavelength)
        if best is None or d < best[1]:
            best = (b, d)
    return best


@dataclass(frozen=True)
class RasterLayout:
    """Where the binary cube is and how its bytes are laid out (ENVI semantics)."""

    data_path: Path
    header_path: Path | None
    width: int  # samples
    height: int  # lines
    count: int  # bands
    dtype: str  # numpy dtype name, e.g. "int16", "float32"
    interleave: Interleave
    byte_order: ByteOrder
    header_offset: int = 0
    # Set when the cube is a variable of a netCDF4/HDF5 file (dims line, sample, band; e.g. EMIT's
    # "reflectance"): read through h5netcdf instead of positioned reads.
    variable: str | None = None

    @property
    def itemsize(self) -> int:
        import numpy as np

        return int(np.dtype(self.dtype).itemsize)

    @property
    def expected_size(self) -> int:
        return self.header_offset + self.width * self.height * self.count * self.itemsize


@dataclass(frozen=True)
class GltRef:
    """A geometric lookup table (GLT): a map grid whose two integer layers name, for every output
    pixel, the sensor pixel (sample, line) to put there. Entries are 1-based, 0 = no pixel;
    AVIRIS-NG marks nearest-neighbour infill with negative entries (the pixel is ``abs(v)``;
    ``infill=False`` treats them as no pixel). EMIT: ``location/glt_x`` / ``location/glt_y`` of
    the granule (netCDF); ENVI: a 2-band integer file, band 1 = sample, band 2 = line.
    """

    path: Path
    width: int
    height: int
    # rasterio/Affine order, like SceneMetadata.transform (rotation allowed)
    transform: tuple[float, float, float, float, float, float]
    crs_wkt: str | None
    x_variable: str | None = None  # netCDF variable path of the sample layer, e.g. "location/glt_x"
    y_variable: str | None = None
    layout: RasterLayout | None = None  # ENVI GLT file
    infill: bool = True

    @property
    def is_rotated(self) -> bool:
        return abs(self.transform[1]) > 1e-12 or abs(self.transform[3]) > 1e-12


@dataclass(frozen=True)
class SceneMetadata:
    """Everything known about a scene before any pixel is read."""

    source: str  # source name, e.g. "aviris-ng"
    scene_id: str  # native scene id, e.g. "ang20150420t182050"
    level: str  # "l1b" (radiance) or "l2" (reflectance) ...
    quantity: str  # "radiance" | "reflectance" | ...
    layout: RasterLayout
    bands: tuple[BandInfo, ...]
    nodata: float | None
    crs_wkt: str | None
    # GDAL-order affine (x0, a, b, y0, d, e) is *not* used; this is rasterio/Affine order:
    # (a, b, c, d, e, f) with x = a*col + b*row + c, y = d*col + e*row + f. Rotation shows in b/d.
    transform: tuple[float, float, float, float, float, float] | None
    datetime: datetime | None
    units: str | None = None
    sensor: str | None = None  # human-readable instrument name
    extra: Mapping[str, str] = field(default_factory=dict)  # other header fields, kept verbatim
    # Sensor-geometry cube: the map grid is the GLT's (transform/crs_wkt above are the GLT grid's).
    glt: GltRef | None = None

    @property
    def geometry(self) -> str:
        """``sensor`` (raw instrument geometry, orthorectified through ``glt``) or ``map``."""
        return "sensor" if self.glt is not None else "map"

    @property
    def item_id(self) -> str:
        """Deterministic STAC item id shared by the raw and the activated item: ``<source>-<scene id>``."""
        return f"{self.source}-{self.scene_id}"

    @property
    def raw_collection(self) -> str:
        return f"{self.source}-raw"

    @property
    def activated_collection(self) -> str:
        return f"{self.source}-{self.level}"

    @property
    def wavelengths(self) -> tuple[float | None, ...]:
        return tuple(b.center_wavelength for b in self.bands)

    @property
    def is_rotated(self) -> bool:
        return self.transform is not None and (
            abs(self.transform[1]) > 1e-12 or abs(self.transform[3]) > 1e-12
        )


# --- How band metadata is stored inside every COG the pipeline writes (self-describing files) ---
# Default-domain band tags; wavelengths and FWHM in nanometres, GOOD_BAND "1"/"0".
TAG_WAVELENGTH = "WAVELENGTH_NM"
TAG_FWHM = "FWHM_NM"
TAG_GOOD = "GOOD_BAND"
# GDAL >= 3.10 also understands these (IMAGERY domain, micrometres): written too, for other tools.
IMAGERY_DOMAIN = "IMAGERY"
TAG_IMAGERY_WAVELENGTH_UM = "CENTRAL_WAVELENGTH_UM"
TAG_IMAGERY_FWHM_UM = "FWHM_UM"


def bands_from_dataset(ds: object) -> tuple[BandInfo, ...]:
    """Band table of an open rasterio dataset written by the pipeline (reads tags only, no pixels)."""
    out = []
    for i in range(1, ds.count + 1):  # type: ignore[attr-defined]
        tags = ds.tags(i)  # type: ignore[attr-defined]
        wl = tags.get(TAG_WAVELENGTH)
        fw = tags.get(TAG_FWHM)
        out.append(
            BandInfo(
                index=i,
                center_wavelength=float(wl) if wl not in (None, "") else None,
                fwhm=float(fw) if fw not in (None, "") else None,
                good=tags.get(TAG_GOOD, "1") != "0",
                scale=float(ds.scales[i - 1]),  # type: ignore[attr-defined]
                offset=float(ds.offsets[i - 1]),  # type: ignore[attr-defined]
            )
        )
    return tuple(out)
