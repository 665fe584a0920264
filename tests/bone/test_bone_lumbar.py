"""ISCD lumbar rules: flagged and discordant vertebrae, the two-vertebra minimum, combined result.

Every scenario uses the Hologic L1-L4 reference 1.047 +- 0.110, so a vertebra with T-score t has
BMD 1.047 + 0.110 t (written next to each BMD below).
"""

from __future__ import annotations

import pytest

from osteonode.bone import (
    DxaManufacturer,
    ExclusionKind,
    MeasurementSite,
    Sex,
    Vertebra,
    VertebraMeasure,
    Category,
    YoungAdultReference,
    combine_lumbar,
    t_score,
)

REFERENCE = YoungAdultReference(
    1.047, 0.110, MeasurementSite.LUMBAR_L1_L4, Sex.FEMALE, DxaManufacturer.HOLOGIC, "test"
)
L1, L2, L3, L4 = Vertebra


def measured(label: Vertebra, bmd: float) -> VertebraMeasure:
    return VertebraMeasure(label, bmd, t_score(bmd, REFERENCE))


def flagged(label: Vertebra, reason: str) -> VertebraMeasure:
    return VertebraMeasure(label, None, None, evaluable=False, reason=reason)


def test_four_concordant_vertebrae_are_all_used():
    summary = combine_lumbar(
        [measured(L1, 0.85), measured(L2, 0.87), measured(L3, 0.90), measured(L4, 0.92)], REFERENCE
    )
    # mean BMD (0.85 + 0.87 + 0.90 + 0.92) / 4 = 0.885; T = (0.885 - 1.047) / 0.110 = -1.4727
    assert summary.evaluable and summary.reason is None
    assert summary.included == (L1, L2, L3, L4)
    assert summary.excluded == ()
    assert summary.bmd == pytest.approx(0.885, abs=1e-12)
    assert summary.t_score == pytest.approx(-1.472727, abs=1e-6)
    assert summary.reported_t_score == -1.5
    assert summary.category is Category.LOW_BONE_MASS
    assert summary.notes == ()
    assert summary.reference is REFERENCE


def test_one_sclerotic_vertebra_is_excluded_and_the_category_changes():
    # L1 0.80 (T -2.245), L2 0.82 (-2.064), L3 1.00 (-0.427), L4 0.84 (-1.882).
    # L3 differs from both neighbours (1.64, 1.45): outlier, 1.64 from the others' median -2.064.
    # L4 differs by > 1.0 from its only neighbour L3 too, but lies only 0.18 from the median: kept.
    summary = combine_lumbar(
        [measured(L4, 0.84), measured(L3, 1.00), measured(L2, 0.82), measured(L1, 0.80)], REFERENCE
    )
    assert summary.included == (L1, L2, L4)
    (exclusion,) = summary.excluded
    assert (exclusion.label, exclusion.kind) == (L3, ExclusionKind.DISCORDANT)
    assert "-0.43" in exclusion.reason and "L2 (-2.06)" in exclusion.reason
    assert "L4 (-1.88)" in exclusion.reason
    # mean (0.80 + 0.82 + 0.84) / 3 = 0.82; T = (0.82 - 1.047) / 0.110 = -2.0636 -> -2.1
    # (all four would give 0.865 -> T -1.65: L3 hides 0.4 of T-score)
    assert summary.bmd == pytest.approx(0.82, abs=1e-12)
    assert summary.reported_t_score == -2.1
    assert summary.category is Category.LOW_BONE_MASS


def test_two_adjacent_discordant_vertebrae_are_excluded_one_after_the_other():
    # L1 0.937 (T -1.0), L2 1.157 (T +1.0), L3 0.717 (T -3.0), L4 0.915 (T -1.2).
    # Round 1: outliers L1, L2, L3, L4 (each differs > 1.0 from every neighbour). Distance from the
    # median of the others: L2 |1.0 - (-1.2)| = 2.2 (largest), L3 2.0, L1 1.1, L4 0.8 -> drop L2.
    # Round 2 (L1, L3, L4): L3 is 1.9 from median(-1.0, -1.2) = -1.1, L1 1.1, L4 0.8 -> drop L3.
    # Round 3: L1 and L4 differ by 0.2 -> done.
    summary = combine_lumbar(
        [measured(L1, 0.937), measured(L2, 1.157), measured(L3, 0.717), measured(L4, 0.915)],
        REFERENCE,
    )
    assert summary.evaluable
    assert [e.label for e in summary.excluded] == [L2, L3]
    assert all(e.kind is ExclusionKind.DISCORDANT for e in summary.excluded)
    assert summary.included == (L1, L4)
    # mean (0.937 + 0.915) / 2 = 0.926; T = (0.926 - 1.047) / 0.110 = -1.1 -> low bone mass
    assert summary.bmd == pytest.approx(0.926, abs=1e-12)
    assert summary.reported_t_score == -1.1
    assert summary.category is Category.LOW_BONE_MASS


def test_a_step_between_two_pairs_excludes_nothing_but_asks_for_review():
    # L1 0.827 (T -2.0), L2 0.838 (-1.9), L3 0.992 (-0.5), L4 1.003 (-0.4): no vertebra differs from
    # *every* neighbour, so the numbers cannot say which pair is abnormal.
    summary = combine_lumbar(
        [measured(L1, 0.827), measured(L2, 0.838), measured(L3, 0.992), measured(L4, 1.003)],
        REFERENCE,
    )
    assert summary.included == (L1, L2, L3, L4)
    (note,) = summary.notes
    assert note.startswith("L2 (-1.90) and L3 (-0.50) differ by more than 1.0")
    # mean 3.66 / 4 = 0.915; T = (0.915 - 1.047) / 0.110 = -1.2
    assert summary.reported_t_score == -1.2


