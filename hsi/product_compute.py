"""Computing product runs: one plan's COG and preview PNG, or many plans on one open cube.

    plan (:mod:`hsi.production`) -> compute (windowed engine, reads only the selected bands through
      GDAL; on a Dask target the windows of a large cube go to the workers) -> COG + preview PNG

:func:`compute` is the step the product task wraps; :func:`compute_many` is the batch's per-scene
step, opening each cube once for all its plans. Upload and registration stay in
:mod:`hsi.production`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio

from hsi.errors import InvalidInputError
from hsi.indexing import find_raw_item
from hsi.production import ConfigSourceEnv, ProductPlan, dask_target, source_env
from hsi.products import ProductResult, get_product, run_product, write_preview
from hsi.products.engine import QUANTITY_TAG, iter_windows, open_source, run_on_dataset
from hsi.products.sensor import run_product_sensor
from hsi.quantities import PIPELINE_RECORDS, build_adjustments
from hsi.scene import bands_from_dataset
from hsi.services import Services

__all__ = ["Computed", "OpenCube", "compute", "compute_many"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Computed:
    files: Mapping[str, Path]  # asset key -> local file ("data": COG, "thumbnail": PNG)
    result: ProductResult
    proj: Mapping[str, Any]  # proj:code / proj:wkt2, proj:shape, proj:transform of the COG
    classes: Mapping[int, str] | None = None


def _proj_fields(cog: Path) -> dict[str, Any]:
    with rasterio.open(cog) as ds:
        return _proj_of(ds)


def _proj_of(ds: Any) -> dict[str, Any]:
    """proj:* fields of a grid (anything with rasterio's ``crs``, ``transform``, ``width``, ``height``)."""
    epsg = ds.crs.to_epsg() if ds.crs else None
    out: dict[str, Any] = {
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:shape": [ds.height, ds.width],
        "proj:transform": list(ds.transform)[:6],
    }
    if ds.crs and not epsg:
        out["proj:wkt2"] = ds.crs.to_wkt()
    return out


@dataclass
class OpenCube:
    """An activated cube opened once for several products (:func:`compute_many`): the dataset, its
    band table and the quantity it holds."""

    href: str
    path: str
    ds: Any
    bands: Sequence[Any]
    quantity: str | None


def _shares_cube(services: Services, plan: ProductPlan) -> bool:
    """Whether ``plan`` can run on the plain windowed engine over its cube (what an :class:`OpenCube`
    serves): not an external processor, no input adjustment, no sensor geometry. With a Dask target
    only a cube of one window does (:func:`_local_cube`)."""
    i = plan.inputs
    if i is not None and (i.geometry == "sensor" or i.factors is not None or i.mask_href is not None):
        return False
    return "processor" not in get_product(plan.product).extra


def _local_cube(services: Services, ds: Any, window_size: int = 512) -> bool:
    """Whether products of the open cube ``ds`` are computed in this process: always without a Dask
    target; with one, when the cube is a single window (the engine computes one window here: a
    product of a small scene is cheaper computed than shipped to a worker). The windows are the
    engine's own (:func:`~hsi.products.engine.iter_windows`)."""
    if not dask_target(services):
        return True
    windows = iter_windows(ds.width, ds.height, ds.block_shapes[0], window_size)
    return next(windows, None) is not None and next(windows, None) is None


def compute_many(
    services: Services, plans: Sequence[ProductPlan], out_dirs: Sequence[Path]
) -> list[Computed | BaseException]:
    """Several products, each into its ``out_dirs`` entry, with each cube opened (and its band table
    read) once for all the plans on it: the batch's per-scene step. A plan's failure is returned in
    its place, never raised; the outputs are those :func:`compute` writes."""
    pending = RuntimeError("not computed")
    out: list[Computed | BaseException] = [pending] * len(plans)
    by_cube: dict[str, list[int]] = {}
    for i, pl in enumerate(plans):
        if _shares_cube(services, pl):
            by_cube.setdefault(pl.cube_href, []).append(i)
        else:
            out[i] = _computed_or_error(services, pl, out_dirs[i], None)
    for href, idx in by_cube.items():
        try:
            path, env = source_env(services, href)
            with env, open_source(path) as ds:
                cube: OpenCube | None = None  # without: each plan maps its windows over the Dask workers
                if _local_cube(services, ds):
                    cube = OpenCube(href, path, ds, bands_from_dataset(ds), ds.tags().get(QUANTITY_TAG))
                for i in idx:
                    out[i] = _computed_or_error(services, plans[i], out_dirs[i], cube)
        except Exception as e:  # the cube cannot be opened: every plan on it fails with that
            for i in idx:
                if out[i] is pending:
                    out[i] = e
    return out


def _computed_or_error(
    services: Services, plan: ProductPlan, out_dir: Path, cube: OpenCube | None
) -> Computed | BaseException:
    try:
        return compute(services, plan, out_dir, cube=cube)
    except Exception as e:
        return e


def compute(
    services: Services,
    plan: ProductPlan,
    out_dir: Path,
    *,
    progress: Any = None,
    window_size: int = 512,
    cube: OpenCube | None = None,
) -> Computed:
    """Run the product over the cube (read in place) into ``out_dir``: COG + preview PNG. ``cube``:
    the plan's cube already open (:func:`compute_many`), used when the plan runs on the plain engine."""
    prod = get_product(plan.product)
    out_dir.mkdir(parents=True, exist_ok=True)
    cog, png = out_dir / f"{plan.item_id}.tif", out_dir / f"{plan.item_id}_preview.png"
    context: dict[str, Any] = {}
    proj: dict[str, Any] | None = None
    if "processor" in prod.extra:  # an external tool gets the input item's JSON
        activated = services.catalog.get_item(plan.input.collection, plan.input.id)
        context["item"] = activated.to_dict() if activated is not None else {"id": plan.input.id}
    params = {k: v for k, v in plan.params.items() if k not in PIPELINE_RECORDS}
    with contextlib.ExitStack() as stack:
        if plan.inputs is not None and plan.inputs.geometry == "sensor":
            meta, sides = _sensor_inputs(services, plan, out_dir / ".sensor", stack)
            adjust = build_adjustments(plan.inputs, lambda h: source_env(services, h), sides=sides)
            result = run_product_sensor(
                prod, meta, str(cog), params, scene_id=plan.input.id, progress=progress, context=context,
                adjust=adjust,
            )  # fmt: skip
        elif cube is not None and cube.href == plan.cube_href and _shares_cube(services, plan):
            # compute_many passes a cube only when its products are computed here
            prod.check_quantity(cube.quantity, f"cube {cube.path}")
            result = run_on_dataset(
                prod, cube.ds, cube.bands, cube.path, str(cog), params, scene_id=plan.input.id,
                window_size=window_size, progress=progress, context=context,
            )  # fmt: skip
            proj = _proj_of(cube.ds)  # the product's grid is the cube's
        else:
            path, env = source_env(services, plan.cube_href)
            adjust = build_adjustments(plan.inputs, lambda h: source_env(services, h)) if plan.inputs else []
            for a in adjust:
                stack.callback(a.close)
            dask = dask_target(services) if not adjust else None
            result = run_product(
                prod, path, str(cog), params, rasterio_env=env, scene_id=plan.input.id, progress=progress,
                window_size=window_size, context=context, adjust=adjust, dask=dask,
                env_factory=ConfigSourceEnv(services.config, plan.cube_href) if dask else None,
            )  # fmt: skip
    write_preview(cog, png)
    spec = prod.output_spec(prod.parse_params(params))
    return Computed(
        files={"data": cog, "thumbnail": png, **{k: Path(v) for k, v in result.sidecars.items()}},
        result=result,
        proj=proj if proj is not None else _proj_fields(cog),
        classes=dict(spec.classes) if spec.classes else None,
    )


def _sensor_inputs(
    services: Services, plan: ProductPlan, work: Path, stack: contextlib.ExitStack
) -> tuple[Any, dict[str, Any]]:
    """The raw sensor-geometry scene of ``plan`` staged in ``work`` (removed on exit) and its companions
    in the same geometry (``obs``, ``mask``) as window readers, for a ``geometry=sensor`` run."""
    import shutil

    from hsi.activation import fetch_raw, sensor_companions
    from hsi.products.sensor import CubeSide
    from hsi.sources import read_scene

    raw = find_raw_item(services, plan.input.id)
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    entry = fetch_raw(services, raw, work / "raw")
    meta = read_scene(entry, source=raw.properties.get("hsi:source"), work_dir=work / "extract")
    if meta.glt is None:
        raise InvalidInputError(
            f"geometry=sensor: raw scene {raw.collection_id}/{raw.id} has no GLT (map-projected); "
            "run with geometry=ortho"
        )
    sides: dict[str, Any] = {}
    for kind, comp in sensor_companions(meta).items():
        sides[kind] = stack.enter_context(contextlib.closing(CubeSide(comp)))
    return meta, sides
