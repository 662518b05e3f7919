"""The product contract: what a product declares and what it is given.

A product is a small typed unit (:class:`Product`): a name, a semver version, a pydantic params
model (``extra="forbid"``), the spectral inputs it needs, the output bands it writes and a pure
``compute`` function over one chunk of *only* those inputs. Inputs are one of

* :class:`BandRequest` -- one band near a wavelength (nearest good band within a tolerance);
  arrives as a ``(h, w)`` float32 array of physical values, NaN = nodata;
* :class:`BandRange` -- every good band whose centre lies in ``[lo, hi]`` nm (at least
  ``min_bands``); arrives as a ``(n, h, w)`` stack sorted by wavelength;
* :data:`ALL_GOOD_BANDS` -- every good band of the scene (full-spectrum methods); arrives as a
  ``(k, h, w)`` stack under the key ``"spectrum"`` sorted by wavelength.

``compute(bands, params, ctx) -> ndarray (n_out, h, w)``. Two-pass methods set ``fit``:
``fit(reader, params, ctx) -> state`` runs before the compute pass with a :class:`ChunkReader`
that streams the same chunks; the state reaches ``compute`` as ``ctx.state``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from hsi.errors import ProductError

__all__ = [
    "ALL_GOOD_BANDS",
    "SPECTRUM",
    "AllGoodBands",
    "BandRange",
    "BandRequest",
    "ChunkReader",
    "ComputeContext",
    "ComputeFn",
    "FitFn",
    "InputSpec",
    "NoParams",
    "OutputBand",
    "OutputSpec",
    "Params",
    "Product",
    "SelectedBand",
]

FLOAT_NODATA = -9999.0
SPECTRUM = "spectrum"


class Params(BaseModel):
    """Base class for product parameter models: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """A product without parameters."""


@dataclass(frozen=True)
class BandRequest:
    """One band nearest ``wavelength`` (nm); accepted if ``|Δλ| <= tolerance`` (nm)."""

    name: str
    wavelength: float
    tolerance: float

    def describe(self) -> str:
        return f"{self.name}: {self.wavelength:g} nm ± {self.tolerance:g}"


@dataclass(frozen=True)
class BandRange:
    """All good bands with centre in ``[lo, hi]`` nm (sorted by wavelength)."""

    name: str
    lo: float
    hi: float
    min_bands: int = 1

    def describe(self) -> str:
        return f"{self.name}: all good bands in {self.lo:g}-{self.hi:g} nm (>= {self.min_bands})"


@dataclass(frozen=True)
class AllGoodBands:
    """Every good band with a known wavelength (full-spectrum methods)."""

    name: str = SPECTRUM
    min_bands: int = 3

    def describe(self) -> str:
        return f"{self.name}: all good bands (>= {self.min_bands})"


ALL_GOOD_BANDS = AllGoodBands()
InputSpec = BandRequest | BandRange | AllGoodBands


@dataclass(frozen=True)
class SelectedBand:
    """A scene band chosen for a product input."""

    input: str  # input name (e.g. "N", "R700", "spectrum")
    index: int  # 1-based band index in the scene cube
    wavelength: float  # actual centre wavelength (nm)
    requested: float | None = None  # requested wavelength (nm) for BandRequest inputs
    fwhm: float | None = None  # full width at half maximum (nm) when the scene knows it

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "index": self.index,
            "wavelength": self.wavelength,
            "requested": self.requested,
            "fwhm": self.fwhm,
        }


@dataclass(frozen=True)
class OutputBand:
    name: str
    description: str


@dataclass(frozen=True)
class OutputSpec:
    """What a product writes: bands, dtype, nodata and (for classifiers) the class table."""

    bands: tuple[OutputBand, ...]
    dtype: str = "float32"
    nodata: float = FLOAT_NODATA
    classes: Mapping[int, str] | None = None  # class value -> name
    class_band: int | None = None  # 0-based output band holding the classes
    colormap: str = "viridis"  # preview colour map for continuous bands
    class_colors: Mapping[int, tuple[int, int, int]] | None = None
    preview_band: int | None = None  # 0-based band the quicklook shows (default: class band, else 1st)

    @property
    def count(self) -> int:
        return len(self.bands)


@dataclass
class ComputeContext:
    """What ``compute``/``fit`` get besides arrays: selected bands, wavelengths, fit state."""

    product: str
    scene_id: str
    selected: tuple[SelectedBand, ...]
    wavelengths: dict[str, Any]  # input name -> float (BandRequest) or ndarray (ranges)
    output: OutputSpec
    state: Any = None
    window: Any = None  # rasterio Window of the current chunk (None outside the engine)
    # The grid of the whole scene (width, height, crs, transform) and the run's scratch directory;
    # set by the engine (external processors write their input file on this grid).
    grid: Mapping[str, Any] | None = None
    scratch: Any = None  # Path of a directory the run may use (removed with the run's outputs dir)
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"item": <input item dict>}


