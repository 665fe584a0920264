"""Running a pipeline over a cohort: rows turned into predictions, bad rows kept as exclusions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osteonode.bone import Laterality, Sex
from osteonode.cli import app
from osteonode.evaluate.cohort import (
    CohortError,
    CohortRow,
    predictions_from_result,
    read_cohort_rows,
)
from osteonode.evaluate.predictions import NOT_OSTEOPOROSIS, Status, write_predictions
from osteonode.pipelines.base import (
    Category,
    Finding,
    FindingSite,
    ModelIdentity,
    Region,
    Result,
    SourceImage,
)

SOURCE = SourceImage("1.2.840.10008.5.1.4.1.1.1", "1.2.3.4", "1.2.3", "1.2.3.1", rows=64, columns=64)
MODEL = ModelIdentity("demo", "1", "test", synthetic=True, diagnostic_use=False)


def row(**changes) -> CohortRow:
    values = dict(line=2, path=Path("a.dcm"), id="1.2.3.4", sex=Sex.FEMALE, age=71.0,
                  truth_category="osteoporosis", truth_bmd=0.71,
                  side_truth={Laterality.RIGHT: "osteoporosis", Laterality.LEFT: "low_bone_mass"})
    values.update(changes)
    return CohortRow(**values)


def test_lumbar_result_gives_category_and_l1_l4_bmd():
    result = Result("lumbar", SOURCE, MODEL, site=FindingSite.LUMBAR_SPINE, evaluable=True, category=Category.LOW_BONE_MASS,
                    t_score=-1.8, findings=(Finding("L1-L4", FindingSite.LUMBAR_SPINE, bmd_g_cm2=0.83),))
    [prediction] = predictions_from_result(row(), result)
    assert (prediction.truth_category, prediction.predicted_category) == ("osteoporosis", "low_bone_mass")
    assert (prediction.truth_bmd, prediction.predicted_bmd) == (0.71, 0.83)
    assert prediction.sex is Sex.FEMALE and prediction.age == 71.0


def test_chest_result_gives_both_stage_probabilities():
    result = Result("chest", SOURCE, MODEL, site=FindingSite.CHEST, evaluable=True, category=Category.NORMAL, findings=(
        Finding("Stage 1: osteoporosis", FindingSite.CHEST, probability=0.2, threshold=0.5,
                osteoporosis_present=False),
        Finding("Stage 2: low bone mass", FindingSite.CHEST, probability=0.3, threshold=0.5),
    ))
    [prediction] = predictions_from_result(row(truth_category="normal"), result)
    assert (prediction.score, prediction.score_low_bone_mass) == (0.2, 0.3)
    assert prediction.truth_bmd is None


def test_hip_result_gives_one_row_per_side_and_keeps_an_unassessed_side_as_an_exclusion():
    result = Result("hip", SOURCE, MODEL, site=FindingSite.HIP, evaluable=True, category=Category.OSTEOPOROSIS, findings=(
        Finding("Right hip", FindingSite.HIP, Laterality.RIGHT, probability=0.9, threshold=0.5,
                osteoporosis_present=True, region=Region.box(1, 1, 20, 30)),
        Finding("Left hip", FindingSite.HIP, Laterality.LEFT, evaluable=False, included=False,
                reason="prosthesis"),
    ))
    right, left = predictions_from_result(row(), result)
    assert (right.side, right.truth_category, right.predicted_category, right.score) == (
        Laterality.RIGHT, "osteoporosis", "osteoporosis", 0.9)
    assert (left.side, left.status, left.exclusion_reason) == (Laterality.LEFT, Status.EXCLUDED, "prosthesis")
    assert NOT_OSTEOPOROSIS == "not_osteoporosis"


def test_not_evaluable_film_is_an_exclusion_with_the_pipeline_reason():
    result = Result("lumbar", SOURCE, MODEL, site=FindingSite.LUMBAR_SPINE, evaluable=False, reason="L3 not detected")
    [prediction] = predictions_from_result(row(), result)
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


def _hip_result(right: float, left: float) -> Result:
    findings = tuple(
        Finding(name, FindingSite.HIP, side, probability=p, threshold=0.5, osteoporosis_present=p >= 0.5,
                category=Category.OSTEOPOROSIS if p >= 0.5 else Category.NOT_OSTEOPOROSIS)
        for name, side, p in (("Right hip", Laterality.RIGHT, right), ("Left hip", Laterality.LEFT, left))
    )
    film = Category.OSTEOPOROSIS if max(right, left) >= 0.5 else Category.NOT_OSTEOPOROSIS
    return Result("hip", SOURCE, MODEL, site=FindingSite.HIP, evaluable=True, category=film, findings=findings)


def test_hip_predictions_say_not_osteoporosis_and_validate_as_a_two_class_table(tmp_path):
    # (right truth, left truth, right probability, left probability); truth as the cohort gives it.
    films = [("osteoporosis", "low_bone_mass", 0.9, 0.2), ("normal", "not_osteoporosis", 0.7, 0.1),
             ("osteoporosis", "osteoporosis", 0.3, 0.8), ("low_bone_mass", "normal", 0.4, 0.2)]
    predictions = []
    for index, (right_truth, left_truth, right, left) in enumerate(films):
        cohort_row = row(id=f"2.25.{index}", side_truth={Laterality.RIGHT: right_truth, Laterality.LEFT: left_truth})
        predictions += predictions_from_result(cohort_row, _hip_result(right, left))
    assert [(p.truth_category, p.predicted_category) for p in predictions[:2]] == [
        ("osteoporosis", "osteoporosis"), (NOT_OSTEOPOROSIS, NOT_OSTEOPOROSIS)]
    assert {p.predicted_category for p in predictions} == {"osteoporosis", "not_osteoporosis"}
    assert {p.truth_category for p in predictions} == {"osteoporosis", "not_osteoporosis"}

    path = write_predictions(predictions, tmp_path / "predictions.csv")
    out = tmp_path / "report"
    outcome = CliRunner().invoke(app, ["validate", "--predictions", str(path), "--out", str(out),
                                       "--bootstrap", "50"])
    assert outcome.exit_code == 0, outcome.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["labels"] == ["not_osteoporosis", "osteoporosis"]
    # Rows truth, columns prediction: 4 true negatives, 1 false positive, 1 false negative, 2 hits.
    assert metrics["classification"]["confusion_matrix"] == [[4, 1], [1, 2]]
    assert [entry["label"] for entry in metrics["classification"]["per_class"]] == [
        "not_osteoporosis", "osteoporosis"]


def test_a_hip_cohort_may_give_its_side_truth_as_not_osteoporosis(tmp_path):
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("file,sex,age,right_category,left_t_score\na.dcm,F,70,not_osteoporosis,-2.8\n")
    [cohort_row] = read_cohort_rows(cohort)
    assert cohort_row.problem is None
    assert cohort_row.side_truth == {Laterality.RIGHT: NOT_OSTEOPOROSIS, Laterality.LEFT: "osteoporosis"}
