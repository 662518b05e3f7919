"""AVIRIS-Classic (``aviris-classic``): ``f130329t01p00r06rdn_e_sc01_ort_img`` and friends.

* scene id = the flight/run name ``fYYMMDDtNNpNNrNN`` (``-scNN`` added for a scene of a flight line
  delivered in segments, ``..._sc01_...``); datetime = flight date 00:00 UTC (or the
  header's acquisition time); two-digit years >= 87 are 19xx, else 20xx;
* radiance ``*rdn*..._img``: int16 big-endian BIP; physical = DN / gain, the per-channel gain from the
  ``.gain`` file (scale = 1/gain) -> level ``l1b``, units uW nm-1 cm-2 sr-1;
* reflectance (``_refl`` / ``rfl`` / ``corr`` in the name, or a header that says so) -> ``l2``;
  int16 reflectance without a ``reflectance scale factor`` is taken as x10000 (scale 1e-4);
* centre wavelengths / FWHM from the ``.spc`` file (centre, FWHM, uncertainties, channel) when the
  header has none. The list is **not monotonic** (4 overlapping spectrometers): sensor order is kept.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsi.errors import HeaderError
from hsi.sources.envi import EnviHeader, header_files
from hsi.sources.generic import EnviSource, SceneFacts, header_datetime

__all__ = ["AvirisClassicSource", "find_sidecar", "parse_classic_name", "read_gain", "read_spc"]

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^(f(\d{2})(\d{2})(\d{2})t(\d{2})p(\d{2})r(\d{2}))", re.IGNORECASE)
SIDECARS = ("glt", "igm", "loc", "obs")
_SEGMENT_RE = re.compile(r"_sc(\d{2})(?=[_.]|$)", re.IGNORECASE)
RADIANCE_UNITS = "uW nm-1 cm-2 sr-1"


def parse_classic_name(name: str) -> tuple[str, datetime] | None:
    """``(flight/run id, flight date UTC)`` of an AVIRIS-Classic file or archive name."""
    m = NAME_RE.match(Path(name).name)
    if not m:
        return None
    yy, mm, dd = int(m.group(2)), int(m.group(3)), int(m.group(4))
    try:
        when = datetime(1900 + yy if yy >= 87 else 2000 + yy, mm, dd, tzinfo=UTC)
    except ValueError:
        return None
    return m.group(1).lower(), when


def _is_sidecar(name: str) -> bool:
    """A geometry sidecar's name (GLT / IGM / LOC / OBS token after the flight id), not an image's."""
    return any(p in SIDECARS for p in re.split(r"[_.]", name.lower())[1:])


def _is_reflectance_name(name: str) -> bool:
    return bool(re.search(r"(refl|rfl|corr)", name.lower()))


def _numbers(path: Path, field: str) -> list[list[float]]:
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts or not re.match(r"^[-+.\d]", parts[0]):
            continue  # titles / separators
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise HeaderError(path, f"line {n} is not numeric: {line.strip()!r}", field=field) from None
    return rows


def read_gain(path: Path, bands: int) -> tuple[float, ...]:
    """Per-channel gains of a ``.gain`` file (first number of each line; ``radiance = DN / gain``)."""
    gains = tuple(r[0] for r in _numbers(path, "gain"))
    if len(gains) != bands:
        raise HeaderError(path, f"has {len(gains)} gains but the cube has {bands} bands", field="gain")
    if any(g <= 0 for g in gains):
        raise HeaderError(path, "gains must be > 0", field="gain")
    return gains


def read_spc(path: Path, bands: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(centres nm, FWHM nm)`` of an ``.spc`` file, in channel order as written."""
    rows = _numbers(path, "spc")
    if len(rows) != bands or any(len(r) < 2 for r in rows):
        raise HeaderError(path, f"has {len(rows)} channel rows but the cube has {bands} bands", field="spc")
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows)


def find_sidecar(data_path: Path, suffix: str) -> Path | None:
    """The ``.gain``/``.spc`` next to a cube sharing the longest name prefix with it."""
    parsed = parse_classic_name(data_path.name)
    flight = parsed[0] if parsed else data_path.name[:16].lower()
    cands = [
        p
        for p in data_path.parent.iterdir()
        if p.is_file() and p.suffix.lower() == suffix and p.name.lower().startswith(flight)
    ]

    def common(p: Path) -> int:
        a, b = p.stem.lower(), data_path.name.lower()
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    return max(sorted(cands), key=common) if cands else None


