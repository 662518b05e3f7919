"""Generic ENVI source (``envi``) and the base class the sensor sources specialise.

:class:`EnviSource` resolves any input shape to one header + data file:

* a ``.hdr`` file, or a data file with a ``.hdr`` sidecar (GDAL's lookup rules);
* a directory holding one scene (sidecar products are skipped, see :meth:`EnviSource.is_cube_header`);
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` / ``.zip`` archive, extracted safely into ``work_dir`` first.

Subclasses override the naming hooks (:meth:`scene_id`, :meth:`describe`, ...).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsi.errors import HeaderError, UnsupportedSourceError
from hsi.scene import SceneMetadata
from hsi.sources.archive import ArchiveLimits, archive_stem, extract, is_archive
from hsi.sources.envi import (
    EnviHeader,
    find_data_file,
    find_header,
    header_files,
    read_header,
    scene_from_header,
)

__all__ = [
    "EnviSource",
    "GenericEnviSource",
    "SceneFacts",
    "default_work_dir",
    "header_datetime",
    "sanitize_id",
]

log = logging.getLogger(__name__)


def sanitize_id(text: str) -> str:
    """Lower-case id made of ``[a-z0-9-_]`` (other runs become ``-``)."""
    out = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    return out or "scene"


def default_work_dir() -> Path:
    """Where archives are extracted when no ``work_dir`` is given (stable, so re-reads are free)."""
    return Path(tempfile.gettempdir()) / "hsi-extract"


_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2}))?")
_TIME = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})")


def header_datetime(hdr: EnviHeader) -> datetime | None:
    """Acquisition time from ``acquisition time`` or ``acquisition date`` + ``start time`` (UTC)."""
    text = hdr.acquisition_time or hdr.extra.get("acquisition date")
    if not text:
        return None
    m = _ISO.search(text)
    if not m:
        return None
    y, mo, d = (int(v) for v in m.groups()[:3])
    hh = mm = ss = 0
    if m.group(4):
        hh, mm, ss = int(m.group(4)), int(m.group(5)), int(m.group(6))
    elif (t := _TIME.search(hdr.extra.get("start time", ""))) is not None:
        hh, mm, ss = (int(v) for v in t.groups())
    try:
        return datetime(y, mo, d, hh, mm, ss, tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class SceneFacts:
    """What a source adds to the header: identity, level and physical quantity."""

    scene_id: str
    level: str
    quantity: str
    datetime: datetime | None = None
    units: str | None = None
    nodata: float | None = None  # default when the header has no 'data ignore value'


class EnviSource:
    """Base ENVI reader; ``name`` ``envi`` reads anything ENVI-shaped."""

    name = "envi"
    sensor: str | None = None

    # -- hooks -------------------------------------------------------------------------------
    def matches(self, path: Path | str) -> bool:
        p = Path(path)
        if is_archive(p) or p.suffix.lower() == ".hdr":
            return True
        if p.is_dir():
            return bool(header_files(p))
        return find_header(p) is not None

    def is_cube_header(self, header: Path) -> bool:
        """False for headers of sidecar products (never picked in a directory/archive)."""
        return True

    def rank(self, header: Path, hint: str) -> tuple[Any, ...]:
        """Sort key among candidate cube headers; the smallest wins."""
        try:
            size = find_data_file(header).stat().st_size
        except Exception:  # noqa: BLE001 - a header without data just ranks last
            size = -1
        return (-size, header.name)

    def describe(self, hdr: EnviHeader, data_path: Path, origin: Path) -> SceneFacts:
        refl = hdr.says_reflectance
        return SceneFacts(
            scene_id=sanitize_id(_stem(data_path)),
            level="l2" if refl else "l1b",
            quantity="reflectance" if refl else "radiance",
            datetime=header_datetime(hdr),
        )

    def band_overrides(self, hdr: EnviHeader, data_path: Path, facts: SceneFacts) -> Mapping[str, Any]:
        """Extra keyword arguments for :func:`scene_from_header` (wavelength_nm, fwhm_nm, scales, extra)."""
        return {}

    # -- machinery ---------------------------------------------------------------------------
    def pick_header(self, directory: Path, origin: Path) -> Path:
        headers = header_files(directory)
        if not headers:
            raise HeaderError(
                origin, f"no ENVI header (.hdr) found in {'archive' if origin != directory else 'directory'}"
            )
        cubes = [h for h in headers if self.is_cube_header(h)]
        if not cubes:
            raise HeaderError(origin, f"no {self.name} cube header among {[h.name for h in headers]}")
        hint = archive_stem(origin).lower()
        cubes.sort(key=lambda h: self.rank(h, hint))
        if len(cubes) > 1:
            log.info("%s: %d candidate cubes, picked %s", origin, len(cubes), cubes[0].name)
        return cubes[0]

    def locate(
        self, path: Path, work_dir: Path | None = None, limits: ArchiveLimits | None = None
    ) -> tuple[Path, Path | None, Path]:
        """``(header, data file or None, origin)`` for any supported input shape."""
        path = Path(path)
        if not path.exists():
            raise UnsupportedSourceError(f"{path}: input not found")
        if is_archive(path):
            directory = extract(path, work_dir or default_work_dir(), limits)
            try:
                return self.pick_header(directory, path), None, path
            except HeaderError:  # an archive without a cube header: its extraction is of no use
                shutil.rmtree(directory, ignore_errors=True)
                raise
        if path.is_dir():
            return self.pick_header(path, path), None, path
        if path.suffix.lower() == ".hdr":
            return path, None, path
        header = find_header(path)
        if header is None:
            raise HeaderError(path, "no ENVI header next to the data file (tried <file>.hdr and <stem>.hdr)")
        return header, path, path

    def read(
        self, path: Path, work_dir: Path | None = None, limits: ArchiveLimits | None = None
    ) -> SceneMetadata:
        """Metadata of the scene at ``path``; archives are extracted into ``work_dir`` within ``limits``."""
        header, data, origin = self.locate(Path(path), work_dir, limits)
        return self.read_located(header, data, origin)

    def read_located(self, header: Path, data: Path | None, origin: Path) -> SceneMetadata:
        """Metadata of the scene whose header :meth:`locate` found."""
        hdr = read_header(header)
        data = data or find_data_file(header)
        facts = self.describe(hdr, data, origin)
        extra = {"origin": str(origin)}
        kwargs = dict(self.band_overrides(hdr, data, facts))
        extra.update(kwargs.pop("extra", {}))
        meta = scene_from_header(
            hdr,
            source=self.name,
            scene_id=facts.scene_id,
            level=facts.level,
            quantity=facts.quantity,
            data_path=data,
            datetime_=facts.datetime,
            units=facts.units,
            sensor=self.sensor,
            nodata=facts.nodata,
            extra=extra,
            **kwargs,
        )
        log.info(
            "read %s scene %s (%dx%dx%d %s %s) from %s",
            self.name,
            meta.scene_id,
            meta.layout.width,
            meta.layout.height,
            meta.layout.count,
            meta.layout.dtype,
            meta.layout.interleave,
            origin,
        )
        return meta

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class GenericEnviSource(EnviSource):
    """Any ENVI cube: id = sanitised file stem, l2 when the header says reflectance, else l1b.

    A directory or archive whose content a sensor's reader recognises (an AVIRIS-NG delivery packed
    as ``download.tar.gz``: detection goes by name, and the name says nothing) is read by that
    reader, so the scene gets its sensor's id, time, units and sidecars."""

    name = "envi"

    def read(
        self, path: Path, work_dir: Path | None = None, limits: ArchiveLimits | None = None
    ) -> SceneMetadata:
        header, data, origin = self.locate(Path(path), work_dir, limits)
        if data is None:  # a directory or an extracted archive
            from hsi.sources import get_source, list_sources  # the registry imports this module

            for name in list_sources():
                sensor = get_source(name)
                if name != self.name and isinstance(sensor, EnviSource) and sensor.matches(header.parent):
                    log.info("%s: read as %s (its content)", origin, name)
                    h, d, _ = sensor.locate(header.parent, work_dir, limits)
                    return sensor.read_located(h, d, origin)
        return self.read_located(header, data, origin)


def _stem(data_path: Path) -> str:
    name = data_path.name
    suffix = data_path.suffix
    if suffix and len(suffix) <= 5 and suffix[1:].isalpha():
        name = name[: -len(suffix)]
    return name
