"""Cross-calibration between DXA manufacturers and hip standardised BMD."""

from __future__ import annotations

import pytest

from osteonode.bone import (
    DxaManufacturer,
    LinearCalibration,
    MeasurementSite,
    Sex,
    Category,
    YoungAdultReference,
    standardized_bmd,
    standardized_bmd_calibration,
    t_score,
    who_category,
)

GE = DxaManufacturer.GE_LUNAR
HOLOGIC = DxaManufacturer.HOLOGIC
SPINE = MeasurementSite.LUMBAR_L1_L4
NECK = MeasurementSite.FEMORAL_NECK
TOTAL_HIP = MeasurementSite.TOTAL_HIP

STUDY = LinearCalibration(0.856, -0.016, GE, HOLOGIC, SPINE, "Yan 2022 via Inamori")
GENANT = LinearCalibration(0.906, -0.025, GE, HOLOGIC, SPINE, "Genant 1994")
GENANT_REVERSE = LinearCalibration(1.074, 0.054, HOLOGIC, GE, SPINE, "Genant 1994")


def test_study_equation_converts_lunar_to_hologic():
    # 0.856 x 1.000 - 0.016 = 0.840
    assert STUDY.apply(1.000) == pytest.approx(0.840, abs=1e-12)
    # 0.856 x 0.950 - 0.016 = 0.8132 - 0.016 = 0.7972
    hologic = STUDY.apply(0.950)
    assert hologic == pytest.approx(0.7972, abs=1e-12)
    # against Hologic 1.047 +- 0.110: (0.7972 - 1.047) / 0.110 = -0.2498 / 0.110 = -2.2709 -> -2.3
    reference = YoungAdultReference(1.047, 0.110, SPINE, Sex.FEMALE, HOLOGIC, "test")
    assert t_score(hologic, reference) == pytest.approx(-2.270909, abs=1e-6)
    assert who_category(t_score(hologic, reference)) is Category.LOW_BONE_MASS


def test_genant_equations_are_not_each_others_inverse():
    # 0.906 x 1.000 - 0.025 = 0.881; back: 1.074 x 0.881 + 0.054 = 0.946194 + 0.054 = 1.000194
    assert GENANT.apply(1.000) == pytest.approx(0.881, abs=1e-12)
    assert GENANT_REVERSE.apply(0.881) == pytest.approx(1.000194, abs=1e-12)
    # the algebraic inverse has slope 1 / 0.906 = 1.10375..., not the published 1.074
    assert GENANT.inverse().slope == pytest.approx(1.103753, abs=1e-6)


def test_inverse_round_trips_and_swaps_direction():
    inverse = STUDY.inverse()
    # slope 1 / 0.856 = 1.168224...; intercept 0.016 / 0.856 = 0.018692...
    assert inverse.slope == pytest.approx(1.1682243, abs=1e-7)
    assert inverse.intercept == pytest.approx(0.0186916, abs=1e-7)
    assert (inverse.from_manufacturer, inverse.to_manufacturer) == (HOLOGIC, GE)
    assert inverse.site is SPINE
    assert "inverse" in inverse.source and "Yan 2022" in inverse.source
    for bmd in (0.5, 0.84, 1.2):
        assert inverse.apply(STUDY.apply(bmd)) == pytest.approx(bmd, abs=1e-12)
        assert STUDY.apply(inverse.apply(bmd)) == pytest.approx(bmd, abs=1e-12)


def test_identity_calibration_leaves_bmd_unchanged():
    identity = LinearCalibration.identity(HOLOGIC, SPINE)
    assert identity.is_identity
    assert identity.apply(0.8123) == 0.8123
    assert identity.from_manufacturer is identity.to_manufacturer is HOLOGIC
    assert not STUDY.is_identity


@pytest.mark.parametrize(
    ("slope", "intercept", "message"),
    [(0.0, 0.0, "slope"), (-0.9, 0.0, "slope"), (float("nan"), 0.0, "slope"),
     (0.9, float("inf"), "intercept")],
)
def test_calibration_refuses_impossible_coefficients(slope, intercept, message):
    with pytest.raises(ValueError, match=message):
        LinearCalibration(slope, intercept, GE, HOLOGIC, SPINE, "x")


def test_calibration_needs_a_source():
    with pytest.raises(ValueError, match="source"):
        LinearCalibration(0.9, 0.0, GE, HOLOGIC, SPINE, "")


@pytest.mark.parametrize(
    ("bmd", "site", "manufacturer", "expected"),
    [
        # 1000 x (0.006 + 1.008 x 0.942) = 1000 x (0.006 + 0.949536) = 955.536
        (0.942, TOTAL_HIP, HOLOGIC, 955.536),
        # 1000 x (-0.031 + 0.979 x 1.000) = 948.0
        (1.000, TOTAL_HIP, GE, 948.0),
        # 1000 x (0.019 + 1.087 x 0.858) = 1000 x (0.019 + 0.932646) = 951.646
        (0.858, NECK, HOLOGIC, 951.646),
        # 1000 x (-0.023 + 0.939 x 0.900) = 1000 x (-0.023 + 0.8451) = 822.1
        (0.900, NECK, GE, 822.1),
    ],
)
def test_standardized_bmd_matches_hand_worked_numbers(bmd, site, manufacturer, expected):
    assert standardized_bmd(bmd, site, manufacturer) == pytest.approx(expected, abs=1e-9)


def test_standardized_bmd_has_no_spine_equation():
    with pytest.raises(ValueError, match="hip sites only"):
        standardized_bmd(1.0, SPINE, HOLOGIC)


def test_hip_calibration_through_standardized_bmd_keeps_sbmd_equal():
    calibration = standardized_bmd_calibration(TOTAL_HIP, GE, HOLOGIC)
    # slope 0.979 / 1.008 = 0.971230...; intercept (-0.031 - 0.006) / 1.008 = -0.036706...
    assert calibration.slope == pytest.approx(0.9712302, abs=1e-7)
    assert calibration.intercept == pytest.approx(-0.0367063, abs=1e-7)
    # Lunar 1.000 -> Hologic (0.948 - 0.006) / 1.008 = 0.934524, whose sBMD is again 948.0
    hologic = calibration.apply(1.000)
    assert hologic == pytest.approx(0.9345238, abs=1e-7)
    assert standardized_bmd(hologic, TOTAL_HIP, HOLOGIC) == pytest.approx(948.0, abs=1e-9)
    back = standardized_bmd_calibration(TOTAL_HIP, HOLOGIC, GE)
    assert back.apply(hologic) == pytest.approx(1.000, abs=1e-12)
