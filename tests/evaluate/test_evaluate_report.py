"""``osteonode validate --predictions`` recomputes the papers' tables and figures from a file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from osteonode.bone import Sex
from osteonode.cli import app
from osteonode.evaluate.metrics import regression_report, roc_auc
from osteonode.evaluate.predictions import Prediction, Status, write_predictions
from osteonode.evaluate.report import AgeBand, ValidationSettings, age_band, analyse

runner = CliRunner()
THREE_CLASSES = ("normal", "low_bone_mass", "osteoporosis")
#: Inamori et al. (METHODS.md section 1): rows = truth, columns = prediction.
PAPER_MATRIX = ((126, 0, 0), (32, 86, 0), (0, 16, 68))


def _rows_from_matrix(matrix: tuple[tuple[int, ...], ...], labels: tuple[str, ...]) -> list[Prediction]:
    rows = []
    for truth, counts in zip(labels, matrix):
        for predicted, count in zip(labels, counts):
            rows += [Prediction(id=f"1.2.826.0.1.{len(rows) + k}", truth_category=truth,
                                predicted_category=predicted) for k in range(count)]
    return rows


def _synthetic_cohort(n: int = 120, seed: int = 3) -> list[Prediction]:
    """Women and men of all ages with DXA BMD, an estimate, and a score that ranks them."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n):
        truth_bmd = float(rng.uniform(0.55, 1.25))
        predicted_bmd = float(np.clip(truth_bmd + rng.normal(0.02, 0.06), 0.2, 2.0))
        truth = THREE_CLASSES[0 if truth_bmd > 0.95 else 1 if truth_bmd > 0.75 else 2]
        predicted = THREE_CLASSES[0 if predicted_bmd > 0.95 else 1 if predicted_bmd > 0.75 else 2]
        rows.append(Prediction(
            id=f"2.25.{index}", sex=(Sex.FEMALE, Sex.MALE)[index % 2], age=float(40 + index % 55),
            truth_category=truth, predicted_category=predicted,
            score=float(np.clip(1.6 - 1.4 * predicted_bmd + rng.normal(0, 0.1), 0, 1)),
            truth_bmd=truth_bmd, predicted_bmd=predicted_bmd,
        ))
    return rows


