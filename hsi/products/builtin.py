"""Built-in products, registered through the ``hsi.products`` entry point like any plugin.

``pyproject.toml``: ``[project.entry-points."hsi.products"] builtin = "hsi.products.builtin:register"``.
"""

from __future__ import annotations

from hsi.products.indices import narrow_band_products, spyndex_index_names, spyndex_product
from hsi.products.methane import methane_product
from hsi.products.oil import oil_spill_product
from hsi.products.registry import ProductRegistry
from hsi.products.spectral import continuum_depth_product, pca_product, sam_product
from hsi.products.vegetation import tree_mortality_product

__all__ = ["register"]


def register(registry: ProductRegistry) -> None:
    """Register the built-in products and the ``index:<spyndex name>`` family."""
    for p in narrow_band_products():
        registry.register(p)
    for p in (
        oil_spill_product(),
        tree_mortality_product(),
        sam_product(),
        pca_product(),
        continuum_depth_product(),
        methane_product(),
    ):
        registry.register(p)
    registry.add_resolver("index:", spyndex_product, spyndex_index_names)
