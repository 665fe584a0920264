"""Confusion matrix, one-vs-rest statistics and kappa, against hand work, scikit-learn and the
lumbar spine paper's published table."""

import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn import metrics as sk

from osteonode.evaluate.metrics import (
    ClassificationReport,
    KappaWeighting,
    classification_report,
    classification_report_from_confusion_matrix,
    cohen_kappa,
    confusion_matrix,
    kappa_from_confusion_matrix,
)

WHO_LABELS = ("normal", "osteopenia", "osteoporosis")

# Inamori et al. (METHODS.md, section 1): rows = truth, columns = prediction, 328 images.
PUBLISHED_MATRIX = [[126, 0, 0], [32, 86, 0], [0, 16, 68]]
# label: (accuracy, sensitivity, specificity, Cohen's kappa), one-vs-rest, as published.
PUBLISHED_PER_CLASS = {
    "normal": (0.902, 1.000, 0.842, 0.803),
    "osteopenia": (0.854, 0.729, 0.924, 0.673),
    "osteoporosis": (0.951, 0.810, 1.000, 0.863),
}
PUBLISHED_QUADRATIC_WEIGHTED_KAPPA = 0.884


def _cases_from_matrix(matrix, labels):
    """Expand a truth-by-prediction table of counts into one (truth, prediction) pair per case."""
    truth, predicted = [], []
    for true_label, row in zip(labels, matrix):
        for predicted_label, count in zip(labels, row):
            truth += [true_label] * count
            predicted += [predicted_label] * count
    return truth, predicted


def _random_ordinal_ratings(seed, n=400, n_classes=4):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, size=n)
    noise = rng.choice([-1, 0, 0, 0, 1, 2], size=n)
    predicted = np.clip(truth + noise, 0, n_classes - 1)
    return truth, predicted


def test_predictions_from_the_published_table_reproduce_the_papers_statistics():
    truth, predicted = _cases_from_matrix(PUBLISHED_MATRIX, WHO_LABELS)
    report = classification_report(truth, predicted, WHO_LABELS)

    assert report.confusion_matrix == tuple(tuple(row) for row in PUBLISHED_MATRIX)
    assert report.n == 328
    for label, (accuracy, sensitivity, specificity, kappa) in PUBLISHED_PER_CLASS.items():
        metrics = report.for_label(label)
        assert round(metrics.accuracy.estimate, 3) == accuracy, label
        assert round(metrics.sensitivity.estimate, 3) == sensitivity, label
        assert round(metrics.specificity.estimate, 3) == specificity, label
        assert round(metrics.cohen_kappa, 3) == kappa, label
    assert round(report.quadratic_weighted_kappa, 3) == PUBLISHED_QUADRATIC_WEIGHTED_KAPPA


def test_published_table_by_hand_for_the_osteopenia_class():
    # One-vs-rest for osteopenia: TP 86, FN 32, FP 16, TN 194 (N 328).
    metrics = classification_report_from_confusion_matrix(PUBLISHED_MATRIX, WHO_LABELS).per_class[1]
    assert (metrics.true_positives, metrics.false_negatives) == (86, 32)
    assert (metrics.false_positives, metrics.true_negatives) == (16, 194)
    assert metrics.accuracy.estimate == 280 / 328
    assert metrics.ppv.estimate == 86 / 102
    assert metrics.npv.estimate == 194 / 226
    assert metrics.f1 == pytest.approx(2 * 86 / (2 * 86 + 16 + 32))
    p_observed = 280 / 328
    p_expected = (118 * 102 + 210 * 226) / 328**2
    assert metrics.cohen_kappa == pytest.approx((p_observed - p_expected) / (1 - p_expected))


def test_confusion_matrix_has_truth_in_rows_and_predictions_in_columns():
    matrix = confusion_matrix(
        ["normal", "normal", "osteoporosis"], ["osteopenia", "normal", "normal"], WHO_LABELS
    )
    assert matrix.tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 0]]
    assert matrix.dtype == np.int64


def test_confusion_matrix_follows_the_given_label_order_like_scikit_learn():
    truth, predicted = _random_ordinal_ratings(seed=1)
    labels = [3, 1, 0, 2]
    assert confusion_matrix(truth, predicted, labels).tolist() == sk.confusion_matrix(
        truth, predicted, labels=labels
    ).tolist()


