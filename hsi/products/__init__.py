"""Products: registry, band selection, windowed engine, previews and the built-in families.

>>> from hsi.products import get_product, run_product
>>> result = run_product(get_product("index:NDVI"), "scene.tif", "ndvi.tif")  # doctest: +SKIP

Products are discovered through the ``hsi.products`` entry-point group (see
:mod:`hsi.products.registry`); built-ins live in :mod:`hsi.products.builtin`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from hsi.products.bands import select_bands
from hsi.products.base import (
    ALL_GOOD_BANDS,
    AllGoodBands,
    BandRange,
    BandRequest,
    ComputeContext,
    NoParams,
    OutputBand,
    OutputSpec,
    Params,
    Product,
    SelectedBand,
)
from hsi.products.registry import (
    ENTRY_POINT_GROUP,
    ProductRegistry,
    default_registry,
    get_product,
    list_products,
    reset_default_registry,
)

if TYPE_CHECKING:
    from hsi.products.engine import compute_array, run_product
    from hsi.products.preview import write_preview
    from hsi.products.results import ProductResult

# The windowed engine and the preview import rasterio: they load on first use (PEP 562), so the
# registry (`hsi products show`, config checks, processor registration) answers well under a second.
_LAZY = {
    "ProductResult": "hsi.products.results",
    "compute_array": "hsi.products.engine",
    "run_product": "hsi.products.engine",
    "write_preview": "hsi.products.preview",
}


__all__ = [
    "ALL_GOOD_BANDS",
    "ENTRY_POINT_GROUP",
    "AllGoodBands",
    "BandRange",
    "BandRequest",
    "ComputeContext",
    "NoParams",
    "OutputBand",
    "OutputSpec",
    "Params",
    "Product",
    "ProductRegistry",
    "ProductResult",
    "SelectedBand",
    "compute_array",
    "default_registry",
    "get_product",
    "list_products",
    "reset_default_registry",
    "run_product",
    "select_bands",
    "write_preview",
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
