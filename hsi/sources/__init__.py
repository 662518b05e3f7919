"""Input sources: one per sensor/format, each turning files into a :class:`~hsi.scene.SceneMetadata`.

>>> from hsi.sources import read_scene
>>> meta = read_scene("ang20150420t182050_rfl_v2p9.tar.gz", work_dir=Path("/tmp/work"))  # doctest: +SKIP

A source accepts the header, the data file, a directory holding one scene or a ``.tar.gz`` /
``.tgz`` / ``.tar`` / ``.zip`` archive (extracted safely into ``work_dir``). :func:`detect_source`
tries the most specific sources first: ``emit`` (netCDF4 granules), ``aviris-ng``, ``aviris-classic``, then the generic ``envi``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from hsi.errors import UnsupportedSourceError
from hsi.scene import SceneMetadata
from hsi.sources.archive import ArchiveLimits, extract
from hsi.sources.aviris_classic import AvirisClassicSource
from hsi.sources.aviris_ng import AvirisNgSource
from hsi.sources.emit import EmitSource, parse_emit_name
from hsi.sources.generic import GenericEnviSource

__all__ = [
    "ArchiveLimits",
    "Source",
    "detect_source",
    "extract",
    "get_source",
    "list_sources",
    "read_scene",
    "register_source",
]


@runtime_checkable
class Source(Protocol):
    """What every input source provides."""

    name: str

    def matches(self, path: Path | str) -> bool:
        """True when the file/directory/archive *name* looks like this source's product."""
        ...

    def read(self, path: Path, work_dir: Path | None = None) -> SceneMetadata:
        """Metadata of the scene at ``path`` (header, data file, directory or archive)."""
        ...


# Detection order = registration order: most specific first, generic ENVI last.
_SOURCES: dict[str, Source] = {}


def register_source(source: Source, *, first: bool = False) -> None:
    """Add (or replace) a source. ``first=True`` puts it before the built-ins in detection order."""
    global _SOURCES
    if first:
        _SOURCES = {source.name: source, **{k: v for k, v in _SOURCES.items() if k != source.name}}
    else:
        _SOURCES[source.name] = source
        if "envi" in _SOURCES and source.name != "envi":  # keep the generic fallback last
            _SOURCES["envi"] = _SOURCES.pop("envi")


for _src in (EmitSource(), AvirisNgSource(), AvirisClassicSource(), GenericEnviSource()):
    register_source(_src)


def list_sources() -> list[str]:
    """Source names in detection order."""
    return list(_SOURCES)


def get_source(name: str) -> Source:
    try:
        return _SOURCES[name]
    except KeyError:
        raise UnsupportedSourceError(f"unknown source {name!r}; known: {', '.join(_SOURCES)}") from None


def detect_source(path: Path | str) -> Source:
    """The most specific source whose naming rules match ``path``."""
    p = Path(path)
    for source in _SOURCES.values():
        if source.matches(p):
            return source
    if "emit" in _SOURCES and parse_emit_name(p.name) is not None:  # OBS, MASK, RFLUNCERT: it says why
        return _SOURCES["emit"]
    raise UnsupportedSourceError(
        f"{p}: no source can read this input (not an ENVI header/data file, scene directory or archive); "
        f"known sources: {', '.join(_SOURCES)}"
    )


def read_scene(
    path: Path | str,
    source: str | None = None,
    work_dir: Path | None = None,
    limits: ArchiveLimits | None = None,
) -> SceneMetadata:
    """Read the metadata of one scene, detecting the source unless ``source`` is given.

    ``limits`` bound the expansion of an archive (passed to sources that take it)."""
    src = get_source(source) if source else detect_source(path)
    wd = Path(work_dir) if work_dir is not None else None
    if limits is not None:
        return src.read(Path(path), work_dir=wd, limits=limits)  # type: ignore[call-arg]
    return src.read(Path(path), work_dir=wd)