class ChunkReader(Protocol):
    """Streams the product's input chunks (first pass of two-pass methods).

    ``windows`` lists the chunks' rasterio windows in iteration order (``zip(reader.windows,
    reader)`` pairs each chunk with its place in the scene, e.g. for per-column statistics).
    """

    windows: list[Any]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...


ComputeFn = Callable[[Mapping[str, np.ndarray], Any, ComputeContext], np.ndarray]
FitFn = Callable[[ChunkReader, Any, ComputeContext], Any]


@dataclass(frozen=True)
class Product:
    """One registered product (see module docstring)."""

    name: str
    version: str
    title: str
    inputs: tuple[InputSpec, ...]
    output: OutputSpec
    compute: ComputeFn
    params_model: type[Params] = NoParams
    fit: FitFn | None = None
    # When outputs depend on parameters (e.g. SAM classes come from the reference file).
    output_for: Callable[[Any], OutputSpec] | None = None
    # When inputs depend on parameters (e.g. the wavelength window of a continuum product).
    inputs_for: Callable[[Any], tuple[InputSpec, ...]] | None = None
    # Extra checks on the selected bands (e.g. three *distinct* bands); raise BandSelectionError.
    check_selection: Callable[[Sequence[SelectedBand], str], None] | None = None
    reference: str = ""
    kind: Literal["index", "classifier", "spectral", "other"] = "other"
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The physical quantity the algorithm is defined on. On a radiance scene a "reflectance" product
    # runs on TOA reflectance (recorded in provenance and the key) or refuses (hsi.production).
    needs: Literal["reflectance", "radiance", "any"] = "reflectance"
    # Conventions, masking rules and limits, printed by `hsi products show` (plain text).
    notes: str = ""
    # The physical quantity the input cube must hold (e.g. "radiance"); None = any.
    requires_quantity: str | None = None

    def parse_params(self, params: Mapping[str, Any] | BaseModel | None = None) -> Params:
        """Validate parameters into the product's model; ProductError names the product."""
        if isinstance(params, self.params_model):
            return params
        data: Mapping[str, Any]
        if params is None:
            data = {}
        elif isinstance(params, BaseModel):
            data = params.model_dump()
        else:
            data = params
        try:
            return self.params_model.model_validate(dict(data))
        except ValidationError as exc:
            msgs = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<params>'}: {e['msg']}" for e in exc.errors()
            )
            raise ProductError(f"product '{self.name}': invalid parameters: {msgs}") from exc

    def output_spec(self, params: Any) -> OutputSpec:
        return self.output_for(params) if self.output_for is not None else self.output

    def input_specs(self, params: Any = None) -> tuple[InputSpec, ...]:
        return (
            self.inputs_for(params) if (self.inputs_for is not None and params is not None) else self.inputs
        )

    def with_name(self, name: str) -> Product:
        return replace(self, name=name)

    def input_files(self, params: Any) -> dict[str, str]:
        """Parameter name -> path of every *input file* parameter that is set (fields declared with
        ``json_schema_extra={"input_file": True}``); their content checksums enter the product key."""
        out: dict[str, str] = {}
        for pname, f in self.params_model.model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            value = getattr(params, pname, None)
            if extra.get("input_file") and value not in (None, ""):
                out[pname] = str(value)
        return out

    def check_quantity(self, quantity: str | None, what: str) -> None:
        """ProductError unless the input holds ``requires_quantity`` (``what`` names the input)."""
        if self.requires_quantity is None:
            return
        if quantity is None or not quantity.strip():
            raise ProductError(
                f"product '{self.name}' needs {self.requires_quantity}, but {what} does not say what it "
                f"holds (no hsi:quantity / HSI_QUANTITY): activate the scene with this pipeline"
            )
        if self.requires_quantity.lower() not in quantity.lower():
            raise ProductError(
                f"product '{self.name}' needs {self.requires_quantity}, but {what} holds '{quantity}': "
                f"run it on the scene's {self.requires_quantity} (L1B) item"
            )

    def param_table(self) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, description) for every parameter (for docs and the CLI)."""
        rows = []
        for pname, f in self.params_model.model_fields.items():
            default = "<required>" if f.is_required() else f.default
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
            rows.append((pname, ann, default, f.description or ""))
        return rows


def input_names(inputs: Sequence[InputSpec]) -> list[str]:
    return [i.name for i in inputs]
