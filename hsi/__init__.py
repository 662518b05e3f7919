"""hsi: the domain library of hsi-pipeline (sources, COG writing, products, STAC, catalogs, storage).

Never imports prefect: notebooks and other orchestrators use it directly. ``hsi.open_item`` and
``hsi.open_product`` (lazy xarray views of activated cubes and products) import xarray on first use.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "open_item", "open_product"]


def __getattr__(name: str) -> Any:
    if name in ("open_item", "open_product"):
        from hsi import arrays

        return getattr(arrays, name)
    raise AttributeError(f"module 'hsi' has no attribute {name!r}")
