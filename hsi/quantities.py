"""What a product gets as input: quantity checks, radiance -> TOA reflectance, quality masks.

Every product declares the quantity it ``needs`` (``reflectance`` | ``radiance`` | ``any``); the
activated cube says what it holds (COG tag ``HSI_QUANTITY``, units in ``HSI_UNITS``). Three
pipeline-level parameters, accepted next to a product's own parameters:

* ``radiance``: ``"toa"`` (default) -- a reflectance product on a radiance cube runs on TOA
  reflectance (:mod:`hsi.toa`); ``"refuse"`` -- it fails with a message saying why;
* ``mask``: ``true`` (default) -- when the activated item has a quality-mask asset (EMIT L2A MASK),
  pixels flagged cloud, cirrus, water or dilated cloud are nodata; ``false`` -- no masking;
* ``geometry``: ``"ortho"`` (default) -- computed on the activated (orthorectified) COG;
  ``"sensor"`` -- computed on the raw sensor-geometry cube (the item's ``sensor`` asset, with its
  OBS/MASK companions in the same geometry), then orthorectified through the GLT
  (:mod:`hsi.products.sensor`, EMIT's own practice).

What was decided is recorded in the product's parameters (hence its provenance and product key):
``input_quantity`` + ``toa_reflectance`` (the conversion), ``quality_mask`` (asset, flags, or "off")
and ``geometry`` (only when ``"sensor"``).
Nothing is added when nothing happens (a reflectance cube without a mask asset), so keys of such
products do not change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hsi.errors import ProductError

if TYPE_CHECKING:  # the option parsing is on the CLI's and the configuration's import path
    import pystac

    from hsi.scene import BandInfo

__all__ = [
    "MASK_ASSET",
    "MASK_FLAGS",
    "OBS_ASSET",
    "PIPELINE_OPTIONS",
    "PIPELINE_RECORDS",
    "SENSOR_ASSET",
    "InputPlan",
    "build_adjustments",
    "parse_request_params",
    "plan_inputs",
    "split_params",
]

log = logging.getLogger(__name__)

OBS_ASSET = "obs"
MASK_ASSET = "mask"
# a scene-wide zenith at or past the horizon: cos(theta) <= 0, no reflectance to speak of
MAX_SCENE_ZENITH_DEG = 90.0
OBS_SOLAR_ZENITH_BAND = 5  # 1-based: to-sun zenith in EMIT OBS and AVIRIS-NG obs/obs_ort
MASK_FLAGS = ("Cloud flag", "Cirrus flag", "Water flag", "Dilated Cloud Flag")  # masked by default
_OPTIONS = {"radiance": "toa", "mask": True, "geometry": "ortho"}
PIPELINE_OPTIONS = tuple(_OPTIONS)  # accepted next to every product's own parameters
PIPELINE_RECORDS = ("input_quantity", "toa_reflectance", "quality_mask", "geometry")
SENSOR_ASSET = "sensor"  # the activated item's raw sensor-geometry cube + GLT (hsi.activation)
DEFAULT_RADIANCE_UNITS = "uW nm-1 cm-2 sr-1"


def split_params(params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(product parameters, pipeline options ``radiance``/``mask``/``geometry`` with defaults)."""
    prod = dict(params or {})
    opts = dict(_OPTIONS)
    for k in _OPTIONS:
        if k in prod:
            opts[k] = prod.pop(k)
    for k in PIPELINE_RECORDS:
        prod.pop(k, None)  # records of an earlier plan are recomputed, never trusted
    if opts["radiance"] not in ("toa", "refuse"):
        raise ProductError(f"parameter radiance must be 'toa' or 'refuse', got {opts['radiance']!r}")
    if opts["geometry"] not in ("ortho", "sensor"):
        raise ProductError(f"parameter geometry must be 'ortho' or 'sensor', got {opts['geometry']!r}")
    if isinstance(opts["mask"], str):
        opts["mask"] = opts["mask"].strip().lower() in ("1", "true", "yes", "on")
    return prod, opts


