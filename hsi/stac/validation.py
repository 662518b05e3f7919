"""Offline STAC validation: pystac's validator primed with the vendored extension schemas.

pystac bundles only the core schemas and fetches extension schemas from the web on
``item.validate()``. The schemas this project uses are vendored under ``hsi/stac/schemas``
(released versions, Apache-2.0, see the LICENSE files) together with the project's own extension.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pystac

if TYPE_CHECKING:  # jsonschema (through pystac.validation) loads on the first validation
    import pystac.validation

__all__ = ["HSI_EXTENSION", "use_offline_schemas", "validate_item"]

SCHEMA_DIR = Path(__file__).parent / "schemas"
HSI_EXTENSION = "https://hsi-pipeline.github.io/stac-extension/v1.0.0/schema.json"


@cache
def use_offline_schemas() -> pystac.validation.JsonSchemaSTACValidator:
    """Install (once) a pystac validator that resolves every known extension schema locally."""
    import pystac.validation

    validator = _cached_validator_class()()
    for path in sorted(SCHEMA_DIR.glob("*/v*/schema.json")):
        ext, version = path.parent.parent.name, path.parent.name
        schema = json.loads(path.read_text())
        if ext == "hsi":
            uri = HSI_EXTENSION
        else:
            uri = f"https://stac-extensions.github.io/{ext}/{version}/schema.json"
        schema["$id"] = uri
        validator.schema_cache[uri] = schema
        validator.schema_cache[uri + "#"] = schema
    pystac.validation.set_validator(validator)
    return validator


def _cached_validator_class() -> type[pystac.validation.JsonSchemaSTACValidator]:
    """pystac's validator, with each schema checked and compiled once per process instead of on every
    validation (pystac 1.x re-checks the schema and rebuilds the reference registry per call: ~0.7 s
    per product item here; cached: a few ms). Same schemas, same errors."""
    import jsonschema
    import pystac.validation
    from pystac.errors import STACValidationError

    class CachedValidator(pystac.validation.JsonSchemaSTACValidator):
        def __init__(self) -> None:
            super().__init__()
            self._compiled: dict[str, object] = {}
            self._registry: object | None = None

        def _validate_from_uri(
            self,
            stac_dict: dict[str, object],
            stac_object_type: object,
            schema_uri: str,
            href: str | None = None,
        ) -> None:
            v = self._compiled.get(schema_uri)
            if v is None:
                schema = self._get_schema(schema_uri)
                cls = jsonschema.validators.validator_for(schema)
                cls.check_schema(schema)
                if self._registry is None:
                    self._registry = self.registry
                v = self._compiled[schema_uri] = cls(schema, registry=self._registry)
            errors = list(v.iter_errors(stac_dict))  # type: ignore[attr-defined]
            if errors:
                sid = stac_dict.get("id")
                msg = f"Validation failed for {stac_object_type} " + (f"at {href} " if href else "")
                msg += (f"with ID {sid} " if sid is not None else "") + f"against schema at {schema_uri}"
                best = jsonschema.exceptions.best_match(errors)
                if best:
                    msg += "\n" + str(best)
                raise STACValidationError(msg, source=errors) from best

    return CachedValidator


def validate_item(item: pystac.Item) -> None:
    """Validate against core + every declared extension, offline. Raises STACValidationError."""
    use_offline_schemas()
    item.validate()
