"""Provenance: who made an item, from what, with which algorithm, parameters and software.

The orchestration layer (tasks/) fills :class:`RunInfo` from the Prefect flow-run metadata
(``prefect.runtime``); this module has no Prefect dependency and works the same for a notebook
run (``RunInfo`` all ``None``).

The *key* of a derived item is a hash of everything that determines its content: input item ids
and asset checksums, algorithm name and version, and the parameters. Same key = same result;
a changed algorithm version or parameter = stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any

import pystac

__all__ = [
    "InputRef",
    "Provenance",
    "RunInfo",
    "apply_provenance",
    "derivation_key",
    "software_versions",
]

PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"


@dataclass(frozen=True)
class RunInfo:
    """The orchestrator run that made an item (a Prefect flow run), plus what triggered it."""

    flow_run_id: str | None = None
    flow_run_name: str | None = None
    flow_name: str | None = None
    deployment_id: str | None = None
    deployment_name: str | None = None
    work_pool: str | None = None
    ui_url: str | None = None
    trigger: Mapping[str, Any] | None = None  # e.g. {"event_id": ..., "event": ..., "automation": ...}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "id": d.pop("flow_run_id"),
            "name": d.pop("flow_run_name"),
            **{k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items()},
        }


@dataclass(frozen=True)
class InputRef:
    """An input STAC item and the checksums of the assets that were read."""

    collection: str
    id: str
    href: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)  # asset key -> multihash

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "id": self.id,
            "checksums": dict(sorted(self.checksums.items())),
        }


def derivation_key(
    inputs: Sequence[InputRef], algorithm: str, version: str, parameters: Mapping[str, Any]
) -> str:
    """sha256 over input ids + asset checksums + algorithm name + version + parameters (canonical JSON)."""
    doc = {
        "inputs": sorted((i.as_dict() for i in inputs), key=lambda d: (d["collection"], d["id"])),
        "algorithm": algorithm,
        "version": version,
        "parameters": parameters,
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_SOFTWARE = ("hsi-pipeline", "rasterio", "rio-cogeo", "numpy", "pystac", "spyndex", "prefect")


def software_versions(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Versions of the software that shaped the result (installed distributions + GDAL)."""
    out = dict(_installed_versions())
    out.update(extra or {})
    return dict(sorted(out.items()))


@cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """Read once per process (the distribution metadata costs ~60 ms per item otherwise)."""
    out: dict[str, str] = {}
    for dist in _SOFTWARE:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import rasterio

    out["GDAL"] = rasterio.__gdal_version__
    return tuple(out.items())


@dataclass(frozen=True)
class Provenance:
    """Everything :func:`apply_provenance` writes onto an item."""

    algorithm: str
    algorithm_version: str
    parameters: Mapping[str, Any]
    inputs: Sequence[InputRef]
    level: str  # processing:level, e.g. "L1B", "L2", "L3"
    lineage: str
    run: RunInfo = field(default_factory=RunInfo)
    software: Mapping[str, str] = field(default_factory=software_versions)
    processed: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: the parameters the key was computed from, when the recorded ``parameters`` are what was
    #: actually written (e.g. an automatic predictor resolved to 2); default: ``parameters``
    key_parameters: Mapping[str, Any] | None = None

    @property
    def key(self) -> str:
        params = self.parameters if self.key_parameters is None else self.key_parameters
        return derivation_key(self.inputs, self.algorithm, self.algorithm_version, params)


def apply_provenance(item: pystac.Item, prov: Provenance) -> pystac.Item:
    """Processing-extension fields, hsi fields, ``derived_from`` and ``via`` links on ``item``."""
    if PROCESSING_EXTENSION not in item.stac_extensions:
        item.stac_extensions.append(PROCESSING_EXTENSION)
    from hsi.stac.validation import HSI_EXTENSION

    if HSI_EXTENSION not in item.stac_extensions:
        item.stac_extensions.append(HSI_EXTENSION)
    p = item.properties
    p["processing:lineage"] = prov.lineage
    p["processing:level"] = prov.level
    p["processing:software"] = dict(prov.software)
    p["processing:datetime"] = prov.processed.astimezone(UTC).isoformat().replace("+00:00", "Z")
    p["processing:version"] = prov.algorithm_version  # of the algorithm that made this item (also in the key)
    if prov.run.flow_run_id:
        p["processing:facility"] = "prefect"
    p["hsi:product_key"] = prov.key
    p["hsi:algorithm"] = {"name": prov.algorithm, "version": prov.algorithm_version}
    p["hsi:parameters"] = json.loads(json.dumps(dict(prov.parameters), default=str))
    p["hsi:inputs"] = [i.as_dict() for i in prov.inputs]
    p["hsi:flow_run"] = prov.run.as_dict()
    item.links = [lk for lk in item.links if lk.rel not in ("derived_from", "via")]
    for i in prov.inputs:
        if i.href:
            item.add_link(
                pystac.Link(
                    "derived_from", i.href, media_type="application/geo+json", title=f"{i.collection}/{i.id}"
                )
            )
    if prov.run.ui_url:
        item.add_link(
            pystac.Link(
                "via",
                prov.run.ui_url,
                media_type="text/html",
                title=f"Prefect flow run {prov.run.flow_run_name}",
            )
        )
    return item