def _validate(tmp_path: Path, rows: list[Prediction], *options: str) -> tuple[dict[str, Any], str]:
    predictions = write_predictions(rows, tmp_path / "predictions.csv")
    out = tmp_path / "report"
    result = runner.invoke(app, ["validate", "--predictions", str(predictions), "--out", str(out),
                                 "--bootstrap", "200", *options])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=_refuse_constant)
    return metrics, (out / "report.html").read_text()


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"metrics.json holds {name}, which is not JSON")


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)" alt="([^"]*)"', page)


def test_the_papers_confusion_matrix_reproduces_its_published_figures(tmp_path: Path) -> None:
    metrics, page = _validate(tmp_path, _rows_from_matrix(PAPER_MATRIX, THREE_CLASSES))
    classification = metrics["classification"]
    assert classification["confusion_matrix"] == [list(row) for row in PAPER_MATRIX]
    published = {"normal": (0.902, 1.000, 0.842, 0.803),
                 "low_bone_mass": (0.854, 0.729, 0.924, 0.673),
                 "osteoporosis": (0.951, 0.810, 1.000, 0.863)}
    for entry in classification["per_class"]:
        found = (entry["accuracy"]["estimate"], entry["sensitivity"]["estimate"],
                 entry["specificity"]["estimate"], entry["cohen_kappa"])
        assert tuple(round(value, 3) for value in found) == published[entry["label"]]
    assert round(classification["quadratic_weighted_kappa"], 3) == 0.884
    assert metrics["flow"] == {"received": 328, "excluded": 0, "analysed": 328,
                               "excluded_by_reason": {}}
    assert metrics["regression"] is None and metrics["roc"] == {}
    assert "Not available: the predictions have no truth_bmd/predicted_bmd pairs" in page
    assert "0.902 (" in page and "0.884" in page


def test_bmd_columns_give_regression_metrics_and_both_figures(tmp_path: Path) -> None:
    rows = _synthetic_cohort()
    metrics, page = _validate(tmp_path, rows)
    observed = np.array([row.truth_bmd for row in rows])
    predicted = np.array([row.predicted_bmd for row in rows])
    expected = regression_report(observed, predicted).to_dict()
    regression = metrics["regression"]
    for key in ("correlation", "rmse", "mae", "nrmse", "n"):
        assert regression[key] == pytest.approx(expected[key])
    difference = predicted - observed
    agreement = regression["bland_altman"]
    assert agreement["mean_difference"] == pytest.approx(difference.mean())
    assert agreement["upper_limit"] == pytest.approx(difference.mean() + 1.959964 * difference.std(ddof=1))
    slope, intercept = np.polyfit(observed, predicted, 1)
    assert (regression["fit"]["slope"], regression["fit"]["intercept"]) == pytest.approx((slope, intercept))
    alts = [alt for _, alt in _images(page)]
    assert "scatter of observed against estimated BMD" in alts
    assert "Bland-Altman plot of estimated against observed BMD" in alts
    assert all(source.startswith("data:image/png;base64,") for source, _ in _images(page))


def test_a_binary_file_with_scores_gives_the_roc_curve(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rows = []
    for index in range(80):
        porotic = index % 3 == 0
        score = float(np.clip(rng.normal(0.65 if porotic else 0.35, 0.2), 0, 1))
        rows.append(Prediction(
            id=f"2.25.{index}", side=None, truth_category="osteoporosis" if porotic else "not_osteoporosis",
            predicted_category="osteoporosis" if score >= 0.5 else "not_osteoporosis", score=score))
    metrics, page = _validate(tmp_path, rows, "--seed", "11")
    assert metrics["settings"]["labels"] == ["not_osteoporosis", "osteoporosis"]
    roc = metrics["roc"]["osteoporosis_vs_not"]
    truth = [row.truth_category == "osteoporosis" for row in rows]
    assert roc["auc"]["auc"] == pytest.approx(roc_auc(truth, [row.score for row in rows]))
    assert roc["auc"]["lower"] < roc["auc"]["auc"] < roc["auc"]["upper"]
    assert (roc["auc"]["n_resamples"], roc["auc"]["seed"]) == (200, 11)
    assert roc["curve"]["false_positive_rate"][0] == 0.0 and roc["curve"]["true_positive_rate"][-1] == 1.0
    assert "ROC curves" in [alt for _, alt in _images(page)]


def test_the_same_seed_gives_the_same_intervals(tmp_path: Path) -> None:
    rows = _synthetic_cohort(60)
    settings = ValidationSettings(n_resamples=100, seed=5)
    first, second = analyse(rows, settings).to_dict(), analyse(rows, settings).to_dict()
    assert first["roc"] == second["roc"]
    other = analyse(rows, ValidationSettings(n_resamples=100, seed=6)).to_dict()
    lower = first["roc"]["osteoporosis_vs_not"]["auc"]["lower"]
    assert other["roc"]["osteoporosis_vs_not"]["auc"]["lower"] != lower


def test_the_chest_second_stage_score_gives_a_low_bone_mass_curve(tmp_path: Path) -> None:
    rows = []
    for index, truth in enumerate(THREE_CLASSES * 10):
        # Stage 2 runs only where stage 1 said "not osteoporosis"; it finds most low bone mass.
        stage_two_score = {"normal": 0.2, "low_bone_mass": 0.8 if index % 4 else 0.2}.get(truth)
        rows.append(Prediction(id=f"c{index}", truth_category=truth, predicted_category=truth,
                               score=0.9 if truth == "osteoporosis" else 0.1,
                               score_low_bone_mass=stage_two_score))
    metrics, _ = _validate(tmp_path, rows)
    stage_two = metrics["roc"]["low_bone_mass_vs_normal"]["auc"]
    assert (stage_two["n_positive"], stage_two["n_negative"]) == (10, 10)
    scored = [row for row in rows if row.score_low_bone_mass is not None]
    assert stage_two["auc"] == pytest.approx(roc_auc([row.truth_category == "low_bone_mass" for row in scored],
                                                     [row.score_low_bone_mass for row in scored]))


def test_positive_class_option_gives_a_two_class_analysis(tmp_path: Path) -> None:
    metrics, _ = _validate(tmp_path, _rows_from_matrix(PAPER_MATRIX, THREE_CLASSES),
                           "--positive", "osteoporosis")
    assert metrics["settings"]["labels"] == ["not_osteoporosis", "osteoporosis"]
    assert metrics["classification"]["confusion_matrix"] == [[244, 0], [16, 68]]


def test_a_positive_class_the_file_cannot_split_is_refused(tmp_path: Path) -> None:
    rows = [Prediction(id="a", truth_category="not_osteoporosis", predicted_category="osteoporosis")]
    predictions = write_predictions(rows, tmp_path / "predictions.csv")
    result = runner.invoke(app, ["validate", "--predictions", str(predictions), "--out",
                                 str(tmp_path / "out"), "--positive", "low_bone_mass"])
    assert result.exit_code == 2
    assert "cannot be split for the positive class 'low_bone_mass'" in result.output
    assert not (tmp_path / "out").exists()


def test_exclusions_appear_in_the_flow_with_their_reasons(tmp_path: Path) -> None:
    rows = _synthetic_cohort(30)
    rows[0] = Prediction(id="x1", status=Status.EXCLUDED, exclusion_reason="lateral view")
    rows[1] = Prediction(id="x2", status=Status.EXCLUDED, exclusion_reason="lateral view")
    rows[2] = Prediction(id="x3", truth_category="normal", predicted_category="normal", truth_bmd=4.0,
                         predicted_bmd=1.0)
    metrics, page = _validate(tmp_path, rows)
    assert metrics["flow"] == {
        "received": 30, "excluded": 3, "analysed": 27,
        "excluded_by_reason": {"lateral view": 2,
                               "truth_bmd outside the physical range 0.1-2.5 g/cm2": 1},
    }
    assert "lateral view: 2" in page
    assert metrics["characteristics"]["all"]["n"] == 27


def test_subgroups_by_sex_and_age_band_say_why_a_statistic_is_missing(tmp_path: Path) -> None:
    rows = _synthetic_cohort(90)
    rows.append(Prediction(id="young", sex=Sex.OTHER, age=30.0, truth_category="normal",
                           predicted_category="normal", score=0.1, truth_bmd=1.1, predicted_bmd=1.05))
    metrics, page = _validate(tmp_path, rows)
    by_sex = metrics["subgroups"]["sex"]
    assert {name: group["n"] for name, group in by_sex.items()} == {"female": 45, "male": 45, "other": 1}
    assert by_sex["other"]["auc"] == {"not_computed": "truth holds a single class; the AUC needs "
                                                      "positive and negative cases"}
    assert by_sex["other"]["regression"] == {"not_computed": "1 BMD pair(s); the regression needs at least 4"}
    by_age = metrics["subgroups"]["age_band"]
    expected = {band.value: sum(age_band(row.age) is band for row in rows) for band in AgeBand}
    assert {name: group["n"] for name, group in by_age.items()} == {k: v for k, v in expected.items() if v}
    assert by_age["<50"]["classification"]["n"] == expected["<50"]
    assert "By sex" in page and "By age band (years)" in page


@pytest.mark.parametrize(
    ("age", "band"),
    [(49.9, AgeBand.UNDER_50), (50.0, AgeBand.FROM_50_TO_64), (64.99, AgeBand.FROM_50_TO_64),
     (65.0, AgeBand.FROM_65_TO_79), (80.0, AgeBand.FROM_80), (None, AgeBand.UNKNOWN)],
)
def test_age_bands_have_inclusive_lower_bounds(age: float | None, band: AgeBand) -> None:
    assert age_band(age) is band


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,truth_category\na,normal\n", "missing required column(s) ['predicted_category']"),
        ("id,truth_category,predicted_category\na,normal,normal\na,normal,normal\n", "'a' repeats line 2"),
        ("id,truth_category,predicted_category\na,normal,fragile\n", "predicted_category 'fragile'"),
        ("id,age,truth_category,predicted_category\na,n/a,normal,normal\n", "age 'n/a' is not a number"),
        ("id,status,exclusion_reason,truth_category,predicted_category\na,excluded,implant,,\n",
         "no row is analysed (1 excluded)"),
    ],
)
def test_bad_files_stop_the_command_with_a_message_and_no_report(
    tmp_path: Path, content: str, message: str
) -> None:
    predictions = tmp_path / "predictions.csv"
    predictions.write_text(content)
    result = runner.invoke(app, ["validate", "--predictions", str(predictions),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--cohort", "cohort.csv", "--pipeline", "lumbar"], "cannot read the cohort"),
        (["--cohort", "cohort.csv"], "--cohort needs --pipeline NAME, one of the configured pipelines: lumbar, lumbar_ap"),
        ([], "give either --predictions FILE or --cohort FILE --pipeline NAME"),
        (["--predictions", "p.csv", "--cohort", "c.csv"], "give either --predictions FILE"),
        (["--predictions", "p.csv", "--pipeline", "hip"], "--pipeline goes with --cohort"),
        (["--predictions", "p.csv", "--positive", "osteopenia"], "--positive 'osteopenia' is not one of"),
    ],
)
def test_unsupported_argument_combinations_are_explained(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, ["validate", "--out", str(tmp_path / "out"), *arguments])
    assert result.exit_code == 2
    assert message in result.output


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    _, page = _validate(tmp_path, _synthetic_cohort(40))
    assert re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", page) is None
    assert "url(" not in page and "@import" not in page
    assert "http://" not in page and "https://" not in page
    for anchor in ("flow", "characteristics", "regression", "classification", "roc", "subgroups"):
        assert f'<section id="{anchor}">' in page