def test_per_class_statistics_match_scikit_learn():
    truth, predicted = _random_ordinal_ratings(seed=2)
    labels = [0, 1, 2, 3]
    report = classification_report(truth, predicted, labels)

    recalls = sk.recall_score(truth, predicted, labels=labels, average=None)
    precisions = sk.precision_score(truth, predicted, labels=labels, average=None)
    f1_scores = sk.f1_score(truth, predicted, labels=labels, average=None)
    for index, label in enumerate(labels):
        metrics = report.for_label(label)
        is_class_truth, is_class_predicted = truth == label, predicted == label
        assert metrics.sensitivity.estimate == pytest.approx(recalls[index])
        assert metrics.ppv.estimate == pytest.approx(precisions[index])
        assert metrics.f1 == pytest.approx(f1_scores[index])
        assert metrics.specificity.estimate == pytest.approx(
            sk.recall_score(~is_class_truth, ~is_class_predicted)
        )
        assert metrics.npv.estimate == pytest.approx(
            sk.precision_score(~is_class_truth, ~is_class_predicted)
        )
        assert metrics.accuracy.estimate == pytest.approx(
            sk.accuracy_score(is_class_truth, is_class_predicted)
        )
        assert metrics.cohen_kappa == pytest.approx(
            sk.cohen_kappa_score(is_class_truth, is_class_predicted)
        )
    assert report.accuracy.estimate == pytest.approx(sk.accuracy_score(truth, predicted))


@pytest.mark.parametrize(
    ("weighting", "sklearn_weights"),
    [
        (KappaWeighting.UNWEIGHTED, None),
        (KappaWeighting.LINEAR, "linear"),
        (KappaWeighting.QUADRATIC, "quadratic"),
    ],
)
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_kappa_matches_scikit_learn(weighting, sklearn_weights, seed):
    truth, predicted = _random_ordinal_ratings(seed)
    ours = cohen_kappa(truth, predicted, [0, 1, 2, 3], weighting=weighting)
    oracle = sk.cohen_kappa_score(truth, predicted, labels=[0, 1, 2, 3], weights=sklearn_weights)
    assert ours == pytest.approx(oracle, abs=1e-12)


def test_weighted_kappa_of_the_report_matches_scikit_learn_on_the_published_table():
    truth, predicted = _cases_from_matrix(PUBLISHED_MATRIX, WHO_LABELS)
    report = classification_report(truth, predicted, WHO_LABELS)
    for value, weights in [
        (report.cohen_kappa, None),
        (report.linear_weighted_kappa, "linear"),
        (report.quadratic_weighted_kappa, "quadratic"),
    ]:
        assert value == pytest.approx(
            sk.cohen_kappa_score(truth, predicted, labels=list(WHO_LABELS), weights=weights),
            abs=1e-12,
        )


def test_unweighted_kappa_of_a_hand_worked_table():
    # p_o = 35/50 = 0.7; p_e = (25*30 + 25*20) / 50**2 = 0.5; kappa = 0.2 / 0.5 = 0.4.
    assert kappa_from_confusion_matrix([[20, 5], [10, 15]]) == pytest.approx(0.4)


