"""hsi: the domain library of hsi-pipeline (sources, COG writing, products, STAC, catalogs, storage).

Never imports prefect: notebooks and other orchestrators use it directly.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
