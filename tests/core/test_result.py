"""Pipeline results: validated on construction and stored as JSON without loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

from osteonode.bone import WHO_CATEGORIES, Category, Laterality
from osteonode.pipelines.base import (
    Finding,
    FindingSite,
    ModelIdentity,
    Region,
    Result,
    SourceImage,
)

SOURCE = SourceImage("1.2.840.10008.5.1.4.1.1.1", "1.2.3.4", "1.2.3", "1.2.3.1", rows=40, columns=30)
DEMO = ModelIdentity("hip-demo", "0.1.0", "vgg16_nonlocal_demo", synthetic=True, diagnostic_use=False,
                     parameters=(("threshold", "0.5"),))


def hip_result(**changes) -> Result:
    values = dict(
        pipeline="hip",
        site=FindingSite.HIP,
        source=SOURCE,
        model=DEMO,
        evaluable=True,
        category=Category.OSTEOPOROSIS,
        findings=(
            Finding("Right hip", FindingSite.HIP, Laterality.RIGHT, probability=0.82, threshold=0.5,
                    osteoporosis_present=True, category=Category.OSTEOPOROSIS,
                    region=Region.box(2, 3, 12, 20)),
            Finding("Left hip", FindingSite.HIP, Laterality.LEFT, evaluable=False, included=False,
                    reason="prosthesis in the field"),
        ),
        notes=("patient is male: the method's intended population is women aged 55 or over",),
        heatmap=np.zeros((40, 30), np.float32),
    )
    values.update(changes)
    return Result(**values)


def test_result_survives_a_json_round_trip():
    result = hip_result()
    text = json.dumps(result.to_dict())
    again = Result.from_dict(json.loads(text), heatmap=result.heatmap)
    assert again.to_dict() == result.to_dict()
    assert again.findings[0].region.points[2] == (12, 20)
    assert again.findings[1].laterality is Laterality.LEFT
    assert again.category is Category.OSTEOPOROSIS


def test_a_not_osteoporotic_hip_result_reads_back_as_not_osteoporosis_and_no_who_category():
    negative = Finding("Right hip", FindingSite.HIP, Laterality.RIGHT, probability=0.2, threshold=0.5,
                       osteoporosis_present=False, category=Category.NOT_OSTEOPOROSIS)
    result = hip_result(category=Category.NOT_OSTEOPOROSIS, findings=(negative,))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["category"] == data["findings"][0]["category"] == "not_osteoporosis"
    again = Result.from_dict(data)
    assert again.category is Category.NOT_OSTEOPOROSIS and not again.category.is_who
    assert again.findings[0].category is Category.NOT_OSTEOPOROSIS


def test_stored_who_categories_read_back_as_the_same_answer():
    data = hip_result().to_dict()
    for who in WHO_CATEGORIES:
        data["category"] = who.value
        again = Result.from_dict(data)
        assert again.category is who and again.category.is_who


def test_result_categories_must_be_categories_not_bare_strings():
    with pytest.raises(TypeError, match="Category"):
        hip_result(category="osteoporosis")
    with pytest.raises(TypeError, match="Category"):
        Finding("L1", FindingSite.L1, category="normal")


def test_a_finding_whose_presence_contradicts_its_answer_is_refused():
    with pytest.raises(ValueError, match="contradicts"):
        Finding("Left hip", FindingSite.HIP, Laterality.LEFT, osteoporosis_present=True,
                category=Category.NOT_OSTEOPOROSIS)


def test_synthetic_models_always_carry_the_not_for_diagnostic_use_line():
    assert "not for diagnostic use" in hip_result().disclaimer
    research = ModelIdentity("site", "1", "x", synthetic=False, diagnostic_use=False)
    assert "not for diagnostic use" in research.disclaimer
    assert ModelIdentity("site", "1", "x", synthetic=False, diagnostic_use=True).disclaimer is None
    with pytest.raises(ValueError, match="synthetic"):
        ModelIdentity("demo", "1", "x", synthetic=True, diagnostic_use=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"category": None}, "needs a category"),
        ({"evaluable": False}, "needs a reason"),
        ({"heatmap": np.zeros((10, 10), np.float32)}, "differs from the source"),
        ({"heatmap": np.full((40, 30), 2.0, np.float32)}, r"\[0, 1\]"),
        ({"findings": (Finding("L1", FindingSite.L1), Finding("L1", FindingSite.L1))}, "unique"),
    ],
)
def test_inconsistent_results_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        hip_result(**changes)


def test_findings_and_regions_check_their_values():
    with pytest.raises(ValueError, match="needs a reason"):
        Finding("L1", FindingSite.L1, evaluable=False, included=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Finding("Stage 1", FindingSite.CHEST, probability=1.5)
    with pytest.raises(ValueError, match="positive"):
        Finding("L1", FindingSite.L1, bmd_g_cm2=-0.1)
    with pytest.raises(ValueError, match="3 points"):
        Region(((0, 0), (1, 1)))
    with pytest.raises(ValueError, match="column1 > column0"):
        Region.box(5, 5, 1, 9)