def parse_request_params(product: Any, params: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """(``product``'s validated parameters, the pipeline options): how every request's parameters are
    checked, since ``radiance=``/``mask=``/``geometry=`` are the pipeline's, not the product's."""
    prod_params, opts = split_params(params)
    return product.parse_params(prod_params), opts


@dataclass(frozen=True)
class InputPlan:
    records: dict[str, Any]  # merged into the product parameters (provenance + key)
    factors: dict[int, float] | None = None  # TOA factor per 1-based band
    zenith_deg: float | None = None
    zenith_href: str | None = None
    mask_href: str | None = None
    mask_bands: tuple[int, ...] = ()
    geometry: str = "ortho"  # "sensor": computed on the raw sensor-geometry cube, then through its GLT


def _centre(item: pystac.Item) -> tuple[float, float]:
    if item.bbox:
        w, s, e, n = item.bbox[:4]
        return (w + e) / 2, (s + n) / 2
    raise ProductError(f"{item.id}: no bbox, cannot place the sun for TOA reflectance")


def plan_inputs(
    product_name: str,
    needs: str,
    item: pystac.Item,
    cube_tags: Mapping[str, str],
    bands: Sequence[BandInfo],
    opts: Mapping[str, Any],
    mask_descriptions: Sequence[str] | None = None,
) -> InputPlan:
    """Decide the input preparation of one product run on one activated item (no pixels read)."""
    import numpy as np

    from hsi.toa import (
        ToaConversion,
        band_solar_irradiance,
        earth_sun_distance,
        radiance_units_factor,
        solar_zenith,
    )

    quantity = cube_tags.get("HSI_QUANTITY", item.properties.get("hsi:quantity", "unknown"))
    records: dict[str, Any] = {}
    factors = zen_href = None
    zen_deg = None
    if needs == "reflectance" and quantity == "radiance":
        if opts["radiance"] == "refuse":
            raise ProductError(
                f"product '{product_name}' needs reflectance but {item.id} holds radiance; "
                "run it with radiance=toa (top-of-atmosphere reflectance) or on a reflectance scene"
            )
        units = cube_tags.get("HSI_UNITS")
        assumed = units is None
        units = units or DEFAULT_RADIANCE_UNITS
        try:
            uf = radiance_units_factor(units)
        except ValueError as exc:
            raise ProductError(f"{item.id}: {exc}") from exc
        from hsi.stac.items import DATETIME_SOURCE  # pystac: kept off the CLI's option-parsing path

        when = item.datetime
        if when is None or DATETIME_SOURCE in item.properties:
            instead = f" (its datetime is the {item.properties[DATETIME_SOURCE]})" if when is not None else ""
            raise ProductError(
                f"{item.id}: the scene has no acquisition time{instead}; TOA reflectance needs the date "
                "and the sun's position: add 'acquisition time' to the header, or run on a reflectance scene"
            )
        d = earth_sun_distance(when)
        wl = [b.center_wavelength for b in bands]
        fw = [b.fwhm for b in bands]
        if any(w is None for w in wl) or any(f is None for f in fw):
            raise ProductError(f"{item.id}: TOA reflectance needs every band's centre and FWHM")
        esun = band_solar_irradiance(np.asarray(wl, dtype=np.float64), np.asarray(fw, dtype=np.float64))
        factors = {b.index: float(np.pi * d * d * uf / e) for b, e in zip(bands, esun, strict=True)}
        obs = item.assets.get(OBS_ASSET)
        if obs is not None:
            zen_href = obs.href
            zen_text = f"per pixel: asset '{OBS_ASSET}' band {OBS_SOLAR_ZENITH_BAND} (to-sun zenith)"
        else:
            lon, lat = _centre(item)
            zen_deg = solar_zenith(when, lon, lat)
            if zen_deg >= MAX_SCENE_ZENITH_DEG:
                raise ProductError(
                    f"{item.id}: the sun is {zen_deg:.1f} deg from the zenith at {when.isoformat()} over "
                    f"({lon:.4f}, {lat:.4f}), below the horizon: TOA reflectance is undefined; check the "
                    "scene's acquisition time and georeferencing"
                )
            zen_text = (
                f"scene: {zen_deg:.4f} deg at {when.isoformat()} over ({lon:.5f}, {lat:.5f}) (pvlib SPA)"
            )
        conv = ToaConversion(
            distance_au=d,
            zenith=zen_text,
            zenith_deg=zen_deg,
            units=units + (" (assumed: sensor convention)" if assumed else ""),
            units_factor=uf,
        )
        records["input_quantity"] = "toa-reflectance"
        records["toa_reflectance"] = conv.as_dict()
        log.info("%s on %s: radiance -> TOA reflectance (%s)", product_name, item.id, zen_text)
    mask_href: str | None = None
    mask_bands: tuple[int, ...] = ()
    mask = item.assets.get(MASK_ASSET)
    if mask is not None:
        if not opts["mask"]:
            records["quality_mask"] = "off"
        else:
            desc = [d.split(" ", 1)[-1] for d in (mask_descriptions or ())]
            mask_bands = tuple(i + 1 for i, d in enumerate(desc) if d in MASK_FLAGS)
            if not mask_bands:
                raise ProductError(
                    f"{item.id}: mask asset has none of the flag bands {', '.join(MASK_FLAGS)}"
                )
            mask_href = mask.href
            records["quality_mask"] = {"asset": MASK_ASSET, "flags": [desc[i - 1] for i in mask_bands]}
    if opts["geometry"] == "sensor":
        if SENSOR_ASSET not in item.assets:
            raise ProductError(
                f"geometry=sensor: {item.id} has no '{SENSOR_ASSET}' asset (it was delivered map-projected, "
                "or activated before sensor-geometry cubes were kept); run with geometry=ortho"
            )
        records["geometry"] = "sensor"
    return InputPlan(records, factors, zen_deg, zen_href, mask_href, mask_bands, opts["geometry"])


def build_adjustments(plan: InputPlan, env_for: Any, sides: Mapping[str, Any] | None = None) -> list[Any]:
    """The engine adjustments of ``plan``; ``env_for(href) -> (gdal path, rasterio.Env)`` opens the
    activated item's side COGs. ``sides`` (``obs``/``mask`` -> a window reader): companions in
    the geometry the product is computed in instead (sensor geometry: the raw OBS / MASK granule)."""
    from hsi.products.inputs import MaskFlags, ToaReflectance, side_cog

    def side(asset: str, href: str) -> Any:
        if sides is None:
            return side_cog(*env_for(href))
        if asset not in sides:
            raise ProductError(
                f"geometry=sensor: the raw scene has no sensor-geometry '{asset}' companion this product's "
                f"input needs ({'per-pixel solar zenith' if asset == OBS_ASSET else 'quality mask'}); "
                "run with geometry=ortho"
            )
        return sides[asset]

    out: list[Any] = []
    if plan.factors is not None:
        if plan.zenith_href is not None:
            out.append(
                ToaReflectance(
                    plan.factors, zenith=(side(OBS_ASSET, plan.zenith_href), OBS_SOLAR_ZENITH_BAND)
                )
            )
        else:
            out.append(ToaReflectance(plan.factors, zenith_deg=plan.zenith_deg))
    if plan.mask_href is not None:
        out.append(MaskFlags(side(MASK_ASSET, plan.mask_href), plan.mask_bands))
    return out
