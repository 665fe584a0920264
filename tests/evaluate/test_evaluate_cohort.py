"""Running a pipeline over a cohort: rows turned into predictions, bad rows kept as exclusions."""

from __future__ import annotations

from pathlib import Path

import pytest

from osteonode.bone import Laterality, Sex, WhoCategory
from osteonode.config import PipelineName
from osteonode.evaluate.cohort import CohortError, CohortRow, predictions_from_result, read_cohort_rows
from osteonode.evaluate.predictions import NOT_OSTEOPOROSIS, Status
from osteonode.pipelines.base import Finding, FindingSite, ModelIdentity, Region, Result, SourceImage

SOURCE = SourceImage("1.2.840.10008.5.1.4.1.1.1", "1.2.3.4", "1.2.3", "1.2.3.1", rows=64, columns=64)
MODEL = ModelIdentity("demo", "1", "test", synthetic=True, diagnostic_use=False)


def row(**changes) -> CohortRow:
    values = dict(line=2, path=Path("a.dcm"), id="1.2.3.4", sex=Sex.FEMALE, age=71.0,
                  truth_category="osteoporosis", truth_bmd=0.71,
                  side_truth={Laterality.RIGHT: "osteoporosis", Laterality.LEFT: "low_bone_mass"})
    values.update(changes)
    return CohortRow(**values)


def test_lumbar_result_gives_category_and_l1_l4_bmd():
    result = Result(PipelineName.LUMBAR, SOURCE, MODEL, evaluable=True, category=WhoCategory.LOW_BONE_MASS,
                    t_score=-1.8, findings=(Finding("L1-L4", FindingSite.LUMBAR_SPINE, bmd_g_cm2=0.83),))
    [prediction] = predictions_from_result(row(), PipelineName.LUMBAR, result)
    assert (prediction.truth_category, prediction.predicted_category) == ("osteoporosis", "low_bone_mass")
    assert (prediction.truth_bmd, prediction.predicted_bmd) == (0.71, 0.83)
    assert prediction.sex is Sex.FEMALE and prediction.age == 71.0


def test_chest_result_gives_both_stage_probabilities():
    result = Result(PipelineName.CHEST, SOURCE, MODEL, evaluable=True, category=WhoCategory.NORMAL, findings=(
        Finding("Stage 1: osteoporosis", FindingSite.CHEST, probability=0.2, threshold=0.5,
                osteoporosis_present=False),
        Finding("Stage 2: low bone mass", FindingSite.CHEST, probability=0.3, threshold=0.5),
    ))
    [prediction] = predictions_from_result(row(truth_category="normal"), PipelineName.CHEST, result)
    assert (prediction.score, prediction.score_low_bone_mass) == (0.2, 0.3)
    assert prediction.truth_bmd is None


def test_hip_result_gives_one_row_per_side_and_keeps_an_unassessed_side_as_an_exclusion():
    result = Result(PipelineName.HIP, SOURCE, MODEL, evaluable=True, category=WhoCategory.OSTEOPOROSIS, findings=(
        Finding("Right hip", FindingSite.HIP, Laterality.RIGHT, probability=0.9, threshold=0.5,
                osteoporosis_present=True, region=Region.box(1, 1, 20, 30)),
        Finding("Left hip", FindingSite.HIP, Laterality.LEFT, evaluable=False, included=False,
                reason="prosthesis"),
    ))
    right, left = predictions_from_result(row(), PipelineName.HIP, result)
    assert (right.side, right.truth_category, right.predicted_category, right.score) == (
        Laterality.RIGHT, "osteoporosis", "osteoporosis", 0.9)
    assert (left.side, left.status, left.exclusion_reason) == (Laterality.LEFT, Status.EXCLUDED, "prosthesis")
    assert NOT_OSTEOPOROSIS == "not_osteoporosis"


def test_not_evaluable_film_is_an_exclusion_with_the_pipeline_reason():
    result = Result(PipelineName.LUMBAR, SOURCE, MODEL, evaluable=False, reason="L3 not detected")
    [prediction] = predictions_from_result(row(), PipelineName.LUMBAR, result)
    assert prediction.status is Status.EXCLUDED
    assert prediction.exclusion_reason == "not evaluable: L3 not detected"


def test_cohort_rows_with_problems_are_marked_not_fatal(tmp_path):
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(
        "file,sop_instance_uid,sex,age,t_score,category\n"
        "a.dcm,1.1,F,70,-2.7,\n"
        "b.dcm,1.1,M,60,,normal\n"
        "c.dcm,1.3,F,55,,osteopenic\n"
        ",1.4,F,55,,normal\n"
        "/abs/d.dcm,1.5,X,,-0.4,\n"
    )
    rows = read_cohort_rows(cohort)
    assert rows[0].truth_category == "osteoporosis" and rows[0].path == tmp_path / "a.dcm"
    assert rows[0].problem is None
    assert rows[1].problem == "duplicate of line 2 (1.1)"
    assert "bad value on line 4" in rows[2].problem
    assert rows[3].problem == "empty 'file' cell"
    assert (rows[4].path, rows[4].sex, rows[4].truth_category) == (Path("/abs/d.dcm"), Sex.UNKNOWN, "normal")


def test_a_cohort_without_a_file_column_is_refused(tmp_path):
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("path,category\na.dcm,normal\n")
    with pytest.raises(CohortError, match="'file' column"):
        read_cohort_rows(cohort)
    with pytest.raises(CohortError, match="cannot read"):
        read_cohort_rows(tmp_path / "missing.csv")
