"""The chest pipeline's behaviour: stages, decisions, heat-maps, intended use, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom.dataset import Dataset

from osteonode.bone import Category
from osteonode.config import PipelineSettings, IntendedUsePolicy
from osteonode.imaging.pixels import load_radiograph
from osteonode.pipelines.base import OutsideIntendedUse
from osteonode.inference import InferencePlan
from osteonode.pipelines.chest import Stage, final_category

HIGH, LOW = 4.0, -4.0  # logits: probability 0.982 and 0.018


def logistic(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def test_osteoporosis_from_stage_1_leaves_stage_2_not_run(
    make_pipeline, chest_dataset: Dataset
) -> None:
    pipeline = make_pipeline(logits={Stage.OSTEOPOROSIS: HIGH, Stage.LOW_BONE_MASS: HIGH})
    analysis = pipeline.analyse(load_radiograph(chest_dataset))
    result = analysis.result
    assert result.evaluable and result.category is Category.OSTEOPOROSIS
    stage1, stage2 = result.findings
    assert stage1.name == "Stage 1: osteoporosis" and stage1.osteoporosis_present is True
    assert stage1.probability == pytest.approx(logistic(HIGH), abs=1e-5)
    assert stage2.name == "Stage 2: low bone mass"
    assert stage2.probability is None and not stage2.included and "not run" in (stage2.reason or "")
    assert set(analysis.heatmaps) == {Stage.OSTEOPOROSIS}


@pytest.mark.parametrize(
    ("stage2_logit", "expected"), [(HIGH, Category.LOW_BONE_MASS), (LOW, Category.NORMAL)]
)
def test_stage_2_decides_between_low_bone_mass_and_normal(
    make_pipeline, chest_dataset: Dataset, stage2_logit: float, expected: Category
) -> None:
    pipeline = make_pipeline(logits={Stage.OSTEOPOROSIS: LOW, Stage.LOW_BONE_MASS: stage2_logit})
    analysis = pipeline.analyse(load_radiograph(chest_dataset))
    result = analysis.result
    assert result.category is expected
    stage1, stage2 = result.findings
    assert stage1.osteoporosis_present is False
    assert stage2.probability == pytest.approx(logistic(stage2_logit), abs=1e-5)
    assert stage2.category is expected and stage2.included
    assert set(analysis.heatmaps) == {Stage.OSTEOPOROSIS, Stage.LOW_BONE_MASS}


def test_configured_thresholds_decide_and_are_recorded(
    make_pipeline, chest_dataset: Dataset
) -> None:
    # Stage 1 at 0.018 is osteoporosis under a threshold of 0.01.
    settings = PipelineSettings(thresholds={"stage1": 0.01, "stage2": 0.3})
    pipeline = make_pipeline(
        logits={Stage.OSTEOPOROSIS: LOW, Stage.LOW_BONE_MASS: LOW}, settings=settings
    )
    result = pipeline.run(load_radiograph(chest_dataset))
    assert result.category is Category.OSTEOPOROSIS
    assert [finding.threshold for finding in result.findings] == [0.01, 0.3]
    parameters = dict(result.model.parameters)
    assert parameters["stage1_threshold"] == "0.01" and parameters["stage2_threshold"] == "0.3"


def test_heat_maps_cover_the_whole_film_in_unit_range(
    make_pipeline, chest_dataset: Dataset
) -> None:
    radiograph = load_radiograph(chest_dataset)
    pipeline = make_pipeline(logits={Stage.OSTEOPOROSIS: LOW})  # stage 2 keeps its random head
    analysis = pipeline.analyse(radiograph)
    assert set(analysis.heatmaps) == {Stage.OSTEOPOROSIS, Stage.LOW_BONE_MASS}
    for heatmap in analysis.heatmaps.values():
        assert heatmap.shape == radiograph.shape and heatmap.dtype == np.float32
        assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    stage2_map = analysis.heatmaps[Stage.LOW_BONE_MASS]
    assert stage2_map.max() == pytest.approx(1.0, abs=0.02)
    # The result shows the map of the stage that gave the answer.
    assert np.array_equal(analysis.result.heatmap, stage2_map)


def test_bfloat16_autocast_gives_nearly_the_same_probabilities(
    make_pipeline, chest_dataset: Dataset
) -> None:
    radiograph = load_radiograph(chest_dataset)
    pipeline = make_pipeline()
    exact = pipeline.run(radiograph)
    with InferencePlan(bfloat16=True).autocast():
        reduced = pipeline.run(radiograph)
    for a, b in zip(exact.findings, reduced.findings, strict=True):
        if a.probability is not None and b.probability is not None:
            assert abs(a.probability - b.probability) < 0.02


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"PatientAge": "042Y"}, "patient aged 42"),
        ({"PatientAge": None, "PatientBirthDate": None}, "patient age unknown"),
        ({"ViewPosition": "AP"}, "AP film: the method is intended for PA films"),
    ],
)
def test_film_outside_intended_use_is_analysed_with_a_note(
    make_pipeline, chest_dataset: Dataset, edits: dict[str, str | None], expected: str
) -> None:
    for keyword, value in edits.items():
        if value is None:
            delattr(chest_dataset, keyword)
        else:
            setattr(chest_dataset, keyword, value)
    result = make_pipeline().run(load_radiograph(chest_dataset))
    assert result.evaluable
    assert any(note.startswith(expected) for note in result.notes), result.notes

    skipping = make_pipeline(settings=PipelineSettings(outside_intended_use=IntendedUsePolicy.SKIP))
    with pytest.raises(OutsideIntendedUse, match=expected):
        skipping.run(load_radiograph(chest_dataset))


def test_film_inside_intended_use_has_no_intended_use_note(
    make_pipeline, chest_dataset: Dataset
) -> None:
    skipping = make_pipeline(settings=PipelineSettings(outside_intended_use=IntendedUsePolicy.SKIP))
    result = skipping.run(load_radiograph(chest_dataset))
    assert result.evaluable
    assert not any("intended" in note for note in result.notes)


def test_lateral_film_is_not_evaluable_with_the_reason(
    make_pipeline, chest_dataset: Dataset
) -> None:
    chest_dataset.ViewPosition = "LL"
    result = make_pipeline().run(load_radiograph(chest_dataset))
    assert not result.evaluable and result.category is None
    assert "lateral" in (result.reason or "")
    assert result.heatmap is None and result.findings == ()


def test_flat_centre_is_not_evaluable(make_pipeline, chest_dataset: Dataset) -> None:
    pixels = chest_dataset.pixel_array.copy()
    rows, columns = pixels.shape
    pixels[rows // 4 : -(rows // 4), columns // 4 : -(columns // 4)] = 1000
    chest_dataset.PixelData = pixels.tobytes()
    result = make_pipeline().run(load_radiograph(chest_dataset))
    assert not result.evaluable and "contrast" in (result.reason or "")


def test_final_category_follows_the_two_stage_rule() -> None:
    assert final_category(0.5, None, 0.5, 0.5) is Category.OSTEOPOROSIS
    assert final_category(0.49, 0.5, 0.5, 0.5) is Category.LOW_BONE_MASS
    assert final_category(0.49, 0.49, 0.5, 0.5) is Category.NORMAL
    with pytest.raises(ValueError, match="stage 2"):
        final_category(0.1, None, 0.5, 0.5)
