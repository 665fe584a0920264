"""ISCD hip rule: lowest of femoral neck and total hip, lowest side with both hips."""

from __future__ import annotations

import pytest

from osteonode.bone import Category, HipSideMeasure, Laterality, MeasurementSite, lowest_hip

RIGHT, LEFT = Laterality.RIGHT, Laterality.LEFT


def test_lowest_site_on_the_lowest_side_decides():
    decision = lowest_hip([
        HipSideMeasure(RIGHT, femoral_neck_t=-1.8, total_hip_t=-1.2),
        HipSideMeasure(LEFT, femoral_neck_t=-2.63, total_hip_t=-2.0),
    ])
    assert (decision.side, decision.site) == (LEFT, MeasurementSite.FEMORAL_NECK)
    assert decision.t_score == -2.63
    assert decision.reported_t_score == -2.6
    assert decision.category is Category.OSTEOPOROSIS


def test_total_hip_decides_when_it_is_lower():
    decision = lowest_hip([HipSideMeasure(RIGHT, femoral_neck_t=-0.9, total_hip_t=-1.26)])
    assert (decision.side, decision.site, decision.reported_t_score) == (
        RIGHT, MeasurementSite.TOTAL_HIP, -1.3
    )
    assert decision.category is Category.LOW_BONE_MASS


def test_one_site_on_one_side_is_enough():
    decision = lowest_hip([HipSideMeasure(LEFT, total_hip_t=-0.4)])
    assert (decision.side, decision.site, decision.category) == (
        LEFT, MeasurementSite.TOTAL_HIP, Category.NORMAL
    )


def test_equal_t_scores_are_resolved_the_same_way_in_any_order():
    sides = [
        HipSideMeasure(LEFT, femoral_neck_t=-2.0, total_hip_t=-2.0),
        HipSideMeasure(RIGHT, femoral_neck_t=-2.0, total_hip_t=-1.5),
    ]
    for order in (sides, sides[::-1]):
        decision = lowest_hip(order)
        assert (decision.site, decision.side) == (MeasurementSite.FEMORAL_NECK, RIGHT)


def test_no_hip_is_refused():
    with pytest.raises(ValueError, match="at least one hip"):
        lowest_hip([])


def test_the_same_side_twice_is_refused():
    with pytest.raises(ValueError, match="only once"):
        lowest_hip([HipSideMeasure(LEFT, -1.0), HipSideMeasure("L", -2.0)])


def test_a_side_without_any_t_score_is_refused():
    with pytest.raises(ValueError, match="femoral neck or total hip"):
        HipSideMeasure(RIGHT)
