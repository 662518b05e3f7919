"""ENVI files on disk: the headers in a directory, a data file's header, a header's data file and
its size against the header (GDAL's naming rules, any case)."""

from __future__ import annotations

import re
from pathlib import Path

from hsi.errors import DataFileError
from hsi.scene import RasterLayout

__all__ = ["check_data_file", "find_data_file", "find_header", "glob_escape", "header_files"]


_NOT_DATA_SUFFIXES = {
    ".hdr",
    ".sta",
    ".xml",
    ".aux",
    ".txt",
    ".json",
    ".npy",
    ".gain",
    ".spc",
    ".png",
    ".jpg",
}


def header_files(directory: Path, *, recursive: bool = True) -> list[Path]:
    """ENVI headers in ``directory`` (``.hdr`` in any case: deliveries of upper-case names end in
    ``.HDR``), sorted."""
    found = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(h for h in found if h.suffix.lower() == ".hdr" and h.is_file())


def find_header(path: Path) -> Path | None:
    """Header of a data file, as GDAL looks for it: ``<file>.hdr`` then ``<stem>.hdr`` (any case)."""
    path = Path(path)
    candidates = [
        Path(f"{path}.hdr"),
        Path(f"{path}.HDR"),
        path.with_suffix(".hdr"),
        path.with_suffix(".HDR"),
    ]
    return next((c for c in candidates if c.is_file() and c != path), None)


def find_data_file(header_path: Path) -> Path:
    """Binary data file of a header: ``x.hdr`` -> ``x`` or ``x.<ext>`` (``.img``, ``.dat``, ...)."""
    header_path = Path(header_path)
    stem = header_path.name[: -len(header_path.suffix)] if header_path.suffix.lower() == ".hdr" else None
    if stem is None:
        raise DataFileError(header_path, "not a .hdr file; cannot derive the data file name")
    direct = header_path.with_name(stem)
    if direct.is_file():
        return direct
    siblings = sorted(
        p
        for p in header_path.parent.glob(f"{glob_escape(stem)}.*")
        if p.is_file() and p.suffix.lower() not in _NOT_DATA_SUFFIXES and p.name[: -len(p.suffix)] == stem
    )
    if siblings:
        return siblings[0]
    raise DataFileError(
        header_path.with_name(stem),
        f"data file for header {header_path.name} not found (tried {stem} and {stem}.<ext>)",
    )


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def check_data_file(layout: RasterLayout) -> None:
    """Raise :class:`DataFileError` unless the data file exists with exactly the expected size."""
    path = layout.data_path
    if not path.is_file():
        raise DataFileError(path, "data file not found")
    found = path.stat().st_size
    expected = layout.expected_size
    if found < expected:
        raise DataFileError(
            path,
            f"data file truncated: expected {expected} bytes, found {found} "
            f"(header offset {layout.header_offset} + {layout.width}x{layout.height}x"
            f"{layout.count} {layout.dtype}): copy or download it again",
        )
    if found > expected:
        raise DataFileError(
            path,
            f"data file larger than its header says: expected {expected} bytes, "
            f"found {found}; samples/lines/bands/data type/header offset disagree with the file",
        )
