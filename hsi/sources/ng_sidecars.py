"""AVIRIS-NG sidecar products (JPL AVIRIS-NG data product document, rev. 2016).

Next to the orthocorrected image (``*_rdn_<ver>_img`` / ``*_corr_<ver>_img``, rotated UTM grid):

========== ======================= ================================================================
kind       grid                    content
========== ======================= ================================================================
``glt``    ortho (= the image's)   int32, 2 bands (sample, line) of the raw pixel; 1-based, 0 = none,
                                   negative = nearest-neighbour infill (use ``abs``)
``igm``    raw (sensor geometry)   float64, 3 bands: easting, northing, elevation of every raw pixel
``loc``    raw                     float64, 3 bands: longitude, latitude, elevation
``obs``    raw                     float64, 11 bands: path length, to-sensor azimuth/zenith, to-sun
                                   azimuth/zenith, phase, slope, aspect, cos(i), UTC time, Earth-Sun d
``obs_ort`` ortho                  the ``obs`` bands rendered through the GLT
========== ======================= ================================================================

:func:`find_sidecars` finds them for a cube (single files or an extracted archive),
:func:`read_aux` reads any of them as a non-spectral :class:`~hsi.scene.SceneMetadata` (band labels
from ``band names``) so the COG writer can render ``obs_ort`` on exactly the cube's grid, and
:func:`glt_agrees` checks that a GLT and the ortho image share their grid.
"""

from __future__ import annotations

import re
from pathlib import Path

from hsi.scene import BandInfo, RasterLayout, SceneMetadata
from hsi.sources.envi import check_data_file, find_data_file, find_header, header_files, read_header
from hsi.sources.georef import map_info_crs_wkt, map_info_transform

__all__ = ["OBS_BAND_NAMES", "SIDECAR_KINDS", "find_sidecars", "glt_agrees", "read_aux"]

SIDECAR_KINDS = ("glt", "igm", "loc", "obs", "obs_ort")
OBS_BAND_NAMES = (
    "Path length (m)",
    "To-sensor azimuth (0 to 360 degrees CW from N)",
    "To-sensor zenith (0 to 90 degrees from zenith)",
    "To-sun azimuth (0 to 360 degrees CW from N)",
    "To-sun zenith (0 to 90 degrees from zenith)",
    "Solar phase (degrees between to-sensor and to-sun vectors in principal plane)",
    "Slope (local surface slope as derived from DEM in degrees)",
    "Aspect (local surface aspect 0 to 360 degrees clockwise from N)",
    "Cosine(i) (apparent local illumination factor based on DEM slope and aspect and to sun vector)",
    "UTC Time (decimal hours for mid-line pixels)",
    "Earth-sun distance (AU)",
)
# the kind is the last token: ang..._rdn_v2p9_glt, ang..._ort_glt / ang..._obs_ort (v1 and 2017-2021
# deliveries), ang..._027_L1B_ORT_main_<hash>_GLT (2023 on); any case
_KIND_RE = re.compile(r"^(ang\d{8}t\d{6})(?:_[a-z0-9]+)*?_(glt|igm|loc|obs_ort|obs)$", re.IGNORECASE)


def find_sidecars(data_path: Path) -> dict[str, Path]:
    """``kind -> data file`` of the sidecars of the AVIRIS-NG scene ``data_path`` belongs to."""
    scene = data_path.name.split("_")[0].lower()
    out: dict[str, Path] = {}
    for hdr in header_files(data_path.parent, recursive=False):
        m = _KIND_RE.match(hdr.name[: -len(".hdr")])
        if m and m.group(1).lower() == scene:
            kind = m.group(2).lower()
            try:
                out[kind] = find_data_file(hdr)
            except Exception:  # a header without its data file is not a sidecar we can use
                continue
    return out


def read_aux(path: Path, *, source: str, scene_id: str, quantity: str) -> SceneMetadata:
    """A non-spectral ENVI raster (GLT, IGM, LOC, OBS, OBS_ORT) with its grid and band labels."""
    header = (
        path if path.suffix.lower() == ".hdr" else (find_header(path) or path.with_name(path.name + ".hdr"))
    )
    hdr = read_header(header)
    data = find_data_file(hdr.path)
    layout = RasterLayout(
        data_path=data,
        header_path=hdr.path,
        width=hdr.samples,
        height=hdr.lines,
        count=hdr.bands,
        dtype=hdr.dtype,
        interleave=hdr.interleave,  # type: ignore[arg-type]
        byte_order=hdr.byte_order_name,  # type: ignore[arg-type]
        header_offset=hdr.header_offset,
    )
    check_data_file(layout)
    names = [n.strip() for n in hdr.extra.get("band names", "").strip("{}").split(",") if n.strip()]
    if not names and hdr.bands == len(OBS_BAND_NAMES):
        names = list(OBS_BAND_NAMES)
    bands = tuple(
        BandInfo(index=i + 1, center_wavelength=None, fwhm=None, label=names[i] if i < len(names) else None)
        for i in range(hdr.bands)
    )
    return SceneMetadata(
        source=source,
        scene_id=scene_id,
        level="aux",
        quantity=quantity,
        layout=layout,
        bands=bands,
        nodata=hdr.data_ignore_value if hdr.data_ignore_value is not None else -9999.0,
        crs_wkt=map_info_crs_wkt(hdr.map_info, hdr.coordinate_system_string, hdr.path),
        transform=map_info_transform(hdr.map_info) if hdr.map_info is not None else None,
        datetime=None,
    )


def glt_agrees(glt: SceneMetadata, image: SceneMetadata) -> str | None:
    """None when the GLT and the ortho image share size and grid, else what differs."""
    if (glt.layout.width, glt.layout.height) != (image.layout.width, image.layout.height):
        return (
            f"GLT is {glt.layout.width} x {glt.layout.height}, the ortho image "
            f"{image.layout.width} x {image.layout.height}"
        )
    if glt.transform is None or image.transform is None:
        return "GLT or image has no map info"
    if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(glt.transform, image.transform, strict=True)):
        return f"GLT grid {glt.transform} differs from the image grid {image.transform}"
    return None
