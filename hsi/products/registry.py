"""Product registry, fed by entry points of group ``hsi.products``.

Every entry point is a callable ``register(registry)``; built-ins register the same way
(``builtin = "hsi.products.builtin:register"`` in pyproject). When the project runs from a
source checkout that is not installed (no ``hsi-pipeline`` dist-info, hence no entry point),
the built-in ``register`` is still called once, so the library works uninstalled.

Besides fixed names, a registry holds *resolvers*: a prefix (e.g. ``"index:"``) plus a function
turning the rest of a name into a product (spyndex indices are resolved this way).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import threading
from collections.abc import Callable, Iterable

from hsi.errors import ProductError
from hsi.names import close_matches
from hsi.products.base import Product

__all__ = [
    "ENTRY_POINT_GROUP",
    "ProductRegistry",
    "default_registry",
    "get_product",
    "list_products",
    "reset_default_registry",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hsi.products"
_BUILTIN_TARGET = "hsi.products.builtin:register"

Resolver = Callable[[str], Product | None]


class ProductRegistry:
    """Name -> :class:`Product`, plus prefix resolvers for dynamic families."""

    def __init__(self) -> None:
        self._products: dict[str, Product] = {}
        self._resolvers: dict[str, tuple[Resolver, Callable[[], Iterable[str]]]] = {}
        self._cache: dict[str, Product] = {}
        self.sources: dict[str, str] = {}  # product/prefix -> entry point that registered it
        self._current_source = "<direct>"

    # --- registration -------------------------------------------------------------------
    def register(self, product: Product, *, replace: bool = False) -> Product:
        if product.name in self._products and not replace:
            raise ProductError(
                f"product '{product.name}' is already registered (by {self.sources.get(product.name)})"
            )
        self._products[product.name] = product
        self.sources[product.name] = self._current_source
        return product

    def add_resolver(self, prefix: str, resolve: Resolver, names: Callable[[], Iterable[str]]) -> None:
        """Names ``<prefix><rest>`` resolve through ``resolve(rest)``; ``names()`` lists the rests."""
        self._resolvers[prefix] = (resolve, names)
        self.sources[prefix + "*"] = self._current_source

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Call every ``register`` entry point of ``group``; returns the entry point names loaded."""
        loaded: list[str] = []
        saw_builtin = False
        for ep in md.entry_points(group=group):
            if ep.value.replace(" ", "") == _BUILTIN_TARGET:
                if saw_builtin:
                    continue
                saw_builtin = True
            self._call(ep.name, ep.load())
            loaded.append(ep.name)
        if not saw_builtin:  # uninstalled source checkout: same function, called directly
            from hsi.products.builtin import register

            self._call("builtin", register)
            loaded.append("builtin")
        return loaded

    def _call(self, source: str, fn: Callable[[ProductRegistry], object]) -> None:
        self._current_source = source
        try:
            fn(self)
        except ProductError:
            raise
        except Exception as exc:  # a broken plugin must name itself
            raise ProductError(f"product entry point '{source}' failed to register: {exc}") from exc
        finally:
            self._current_source = "<direct>"

    # --- lookup ---------------------------------------------------------------------------
    def get(self, name: str) -> Product:
        if name in self._products:
            return self._products[name]
        if name in self._cache:
            return self._cache[name]
        for prefix, (resolve, _) in self._resolvers.items():
            if name.startswith(prefix):
                product = resolve(name[len(prefix) :])
                if product is not None:
                    self._cache[name] = product
                    return product
        raise ProductError(self._unknown_message(name))

    def names(self) -> list[str]:
        out = sorted(self._products)
        for prefix, (_, names) in sorted(self._resolvers.items()):
            out.extend(prefix + n for n in sorted(names()))
        return out

    def _unknown_message(self, name: str) -> str:
        names = self.names()
        close = close_matches(name, names)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        return f"unknown product '{name}'{hint} ({len(names)} products available; see `hsi products list`)"


_default: ProductRegistry | None = None
_lock = threading.Lock()


def default_registry() -> ProductRegistry:
    """The process-wide registry, loaded from entry points on first use."""
    global _default
    with _lock:
        if _default is None:
            reg = ProductRegistry()
            reg.load_entry_points()
            _default = reg
        return _default


def reset_default_registry() -> None:
    """Forget the loaded registry (entry points are re-read on next use; for tests/plugins)."""
    global _default
    with _lock:
        _default = None


def get_product(name: str) -> Product:
    """Look a product up by name (``oil-spill``, ``index:NDVI`` ...); ProductError if unknown."""
    return default_registry().get(name)


def list_products() -> list[str]:
    """All product names, fixed ones first then dynamic families (``index:*``)."""
    return default_registry().names()
