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

    validator = pystac.validation.JsonSchemaSTACValidator()
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


def validate_item(item: pystac.Item) -> None:
    """Validate against core + every declared extension, offline. Raises STACValidationError."""
    use_offline_schemas()
    item.validate()
