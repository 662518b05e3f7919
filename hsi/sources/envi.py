"""ENVI header parsing and ENVI-cube -> :class:`hsi.scene.SceneMetadata` (shared by every ENVI source).

Two steps, kept apart on purpose:

1. :func:`read_header` parses the ``.hdr`` text into a frozen, typed :class:`EnviHeader`
   (required fields checked, list lengths checked, data type / interleave validated).
2. :func:`scene_from_header` turns an :class:`EnviHeader` (plus what a source knows from file
   names and sidecars) into a :class:`~hsi.scene.SceneMetadata`, checking the data file.

Georeferencing follows GDAL's ENVI driver (``ENVIDataset::ProcessMapinfo``) exactly, so the
transform equals ``rasterio.open(data_file).transform``:

* reference pixel (x, y) is 1-based; ``c = easting - (ref_x - 1) * px``,
  ``f = northing + (ref_y - 1) * py`` (GDAL does not rotate the reference-pixel shift);
* ``rotation=<deg>`` (exactly that token, counter-clockwise degrees) gives
  ``a = cos(r) px, b = -sin(r) px, d = -sin(r) py, e = -cos(r) py`` with ``r = -deg``;
  ``rotation=±180`` is the special "upside down" grid ``a = px, e = +py``;
* UTM hemisphere is north unless the field says ``South``; datum defaults to NAD27 when absent
  (GDAL's behaviour); ``coordinate system string`` (ESRI WKT) wins over ``map info``.

Data file size policy: the file must be exactly ``header offset + samples*lines*bands*itemsize``
bytes. Smaller is "truncated"; larger is also an error (a mismatch almost always means the header
has the wrong dimensions or data type; reading it anyway silently produces garbage).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from hsi.errors import HeaderError
from hsi.scene import BandInfo, RasterLayout, SceneMetadata
from hsi.sources.bad_bands import DEFAULT_BAD_WINDOWS_NM, is_bad_default
from hsi.sources.envi_files import check_data_file, find_data_file, find_header, glob_escape, header_files
from hsi.sources.georef import MapInfo, map_info_crs_wkt, map_info_transform

__all__ = [
    "DEFAULT_BAD_WINDOWS_NM",
    "ENVI_DTYPES",
    "EnviHeader",
    "MapInfo",
    "bands_from_header",
    "check_data_file",
    "find_data_file",
    "find_header",
    "glob_escape",
    "header_files",
    "format_header",
    "header_from_fields",
    "is_bad_default",
    "map_info_crs_wkt",
    "map_info_transform",
    "parse_header_text",
    "read_header",
    "scene_from_header",
]

log = logging.getLogger(__name__)

# ENVI data type code -> numpy dtype name (complex 6/9 deliberately absent).
ENVI_DTYPES: Mapping[int, str] = MappingProxyType(
    {
        1: "uint8",
        2: "int16",
        3: "int32",
        4: "float32",
        5: "float64",
        12: "uint16",
        13: "uint32",
        14: "int64",
        15: "uint64",
    }
)
_COMPLEX = {6: "complex64", 9: "complex128"}
# ENVI's length units of 'wavelength units' -> nanometres per unit ("Unknown" or absent: guessed)
NM_PER_UNIT: Mapping[str, float] = MappingProxyType(
    {
        **dict.fromkeys(("micrometers", "micrometer", "microns", "micron", "um", "µm", "μm"), 1e3),
        **dict.fromkeys(("nanometers", "nanometer", "nm"), 1.0),
        **dict.fromkeys(("millimeters", "millimeter", "mm"), 1e6),
        **dict.fromkeys(("centimeters", "centimeter", "cm"), 1e7),
        **dict.fromkeys(("meters", "meter", "m"), 1e9),
        **dict.fromkeys(("angstroms", "angstrom"), 0.1),
    }
)
_NOT_WAVELENGTHS = ("wavenumber", "ghz", "mhz", "index")  # ENVI units of other spectral axes
# Band centres of imaging spectrometers, UV to thermal infrared (HyTES reaches 12 µm): values outside
# are a wrong 'wavelength units' (nm written as µm, or the reverse), not a sensor
PLAUSIBLE_NM = (100.0, 20000.0)
_INTERLEAVES = ("bsq", "bil", "bip")
REQUIRED_FIELDS = ("samples", "lines", "bands", "data type", "interleave")


# ----------------------------------------------------------------------------------------------
# Raw text parsing
# ----------------------------------------------------------------------------------------------


def parse_header_text(text: str, path: object = "<header>") -> dict[str, str]:
    """Parse ENVI header text into ``{lower-case key: raw value}`` (braces kept for lists).

    Raises :class:`HeaderError` when the text does not start with the ``ENVI`` magic.
    """
    text = text.lstrip("\ufeff")
    if not text.startswith("ENVI"):
        raise HeaderError(path, "not an ENVI header (first line must be 'ENVI')")
    out: dict[str, str] = {}
    lines = text.splitlines()[1:]
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith(";") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = " ".join(key.strip().lower().split())
        value = value.strip()
        if value.startswith("{"):
            opened = i  # 1-based line number of the '{' (line 1 is 'ENVI')
            parts = [value]
            while "}" not in parts[-1] and i < len(lines):
                nxt = lines[i].strip()
                name = " ".join(nxt.partition("=")[0].lower().split()) if "=" in nxt else ""
                if name in _KNOWN:  # the next field starts before this one's '}'
                    raise HeaderError(
                        path,
                        f"unterminated '{{' (opened on line {opened + 1}; field '{name}' starts on line "
                        f"{i + 2} before the closing '}}'): close the value with '}}'",
                        field=key,
                    )
                parts.append(nxt)
                i += 1
            if "}" not in parts[-1]:
                raise HeaderError(
                    path,
                    f"unterminated '{{' (opened on line {opened + 1}): close the value with '}}'",
                    field=key,
                )
            value = "\n".join(parts)
        out[key] = value
    return out


def _list_items(value: str) -> list[str]:
    inner = value.strip()
    if inner.startswith("{"):
        inner = inner[1 : inner.rfind("}")]
    return [p.strip() for p in inner.replace("\n", " ").split(",") if p.strip() != ""]


def _braced_text(value: str) -> str:
    v = value.strip()
    if v.startswith("{"):
        v = v[1 : v.rfind("}")]
    return " ".join(v.split())


def _float_list(path: Path, raw: Mapping[str, str], key: str) -> tuple[float, ...] | None:
    if key not in raw:
        return None
    try:
        return tuple(float(x) for x in _list_items(raw[key]))
    except ValueError as exc:
        raise HeaderError(path, f"not a list of numbers ({exc})", field=key) from None


def _int(path: Path, raw: Mapping[str, str], key: str, default: int | None = None) -> int:
    if key not in raw:
        if default is None:
            raise HeaderError(path, "required field is missing", field=key)
        return default
    try:
        value = float(raw[key].strip())
    except ValueError:
        raise HeaderError(path, f"not an integer: {raw[key]!r}", field=key) from None
    if value != int(value):
        raise HeaderError(path, f"not an integer: {raw[key]!r}", field=key)
    return int(value)


def _float(path: Path, raw: Mapping[str, str], key: str) -> float | None:
    if key not in raw:
        return None
    try:
        return float(_braced_text(raw[key]))
    except ValueError:
        raise HeaderError(path, f"not a number: {raw[key]!r}", field=key) from None


# ----------------------------------------------------------------------------------------------
# Typed header
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnviHeader:
    """Every field of an ENVI header, typed. Unknown fields are kept verbatim in ``extra``."""

    path: Path
    samples: int
    lines: int
    bands: int
    data_type: int
    interleave: str  # normalised: bsq | bil | bip
    byte_order: int = 0  # 0 little endian, 1 big endian
    header_offset: int = 0
    file_type: str | None = None
    description: str | None = None
    sensor_type: str | None = None
    acquisition_time: str | None = None
    map_info: MapInfo | None = None
    coordinate_system_string: str | None = None
    wavelength_units: str | None = None
    wavelength: tuple[float, ...] | None = None  # as written, in wavelength_units
    fwhm: tuple[float, ...] | None = None
    bbl: tuple[float, ...] | None = None
    band_names: tuple[str, ...] | None = None
    data_ignore_value: float | None = None
    data_gain_values: tuple[float, ...] | None = None
    data_offset_values: tuple[float, ...] | None = None
    reflectance_scale_factor: float | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def dtype(self) -> str:
        return ENVI_DTYPES[self.data_type]

    @property
    def byte_order_name(self) -> str:
        return "big" if self.byte_order == 1 else "little"

    def _unit_factor(self) -> float:
        units = (self.wavelength_units or "").strip().lower()
        if units in NM_PER_UNIT:
            return NM_PER_UNIT[units]
        # unknown/absent: ENVI writers use µm for values < 100 (e.g. 0.4-2.5), else nm
        values = self.wavelength or self.fwhm or ()
        return 1000.0 if values and max(values) < 100 else 1.0

    @property
    def wavelength_nm(self) -> tuple[float, ...] | None:
        if self.wavelength is None:
            return None
        k = self._unit_factor()
        return tuple(w * k for w in self.wavelength)

    @property
    def fwhm_nm(self) -> tuple[float, ...] | None:
        if self.fwhm is None:
            return None
        k = self._unit_factor()
        return tuple(w * k for w in self.fwhm)

    @property
    def says_reflectance(self) -> bool:
        desc = (self.description or "").lower()
        return self.reflectance_scale_factor is not None or "reflectance" in desc


_KNOWN = {
    "samples",
    "lines",
    "bands",
    "data type",
    "interleave",
    "byte order",
    "header offset",
    "file type",
    "description",
    "sensor type",
    "acquisition time",
    "map info",
    "coordinate system string",
    "wavelength units",
    "wavelength",
    "fwhm",
    "bbl",
    "band names",
    "data ignore value",
    "data gain values",
    "data offset values",
    "reflectance scale factor",
}


def header_from_fields(raw: Mapping[str, str], path: Path) -> EnviHeader:
    """Build and validate an :class:`EnviHeader` from parsed ``{key: raw value}`` fields."""
    for key in REQUIRED_FIELDS:
        if key not in raw or raw[key].strip() == "":
            raise HeaderError(path, "required field is missing", field=key)
    samples, lines, bands = (_int(path, raw, k) for k in ("samples", "lines", "bands"))
    for key, val in (("samples", samples), ("lines", lines), ("bands", bands)):
        if val <= 0:
            raise HeaderError(path, f"must be > 0, found {val}", field=key)
    data_type = _int(path, raw, "data type")
    if data_type in _COMPLEX:
        raise HeaderError(
            path,
            f"unsupported data type {data_type} ({_COMPLEX[data_type]}): complex cubes "
            "are not hyperspectral imagery this pipeline handles",
            field="data type",
        )
    if data_type not in ENVI_DTYPES:
        raise HeaderError(
            path, f"unsupported data type {data_type}; supported: {sorted(ENVI_DTYPES)}", field="data type"
        )
    interleave = raw["interleave"].strip().lower()
    if interleave not in _INTERLEAVES:
        raise HeaderError(
            path,
            f"unknown interleave {raw['interleave'].strip()!r}; expected bsq, bil or bip",
            field="interleave",
        )
    byte_order = _int(path, raw, "byte order", default=0)
    if byte_order not in (0, 1):
        raise HeaderError(path, f"must be 0 or 1, found {byte_order}", field="byte order")
    header_offset = _int(path, raw, "header offset", default=0)
    if header_offset < 0:
        raise HeaderError(path, f"must be >= 0, found {header_offset}", field="header offset")

    lists: dict[str, tuple[float, ...] | None] = {}
    for key in ("wavelength", "fwhm", "bbl", "data gain values", "data offset values"):
        values = _float_list(path, raw, key)
        if values is not None and len(values) != bands:
            raise HeaderError(
                path, f"has {len(values)} values but the header says bands = {bands}", field=key
            )
        lists[key] = values
    for key in ("wavelength", "fwhm"):
        bad = [(b, v) for b, v in enumerate(lists[key] or (), start=1) if not (math.isfinite(v) and v > 0)]
        if bad:
            b, v = bad[0]
            raise HeaderError(path, f"band {b} has {v!r}: values must be finite and > 0", field=key)
    if lists["bbl"] is not None and not any(lists["bbl"]):
        raise HeaderError(
            path, "marks every band bad (0): ENVI's bad band list is 1 for a good band", field="bbl"
        )
    band_names = tuple(_list_items(raw["band names"])) if "band names" in raw else None
    if band_names is not None and len(band_names) != bands:
        log.warning("%s: 'band names' has %d entries for %d bands; ignored", path, len(band_names), bands)
        band_names = None
    rsf = _float(path, raw, "reflectance scale factor")
    if rsf is not None and rsf == 0:
        raise HeaderError(path, "must not be 0", field="reflectance scale factor")
    map_info = MapInfo.parse(raw["map info"], path) if "map info" in raw else None
    css = _braced_text(raw["coordinate system string"]) if "coordinate system string" in raw else None

    def text(key: str) -> str | None:
        return _braced_text(raw[key]) if key in raw else None

    units = text("wavelength units")
    if units and units.lower() in _NOT_WAVELENGTHS:
        raise HeaderError(
            path,
            f"{units!r}: the spectral axis is not in wavelengths; write the band centres in Nanometers "
            "or Micrometers",
            field="wavelength units",
        )
    ignore = _float(path, raw, "data ignore value")
    if ignore is not None and not math.isnan(ignore) and not _representable(ignore, ENVI_DTYPES[data_type]):
        log.warning(
            "%s: 'data ignore value' %r cannot occur in %s data; ignored",
            path,
            ignore,
            ENVI_DTYPES[data_type],
        )
        ignore = None

    header = EnviHeader(
        path=path,
        samples=samples,
        lines=lines,
        bands=bands,
        data_type=data_type,
        interleave=interleave,
        byte_order=byte_order,
        header_offset=header_offset,
        file_type=text("file type"),
        description=text("description"),
        sensor_type=text("sensor type"),
        acquisition_time=text("acquisition time"),
        map_info=map_info,
        coordinate_system_string=css or None,
        wavelength_units=text("wavelength units"),
        wavelength=lists["wavelength"],
        fwhm=lists["fwhm"],
        bbl=lists["bbl"],
        band_names=band_names,
        data_ignore_value=ignore,
        data_gain_values=lists["data gain values"],
        data_offset_values=lists["data offset values"],
        reflectance_scale_factor=rsf,
        extra=MappingProxyType({k: v for k, v in raw.items() if k not in _KNOWN}),
    )
    nm = header.wavelength_nm
    if nm and not (PLAUSIBLE_NM[0] <= min(nm) and max(nm) <= PLAUSIBLE_NM[1]):
        read_as = f"read as {units}" if units else "no units given"
        raise HeaderError(
            path,
            f"band centres {min(nm):.6g}-{max(nm):.6g} nm ({read_as}) are outside any imaging spectrometer's "
            f"{PLAUSIBLE_NM[0]:g}-{PLAUSIBLE_NM[1]:g} nm: set 'wavelength units' to the unit the values are in",
            field="wavelength units" if units else "wavelength",
        )
    return header


def _representable(value: float, dtype: str) -> bool:
    """Whether ``value`` can be a stored value of ``dtype`` (integers: integral and in range)."""
    if dtype.startswith("float"):
        return True
    if not math.isfinite(value):
        return False
    bits = int(dtype.removeprefix("u").removeprefix("int"))
    lo, hi = (0, 2**bits - 1) if dtype.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return value == int(value) and lo <= value <= hi


def read_header(path: Path | str) -> EnviHeader:
    """Read and validate an ENVI header file."""
    path = Path(path)
    if not path.is_file():
        raise HeaderError(path, "header file not found")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise HeaderError(path, f"cannot read header ({exc})") from None
    return header_from_fields(parse_header_text(text, path), path)


# ----------------------------------------------------------------------------------------------
# Header -> SceneMetadata
# ----------------------------------------------------------------------------------------------


def bands_from_header(
    hdr: EnviHeader,
    *,
    wavelength_nm: Sequence[float] | None = None,
    fwhm_nm: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
) -> tuple[BandInfo, ...]:
    """Band table: header wavelength/fwhm (nm) unless overridden, bbl or default bad windows, scale/offset."""
    wl = list(wavelength_nm) if wavelength_nm is not None else hdr.wavelength_nm
    fw = list(fwhm_nm) if fwhm_nm is not None else hdr.fwhm_nm
    if wl is None:
        raise HeaderError(hdr.path, "no band centre wavelengths (needed for every band)", field="wavelength")
    for key, values in (("wavelength", wl), ("fwhm", fw), ("scale", scales)):
        if values is not None and len(values) != hdr.bands:
            raise HeaderError(
                hdr.path, f"has {len(values)} values but the header says bands = {hdr.bands}", field=key
            )
    if scales is None:
        if hdr.data_gain_values is not None:
            scales = hdr.data_gain_values
        elif hdr.reflectance_scale_factor is not None:
            scales = [1.0 / hdr.reflectance_scale_factor] * hdr.bands
    offsets = hdr.data_offset_values
    out = []
    for i in range(hdr.bands):
        w = float(wl[i])
        fwhm_i = float(fw[i]) if fw is not None else None
        good = bool(hdr.bbl[i] != 0) if hdr.bbl is not None else not is_bad_default(w, fwhm_i)
        out.append(
            BandInfo(
                index=i + 1,
                center_wavelength=w,
                fwhm=float(fw[i]) if fw is not None else None,
                good=good,
                scale=float(scales[i]) if scales is not None else 1.0,
                offset=float(offsets[i]) if offsets is not None else 0.0,
            )
        )
    return tuple(out)


def scene_from_header(
    hdr: EnviHeader,
    *,
    source: str,
    scene_id: str,
    level: str,
    quantity: str,
    data_path: Path | None = None,
    datetime_: datetime | None = None,
    units: str | None = None,
    sensor: str | None = None,
    nodata: float | None = None,
    wavelength_nm: Sequence[float] | None = None,
    fwhm_nm: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    extra: Mapping[str, str] | None = None,
) -> SceneMetadata:
    """:class:`SceneMetadata` of an ENVI cube. ``nodata`` is a default; the header's value wins."""
    data = Path(data_path) if data_path is not None else find_data_file(hdr.path)
    layout = RasterLayout(
        data_path=data,
        header_path=hdr.path,
        width=hdr.samples,
        height=hdr.lines,
        count=hdr.bands,
        dtype=hdr.dtype,
        interleave=hdr.interleave,  # type: ignore[arg-type]
        byte_order=hdr.byte_order_name,  # type: ignore[arg-type]
        header_offset=hdr.header_offset,
    )
    check_data_file(layout)
    bands = bands_from_header(hdr, wavelength_nm=wavelength_nm, fwhm_nm=fwhm_nm, scales=scales)
    ex = dict(hdr.extra)
    for key, value in (
        ("description", hdr.description),
        ("acquisition time", hdr.acquisition_time),
        ("file type", hdr.file_type),
        ("sensor type", hdr.sensor_type),
    ):
        if value:
            ex[key] = value
    ex.update(extra or {})
    return SceneMetadata(
        source=source,
        scene_id=scene_id,
        level=level,
        quantity=quantity,
        layout=layout,
        bands=bands,
        nodata=hdr.data_ignore_value if hdr.data_ignore_value is not None else nodata,
        crs_wkt=map_info_crs_wkt(hdr.map_info, hdr.coordinate_system_string, hdr.path),
        transform=map_info_transform(hdr.map_info) if hdr.map_info is not None else None,
        datetime=datetime_,
        units=units,
        sensor=sensor or hdr.sensor_type,
        extra=MappingProxyType(ex),
    )


# ----------------------------------------------------------------------------------------------
# Writing (synthetic scenes, tests)
# ----------------------------------------------------------------------------------------------


def _fmt(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        items = [_fmt(v) for v in value]
        rows = [", ".join(items[i : i + 8]) for i in range(0, len(items), 8)]
        return "{ " + ",\n  ".join(rows) + " }"
    return str(value)


def format_header(fields: Mapping[str, object]) -> str:
    """ENVI header text for ``fields`` (lists become ``{a, b, ...}``; strings are written verbatim)."""
    return "ENVI\n" + "".join(f"{key} = {_fmt(value)}\n" for key, value in fields.items())