def test_weighted_kappa_of_a_hand_worked_table():
    # O = [[2,1,0],[0,2,1],[1,0,3]], N = 10, row and column sums (3,3,4), E = outer / 10:
    # off the diagonal E01 = E10 = 0.9 and E02 = E12 = E20 = E21 = 1.2.
    #   linear    (w = |i-j|):   sum(wO) = 1+1+2 = 4, sum(wE) = 0.9+2.4+0.9+1.2+2.4+1.2 = 9.0
    #   quadratic (w = (i-j)^2): sum(wO) = 1+1+4 = 6, sum(wE) = 0.9+4.8+0.9+1.2+4.8+1.2 = 13.8
    matrix = [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    assert kappa_from_confusion_matrix(matrix, weighting="linear") == pytest.approx(1 - 4 / 9)
    assert kappa_from_confusion_matrix(matrix, weighting="quadratic") == pytest.approx(1 - 6 / 13.8)


def test_weighted_kappa_depends_on_the_label_order_but_unweighted_does_not():
    truth, predicted = _random_ordinal_ratings(seed=6)
    in_order = [0, 1, 2, 3]
    shuffled = [2, 0, 3, 1]
    assert cohen_kappa(truth, predicted, in_order) == pytest.approx(
        cohen_kappa(truth, predicted, shuffled)
    )
    assert cohen_kappa(truth, predicted, in_order, weighting="quadratic") != pytest.approx(
        cohen_kappa(truth, predicted, shuffled, weighting="quadratic")
    )


def test_per_class_proportions_carry_wilson_intervals():
    report = classification_report_from_confusion_matrix(
        PUBLISHED_MATRIX, WHO_LABELS, confidence_level=0.9
    )
    sensitivity = report.for_label("osteoporosis").sensitivity
    assert (sensitivity.successes, sensitivity.total) == (68, 84)
    assert sensitivity.lower < sensitivity.estimate < sensitivity.upper
    assert sensitivity.confidence_level == 0.9
    # All normals were found: x = n, so the Wilson upper limit is exactly 1.
    assert report.for_label("normal").sensitivity.upper == 1.0


def test_a_class_that_never_occurs_has_undefined_rates_that_serialise_as_null():
    report = classification_report(
        ["normal", "normal", "osteopenia"], ["normal", "osteopenia", "osteopenia"], WHO_LABELS
    )
    absent = report.for_label("osteoporosis")
    assert math.isnan(absent.sensitivity.estimate)
    assert math.isnan(absent.ppv.estimate)
    assert math.isnan(absent.f1)
    assert absent.specificity.estimate == 1.0
    as_dict = report.to_dict()
    json.dumps(as_dict, allow_nan=False)  # valid JSON: no NaN
    osteoporosis = as_dict["per_class"][2]
    assert osteoporosis["label"] == "osteoporosis"
    assert osteoporosis["sensitivity"]["estimate"] is None
    assert osteoporosis["f1"] is None
    assert osteoporosis["specificity"]["estimate"] == 1.0


def test_report_to_dict_is_json_with_matrix_orientation_and_all_figures():
    report = classification_report_from_confusion_matrix(PUBLISHED_MATRIX, WHO_LABELS)
    decoded = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert decoded["labels"] == list(WHO_LABELS)
    assert decoded["confusion_matrix"] == PUBLISHED_MATRIX
    assert decoded["confusion_matrix_orientation"] == "rows=truth, columns=prediction"
    assert decoded["quadratic_weighted_kappa"] == report.quadratic_weighted_kappa
    assert decoded["per_class"][0]["sensitivity"] == {
        "estimate": 1.0,
        "lower": report.per_class[0].sensitivity.lower,
        "upper": 1.0,
        "successes": 126,
        "total": 126,
        "confidence_level": 0.95,
    }


def test_report_is_immutable():
    report = classification_report_from_confusion_matrix(PUBLISHED_MATRIX, WHO_LABELS)
    assert isinstance(report, ClassificationReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.n = 1  # type: ignore[misc]
    with pytest.raises(KeyError, match="fracture"):
        report.for_label("fracture")


def test_kappa_is_undefined_when_everything_is_one_class():
    assert math.isnan(kappa_from_confusion_matrix([[5, 0], [0, 0]]))


@pytest.mark.parametrize(
    ("truth", "predicted", "labels", "error", "message"),
    [
        (["normal"], ["normal", "normal"], WHO_LABELS, ValueError, "differ in length"),
        ([], [], WHO_LABELS, ValueError, "truth is empty"),
        (["normal", "fracture"], ["normal", "normal"], WHO_LABELS, ValueError,
         "not in labels.*'fracture'"),
        (["normal"], ["osteopena"], WHO_LABELS, ValueError, "predicted holds values"),
        ([0.0, math.nan], [0.0, 1.0], [0, 1], ValueError, "truth contains NaN"),
        (["normal"], ["normal"], ["normal", "normal"], ValueError, "unique"),
        (["normal"], ["normal"], ["normal"], ValueError, "at least two labels"),
        ([1.5], [1.5], [1.5, 2.5], TypeError, "str or int"),
    ],
)
def test_bad_label_inputs_are_rejected_with_a_clear_message(
    truth, predicted, labels, error, message
):
    with pytest.raises(error, match=message):
        confusion_matrix(truth, predicted, labels)
    with pytest.raises(error, match=message):
        classification_report(truth, predicted, labels)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[5, -1], [2, 3]], "must not be negative"),
        ([[5, 1, 0], [2, 3, 1]], "square"),
        ([[0, 0], [0, 0]], "empty"),
        ([[1.5, 1], [2, 3]], "whole numbers"),
        ([[math.nan, 1], [2, 3]], "finite"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "3 x 3 but 2 labels"),
    ],
)
def test_bad_confusion_matrices_are_rejected(matrix, message):
    with pytest.raises(ValueError, match=message):
        classification_report_from_confusion_matrix(matrix, ["a", "b"])


def test_unknown_kappa_weighting_is_rejected():
    with pytest.raises(ValueError, match="cubic"):
        kappa_from_confusion_matrix([[1, 2], [3, 4]], weighting="cubic")