def test_a_difference_of_exactly_one_is_not_discordant():
    # L1 0.827 (T -2.0), L2 0.937 (T -1.0), L3 0.827 (T -2.0), L4 0.838 (T -1.9): L2 is exactly 1.0
    # from both neighbours, which is not "more than 1.0" (however the floats fall).
    summary = combine_lumbar(
        [measured(L1, 0.827), measured(L2, 0.937), measured(L3, 0.827), measured(L4, 0.838)],
        REFERENCE,
    )
    assert summary.included == (L1, L2, L3, L4)
    assert summary.notes == ()


def test_flagged_vertebra_keeps_the_pipelines_reason():
    summary = combine_lumbar(
        [measured(L1, 0.80), measured(L2, 0.82), measured(L3, 0.84),
         flagged(L4, "metal implant overlaps L4")],
        REFERENCE,
    )
    (exclusion,) = summary.excluded
    assert (exclusion.label, exclusion.kind, exclusion.reason) == (
        L4, ExclusionKind.FLAGGED, "metal implant overlaps L4"
    )
    # mean (0.80 + 0.82 + 0.84) / 3 = 0.82 -> T -2.0636 -> -2.1
    assert summary.included == (L1, L2, L3)
    assert summary.reported_t_score == -2.1


def test_vertebrae_either_side_of_a_flagged_one_become_neighbours():
    # L1 0.80 (T -2.245), L2 flagged, L3 0.95 (-0.882), L4 0.96 (-0.791): L1's neighbour is now L3,
    # 1.36 away -> L1 is the outlier (1.41 from median of L3, L4); L3 has L4 within 0.1 -> kept.
    summary = combine_lumbar(
        [measured(L1, 0.80), flagged(L2, "compression fracture"), measured(L3, 0.95),
         measured(L4, 0.96)],
        REFERENCE,
    )
    assert [(e.label, e.kind) for e in summary.excluded] == [
        (L2, ExclusionKind.FLAGGED), (L1, ExclusionKind.DISCORDANT)
    ]
    assert summary.included == (L3, L4)
    # mean (0.95 + 0.96) / 2 = 0.955; T = (0.955 - 1.047) / 0.110 = -0.836 -> -0.8 -> normal
    assert summary.reported_t_score == -0.8
    assert summary.category is Category.NORMAL


def test_one_vertebra_left_is_not_evaluable():
    summary = combine_lumbar(
        [flagged(L1, "not detected"), flagged(L2, "scoliosis"), flagged(L3, "scoliosis"),
         measured(L4, 0.80)],
        REFERENCE,
    )
    assert not summary.evaluable
    assert summary.included == (L4,)
    assert summary.bmd is summary.t_score is summary.category is summary.reported_t_score is None
    assert "fewer than 2 evaluable vertebrae (remaining: L4)" in summary.reason
    assert [e.reason for e in summary.excluded] == ["not detected", "scoliosis", "scoliosis"]


def test_two_discordant_vertebrae_left_are_not_evaluable():
    # L3 0.80 (T -2.245) and L4 0.95 (T -0.882) differ by 1.36: equally far from each other, so
    # there is no telling which to drop, and one alone is never reported.
    summary = combine_lumbar(
        [flagged(L1, "artefact"), flagged(L2, "artefact"), measured(L3, 0.80), measured(L4, 0.95)],
        REFERENCE,
    )
    assert not summary.evaluable
    assert "L3 (-2.25)" in summary.reason and "L4 (-0.88)" in summary.reason
    assert "cannot decide" in summary.reason
    assert summary.included == (L3, L4)


def test_missing_vertebrae_are_listed_as_not_measured():
    summary = combine_lumbar([measured(L2, 0.82), measured(L3, 0.84)], REFERENCE)
    assert [(e.label, e.kind) for e in summary.excluded] == [
        (L1, ExclusionKind.NOT_MEASURED), (L4, ExclusionKind.NOT_MEASURED)
    ]
    # mean 0.83; T = (0.83 - 1.047) / 0.110 = -1.9727 -> -2.0
    assert summary.reported_t_score == -2.0


def test_no_vertebrae_is_not_evaluable():
    summary = combine_lumbar([], REFERENCE)
    assert not summary.evaluable
    assert "remaining: none" in summary.reason
    assert len(summary.excluded) == 4


def test_a_vertebra_given_twice_is_refused():
    with pytest.raises(ValueError, match="L2 is given more than once"):
        combine_lumbar([measured(L2, 0.8), measured(L2, 0.9)], REFERENCE)


def test_a_hip_reference_is_refused():
    hip = YoungAdultReference(0.942, 0.122, "total_hip", "F", "hologic", "test")
    with pytest.raises(ValueError, match="L1-L4 reference"):
        combine_lumbar([measured(L1, 0.8), measured(L2, 0.8)], hip)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bmd": None}, "needs bmd and t_score"),
        ({"reason": "why"}, "no exclusion reason"),
        ({"evaluable": False}, "needs a reason"),
        ({"evaluable": False, "reason": " "}, "needs a reason"),
        ({"bmd": -0.1}, "bmd must be > 0"),
        ({"t_score": float("nan")}, "finite"),
        ({"label": "L5"}, "L5"),
    ],
)
def test_vertebra_measure_checks_its_fields(kwargs, message):
    values = {"label": "L1", "bmd": 0.8, "t_score": -2.2}
    with pytest.raises(ValueError, match=message):
        VertebraMeasure(**(values | kwargs))
