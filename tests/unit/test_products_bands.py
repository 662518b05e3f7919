"""Band selection: nearest good band, tolerances, bad bands, non-monotonic wavelength lists."""

from __future__ import annotations

import numpy as np
import pytest

from hsi.errors import BandSelectionError, ProductError
from hsi.products import BandRequest, get_product, select_bands
from hsi.products.testing import band_table
from hsi.scene import BandInfo

VNIR = band_table(np.arange(400.0, 1001.0, 5.0), 5.0)


def test_swir_product_on_vnir_cube_names_product_wavelength_scene() -> None:
    with pytest.raises(BandSelectionError) as ei:
        select_bands(get_product("index:CAI"), VNIR, "vnir-scene-001")
    msg = str(ei.value)
    assert "index:CAI" in msg and "2000 nm" in msg and "vnir-scene-001" in msg
    with pytest.raises(BandSelectionError, match="oil-spill.*1705 nm.*vnir-scene-001"):
        select_bands(get_product("oil-spill"), VNIR, "vnir-scene-001")


def test_bad_band_is_never_selected() -> None:
    wl = [660.0, 670.0, 680.0, 800.0]
    bands = band_table(wl, 10.0, good=[True, False, True, True])
    ndvi = get_product("index:NDVI")  # R window 620-690, centre 655
    chosen = {s.input: s for s in select_bands(ndvi, bands, "s")}
    assert chosen["R"].index == 1 and chosen["R"].wavelength == 660.0
    psri = get_product("index:PSRI_NB")  # needs 680 (R680), 500, 750
    only_bad = band_table([500.0, 680.0, 750.0], 10.0, good=[True, False, True])
    with pytest.raises(BandSelectionError, match="only bad bands"):
        select_bands(psri, only_bad, "scene-x")


def test_non_monotonic_wavelengths_pick_the_right_band() -> None:
    # AVIRIS-Classic-like overlap: the second spectrometer restarts below the end of the first.
    wl = [640.0, 650.0, 660.0, 670.0, 680.0, 690.0, 700.0, 662.0, 672.0, 682.0, 692.0]
    bands = band_table(wl, 10.0, good=[True] * 11)
    from hsi.products.bands import nearest_good_band

    b, d = nearest_good_band(bands, 671.0)
    assert b.index == 4 and d == 1.0  # 670 (band 4), not band 9 (672)
    b, d = nearest_good_band(bands, 673.0)
    assert b.index == 9 and b.center_wavelength == 672.0  # searchsorted would pick band 5 (680)
    sel = select_bands(
        get_product("index:RGRI_NB").with_name("x"), band_table([590.0, 520.0, 650.0, 610.0], 10.0), "s"
    )
    assert [s.wavelength for s in sel if s.input == "red"] == [610.0, 650.0]


def test_band_without_wavelength_and_tolerance() -> None:
    bands = [BandInfo(1, None, None), BandInfo(2, 640.0, 10.0), BandInfo(3, 850.0, 10.0)]
    sel = select_bands(get_product("index:NDVI"), bands, "s")
    assert [s.index for s in sel] == [3, 2]
    p = get_product("index:NDVI")
    narrow = p.__class__(**{**p.__dict__, "inputs": (BandRequest("N", 830.0, 5.0),)})
    with pytest.raises(BandSelectionError, match="nearest good band is b003 at 850.0 nm"):
        select_bands(narrow, bands, "s")


def test_unknown_product_lists_close_matches() -> None:
    with pytest.raises(ProductError, match="unknown product 'index:NDVJ'.*index:NDVI"):
        get_product("index:NDVJ")
    with pytest.raises(ProductError, match="oil-spill"):
        get_product("oil")
    assert get_product("index:ndvi").name == "index:NDVI"  # case-insensitive resolution


def test_params_are_validated_with_product_name() -> None:
    p = get_product("tree-mortality")
    with pytest.raises(ProductError, match="tree-mortality.*nope"):
        p.parse_params({"nope": 1})
    with pytest.raises(ProductError, match="ndvi_vegetation must be <= ndvi_healthy"):
        p.parse_params({"ndvi_vegetation": 0.9})
    assert p.parse_params(None).ndvi_healthy == 0.7


def test_nearest_good_band_rules_shared_by_products_and_quicklook() -> None:
    from hsi.scene import BandInfo, nearest_good_band

    bands = [BandInfo(1, 500.0, 10.0), BandInfo(2, 520.0, 10.0, good=False), BandInfo(3, None, None),
             BandInfo(4, float("nan"), None), BandInfo(5, 540.0, 10.0), BandInfo(6, 530.0, 10.0)]  # fmt: skip
    # bad, missing and NaN centres never win; the nearest good band does
    assert nearest_good_band(bands, 519.0) == (bands[5], 11.0)
    # ties go to the earlier band in the table (AVIRIS-Classic lists overlapping spectrometers)
    assert nearest_good_band([BandInfo(7, 610.0, 1.0), BandInfo(3, 590.0, 1.0)], 600.0)[0].index == 7
    assert nearest_good_band([BandInfo(1, None, None), BandInfo(2, 500.0, 1.0, good=False)], 500.0) is None
    assert nearest_good_band([], 500.0) is None


def test_bad_band_windows_use_the_band_extent() -> None:
    from hsi.sources.envi import is_bad_default

    # 1338.5 nm, FWHM 5.6: its extent 1335.7-1341.3 reaches into 1340-1445 -> bad (its centre is outside)
    assert is_bad_default(1338.5) is False and is_bad_default(1338.5, 5.6) is True
    assert is_bad_default(1789.4, 5.58) is True and is_bad_default(1957.5, 6.0) is True
    # AVIRIS-NG band 215 (1448.7 nm, FWHM 5.6): extent 1445.9-1451.5 stays clear of the window end
    assert is_bad_default(1448.7285, 5.6) is False and is_bad_default(1448.7, 8.0) is True
    # the open ends (instrument range) test the centre only
    assert is_bad_default(402.0, 10.0) is False and is_bad_default(2447.0, 10.0) is False
    assert is_bad_default(399.0, 1.0) is True and is_bad_default(2451.0, None) is True


def test_band_extent_rule_changes_no_product_band_choice_on_aviris() -> None:
    """Per sensor: which bands turn bad, and that no product picks another band because of it
    (full-spectrum products only lose the newly bad bands)."""
    from hsi.products import list_products
    from hsi.sources.envi import is_bad_default
    from hsi.sources.synthetic import sensor_table

    changed_expected = {"aviris-ng": [193, 283], "aviris-classic": [150]}
    for source, expected in changed_expected.items():
        t = sensor_table(source)
        old = [not is_bad_default(w) for w in t.wavelength]
        new = [bool(g) for g in t.bbl]  # what the synthetic source (and ENVI without bbl) now uses
        assert [i + 1 for i, (o, n) in enumerate(zip(old, new, strict=True)) if o != n] == expected
        b_old = band_table(list(t.wavelength), list(t.fwhm), good=old)
        b_new = band_table(list(t.wavelength), list(t.fwhm), good=new)
        for name in list_products():
            p = get_product(name)
            if name == "sam":
                continue  # needs a reference file; same selection rule as pca
            try:
                s_old = select_bands(p, b_old, "s")
            except BandSelectionError:
                with pytest.raises(BandSelectionError):
                    select_bands(p, b_new, "s")
                continue
            s_new = select_bands(p, b_new, "s")
            if name in ("pca",):
                assert {s.index for s in s_old} - {s.index for s in s_new} == set(expected)
            else:
                assert [(s.input, s.index) for s in s_new] == [(s.input, s.index) for s in s_old], name