class AvirisClassicSource(EnviSource):
    name = "aviris-classic"
    sensor = "AVIRIS-Classic"

    def matches(self, path: Path | str) -> bool:
        p = Path(path)
        if parse_classic_name(p.name) is not None:
            return True
        return p.is_dir() and any(self.is_cube_header(h) for h in header_files(p))

    def is_cube_header(self, header: Path) -> bool:
        return parse_classic_name(header.name) is not None and not _is_sidecar(header.name)

    def rank(self, header: Path, hint: str) -> tuple[Any, ...]:
        name = header.name.lower()
        want_refl = _is_reflectance_name(hint)
        return (
            _is_reflectance_name(name) != want_refl,
            "ort_img" not in name,
            not name.endswith("img.hdr"),
            name,
        )

    def pick_header(self, directory: Path, origin: Path) -> Path:
        chosen = super().pick_header(directory, origin)
        scenes = sorted(
            {
                m.group(1)
                for h in header_files(directory)
                if self.is_cube_header(h) and (m := _SEGMENT_RE.search(h.name))
            }
        )
        if len(scenes) > 1:  # a tar of a flight line may hold several scenes: one item is one scene
            log.warning(
                "%s holds scenes %s of one flight line; this item is %s: extract it and index each "
                "scene's header for the others",
                origin,
                ", ".join(f"sc{s}" for s in scenes),
                chosen.name,
            )
        return chosen

    def describe(self, hdr: EnviHeader, data_path: Path, origin: Path) -> SceneFacts:
        parsed = parse_classic_name(data_path.name) or parse_classic_name(origin.name)
        if parsed is None:
            raise HeaderError(
                data_path, "not an AVIRIS-Classic name (expected fYYMMDDtNNpNNrNN...)", field="name"
            )
        flight, when = parsed
        if _is_sidecar(data_path.name):
            raise HeaderError(
                data_path,
                "an AVIRIS-Classic geometry sidecar (GLT/IGM/LOC/OBS), not an image: index the scene's "
                "image (..._img) or its directory",
                field="name",
            )
        segment = _SEGMENT_RE.search(data_path.name) or _SEGMENT_RE.search(origin.name)
        if segment:  # a flight line is delivered as scenes sc01, sc02, ...: each is its own item
            flight = f"{flight}-sc{segment.group(1)}"
        refl = (
            _is_reflectance_name(data_path.name) or _is_reflectance_name(origin.name) or hdr.says_reflectance
        )
        return SceneFacts(
            scene_id=flight,
            level="l2" if refl else "l1b",
            quantity="reflectance" if refl else "radiance",
            datetime=header_datetime(hdr) or when,
            units=None if refl else RADIANCE_UNITS,
        )

    def band_overrides(self, hdr: EnviHeader, data_path: Path, facts: SceneFacts) -> dict[str, Any]:
        out: dict[str, Any] = {}
        extra: dict[str, str] = {}
        if hdr.wavelength is None or hdr.fwhm is None:
            spc = find_sidecar(data_path, ".spc")
            if spc is None and hdr.wavelength is None:
                raise HeaderError(
                    hdr.path,
                    f"no wavelength in the header and no .spc file next to {data_path.name}",
                    field="wavelength",
                )
            if spc is not None:
                centres, fwhm = read_spc(spc, hdr.bands)
                if hdr.wavelength is None:
                    out["wavelength_nm"] = centres
                if hdr.fwhm is None:
                    out["fwhm_nm"] = fwhm
                extra["spc file"] = spc.name
        if facts.quantity == "radiance" and hdr.data_gain_values is None:
            gain = find_sidecar(data_path, ".gain")
            if gain is not None:
                out["scales"] = tuple(1.0 / g for g in read_gain(gain, hdr.bands))
                extra["gain file"] = gain.name
            else:
                log.warning("%s: no .gain file; radiance scale left at 1 (raw DN)", data_path)
        elif (
            facts.quantity == "reflectance"
            and hdr.reflectance_scale_factor is None
            and hdr.data_gain_values is None
            and hdr.dtype.startswith("int")
        ):
            out["scales"] = (1e-4,) * hdr.bands
        out["extra"] = extra
        return out
