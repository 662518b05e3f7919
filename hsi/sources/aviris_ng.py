"""AVIRIS-NG (``aviris-ng``): ``ang20150420t182050_rdn_v1e_img`` / ``_rfl_v2p9_img`` / ``_corr_v1f_img``
(and, from 2023, ``ang20231109t092617_027_L2A_OE_main_27577724_RFL_ORT``).

* scene id = ``angYYYYMMDDtHHMMSS``; datetime from the name (UTC);
* ``rdn`` -> level ``l1b``, radiance in uW nm-1 cm-2 sr-1; ``rfl`` / ``corr`` -> ``l2`` reflectance,
  nodata -9999 unless the header says otherwise;
* float32 BIL little-endian, 425 bands (whatever the header says is what is read);
* sidecar products (``_glt``, ``_igm``, ``_loc``, ``_obs``, ``_obs_ort``, ``_h2o``) are never
  picked as the cube of a directory or archive.
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
from hsi.sources.ng_sidecars import find_sidecars

__all__ = ["AvirisNgSource", "RADIANCE_UNITS", "parse_ng_name"]

log = logging.getLogger(__name__)

RADIANCE_UNITS = "uW nm-1 cm-2 sr-1"
NAME_RE = re.compile(r"^(ang(\d{8})t(\d{6}))(?:_([a-z0-9_]+))?", re.IGNORECASE)
SIDECARS = ("glt", "igm", "loc", "obs", "h2o")
_PRODUCTS = {"rdn": ("l1b", "radiance"), "rfl": ("l2", "reflectance"), "corr": ("l2", "reflectance")}
# 2023 on (e.g. BioSCape): ang20231109t092617_027_L2A_OE_main_27577724_RFL_ORT: the product code is a
# later token, the processing level another
_LEVEL_TOKENS = {"l1b": "rdn", "l2a": "rfl"}


def parse_ng_name(name: str) -> tuple[str, datetime, str | None] | None:
    """``(scene id, UTC datetime, product tag or None)`` of an AVIRIS-NG file/archive name."""
    m = NAME_RE.match(Path(name).name)
    if not m:
        return None
    try:
        when = datetime.strptime(m.group(2) + m.group(3), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    tokens = m.group(4).lower().split("_") if m.group(4) else []
    tag = next((t for t in tokens if t in _PRODUCTS), None)
    if tag is None:
        tag = next((_LEVEL_TOKENS[t] for t in tokens if t in _LEVEL_TOKENS), tokens[0] if tokens else None)
    return m.group(1).lower(), when, tag


def _is_sidecar(name: str) -> bool:
    parts = re.split(r"[_.]", name.lower())
    return any(p in SIDECARS for p in parts[1:])


class AvirisNgSource(EnviSource):
    name = "aviris-ng"
    sensor = "AVIRIS-NG"

    def matches(self, path: Path | str) -> bool:
        p = Path(path)
        if parse_ng_name(p.name) is not None:
            return True
        return p.is_dir() and any(self.is_cube_header(h) for h in header_files(p))

    def is_cube_header(self, header: Path) -> bool:
        parsed = parse_ng_name(header.name)
        return parsed is not None and not _is_sidecar(header.name)

    def rank(self, header: Path, hint: str) -> tuple[Any, ...]:
        parsed = parse_ng_name(header.name)
        tag = parsed[2] if parsed else None
        hinted = tag is not None and f"_{tag}" in hint
        order = {"rfl": 0, "corr": 1, "rdn": 2}.get(tag or "", 3)
        return (not hinted, order, not header.name.lower().endswith("_img.hdr"), header.name)

    def describe(self, hdr: EnviHeader, data_path: Path, origin: Path) -> SceneFacts:
        parsed = parse_ng_name(data_path.name) or parse_ng_name(origin.name)
        if parsed is None:
            raise HeaderError(
                data_path, "not an AVIRIS-NG name (expected angYYYYMMDDtHHMMSS_...)", field="name"
            )
        scene_id, when, tag = parsed
        if _is_sidecar(data_path.name):
            raise HeaderError(
                data_path,
                "an AVIRIS-NG sidecar (GLT/IGM/LOC/OBS/H2O), not an image: index the scene's image "
                "(..._img) or its directory; its sidecars are found next to it",
                field="name",
            )
        if tag in _PRODUCTS:
            level, quantity = _PRODUCTS[tag]
        else:
            level, quantity = ("l2", "reflectance") if hdr.says_reflectance else ("l1b", "radiance")
            log.warning("%s: no rdn/rfl/corr tag in the name; assuming %s", data_path, quantity)
        return SceneFacts(
            scene_id=scene_id,
            level=level,
            quantity=quantity,
            datetime=header_datetime(hdr) or when,
            units=RADIANCE_UNITS if quantity == "radiance" else None,
            nodata=-9999.0 if quantity == "reflectance" else None,
        )

    def band_overrides(self, hdr: EnviHeader, data_path: Path, facts: SceneFacts) -> dict[str, Any]:
        parsed = parse_ng_name(data_path.name)
        extra = {"product": parsed[2]} if parsed and parsed[2] else {}
        # GLT / IGM / LOC / OBS / OBS_ORT next to the image (single files or an extracted archive)
        extra.update({f"sidecar_{k}": str(p) for k, p in find_sidecars(data_path).items()})
        return {"extra": extra} if extra else {}
