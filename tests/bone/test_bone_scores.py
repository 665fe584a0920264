"""T-scores, their one-decimal reporting, WHO categories and when the categories apply."""

from __future__ import annotations

import math

import numpy as np
import pytest

from osteonode.bone import (
    DxaManufacturer,
    MeasurementSite,
    Sex,
    Category,
    YoungAdultReference,
    reported_t_score,
    t_score,
    who_applicability,
    who_category,
)

HOLOGIC_SPINE = YoungAdultReference(
    mean=1.047, sd=0.110, site=MeasurementSite.LUMBAR_L1_L4, sex=Sex.FEMALE,
    manufacturer=DxaManufacturer.HOLOGIC, source="test",
)
NECK = YoungAdultReference(0.858, 0.120, "femoral_neck", "F", "hologic", "test")
TOTAL_HIP = YoungAdultReference(0.942, 0.122, "total_hip", "F", "hologic", "test")


@pytest.mark.parametrize(
    ("bmd", "reference", "expected", "reported", "category"),
    [
        # (0.800 - 1.047) / 0.110 = -0.247 / 0.110 = -2.24545... -> -2.2 -> low bone mass
        (0.800, HOLOGIC_SPINE, -2.245454545, -2.2, Category.LOW_BONE_MASS),
        # (1.047 - 1.047) / 0.110 = 0 -> normal
        (1.047, HOLOGIC_SPINE, 0.0, 0.0, Category.NORMAL),
        # (0.700 - 0.858) / 0.120 = -0.158 / 0.120 = -1.31666... -> -1.3 -> low bone mass
        (0.700, NECK, -1.316666667, -1.3, Category.LOW_BONE_MASS),
        # (0.550 - 0.858) / 0.120 = -0.308 / 0.120 = -2.56666... -> -2.6 -> osteoporosis
        (0.550, NECK, -2.566666667, -2.6, Category.OSTEOPOROSIS),
        # (0.637 - 0.942) / 0.122 = -0.305 / 0.122 = -2.5 exactly -> osteoporosis (boundary)
        (0.637, TOTAL_HIP, -2.5, -2.5, Category.OSTEOPOROSIS),
        # (0.820 - 0.942) / 0.122 = -0.122 / 0.122 = -1.0 exactly -> normal (boundary included)
        (0.820, TOTAL_HIP, -1.0, -1.0, Category.NORMAL),
    ],
)
def test_t_score_matches_hand_worked_numbers(bmd, reference, expected, reported, category):
    score = t_score(bmd, reference)
    assert score == pytest.approx(expected, abs=1e-9)
    assert reported_t_score(score) == reported
    assert who_category(score) is category


@pytest.mark.parametrize(
    ("score", "reported", "category"),
    [
        (-2.46, -2.5, Category.OSTEOPOROSIS),  # rounds to -2.5: printed -2.5, so osteoporosis
        (-2.45, -2.5, Category.OSTEOPOROSIS),  # a half rounds away from zero
        (-2.54, -2.5, Category.OSTEOPOROSIS),
        (-2.44, -2.4, Category.LOW_BONE_MASS),
        (-0.95, -1.0, Category.NORMAL),  # rounds to -1.0: printed -1.0, so normal
        (-1.04, -1.0, Category.NORMAL),
        (-1.05, -1.1, Category.LOW_BONE_MASS),
        (0.05, 0.1, Category.NORMAL),
    ],
)
def test_category_always_agrees_with_the_printed_t_score(score, reported, category):
    assert reported_t_score(score) == reported
    assert who_category(score) is category
    assert who_category(reported) is category


def test_a_score_rounding_to_zero_is_printed_without_a_sign():
    assert str(reported_t_score(-0.04)) == "0.0"


def test_numpy_scalars_are_accepted():
    assert who_category(np.float32(-2.7)) is Category.OSTEOPOROSIS
    assert t_score(np.float64(0.8), HOLOGIC_SPINE) == pytest.approx(-2.2454545, abs=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_t_score_is_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        who_category(bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan])
def test_impossible_bmd_is_refused(bad):
    with pytest.raises(ValueError, match="bmd"):
        t_score(bad, HOLOGIC_SPINE)


def test_t_score_refuses_text():
    with pytest.raises(TypeError):
        t_score("0.8", HOLOGIC_SPINE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sd": 0.0}, "sd"),
        ({"mean": -1.0}, "mean"),
        ({"sex": Sex.UNKNOWN}, "F or M"),
        ({"source": "  "}, "source"),
        ({"site": "spine"}, "spine"),
    ],
)
def test_young_adult_reference_checks_its_values(kwargs, message):
    values = dict(
        mean=1.047, sd=0.110, site="lumbar_l1_l4", sex="F", manufacturer="hologic", source="x"
    )
    with pytest.raises(ValueError, match=message):
        YoungAdultReference(**(values | kwargs))


def test_young_adult_reference_reads_coded_strings_as_enums():
    reference = YoungAdultReference(1.0, 0.1, "total_hip", "M", "ge_lunar", "x")
    assert reference.site is MeasurementSite.TOTAL_HIP
    assert reference.sex is Sex.MALE
    assert reference.manufacturer is DxaManufacturer.GE_LUNAR


@pytest.mark.parametrize(
    ("value", "sex"),
    [("F", Sex.FEMALE), ("m ", Sex.MALE), ("O", Sex.OTHER), ("", Sex.UNKNOWN), (None, Sex.UNKNOWN),
     ("X", Sex.UNKNOWN)],
)
def test_patient_sex_is_read_from_dicom_values(value, sex):
    assert Sex.from_dicom(value) is sex


def test_who_categories_apply_without_notes_to_women_and_men_over_50():
    assert who_applicability(65, Sex.FEMALE) == []
    assert who_applicability(50, Sex.MALE) == []


def test_younger_men_get_a_z_score_note():
    (note,) = who_applicability(45, Sex.MALE)
    assert "under 50" in note and "Z-scores" in note


def test_younger_women_get_a_postmenopausal_note():
    (note,) = who_applicability(47.5, Sex.FEMALE)
    assert "47.5" in note and "postmenopausal" in note


def test_unknown_age_and_sex_are_both_noted():
    notes = who_applicability(None, None)
    assert len(notes) == 2
    assert notes[0].startswith("age unknown")
    assert notes[1].startswith("sex unknown")
    assert who_applicability(70, Sex.UNKNOWN) == [notes[1]]
    assert "other" in who_applicability(70, Sex.OTHER)[0]


def test_negative_age_is_refused():
    with pytest.raises(ValueError, match="age"):
        who_applicability(-1, Sex.FEMALE)
