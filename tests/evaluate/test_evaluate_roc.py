"""AUC (Mann-Whitney, ties count one half), its stratified bootstrap interval, and ROC points."""

import json
import math

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as sk

from osteonode.evaluate.metrics import roc_auc, roc_auc_with_bootstrap_ci, roc_curve


def _scored_cohort(seed, n_positive=60, n_negative=140, rounding=None):
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(1.0, 1.0, n_positive), rng.normal(0.0, 1.0, n_negative)])
    if rounding is not None:
        scores = np.round(scores, rounding)  # coarse scores force many ties
    truth = np.concatenate([np.ones(n_positive, dtype=bool), np.zeros(n_negative, dtype=bool)])
    order = rng.permutation(truth.size)
    return truth[order], scores[order]


def test_auc_of_a_hand_worked_example_counts_ties_as_one_half():
    # Positives 0.8, 0.6, 0.4 against negatives 0.5, 0.4, 0.2: 0.8 and 0.6 beat all three
    # (3 + 3); 0.4 loses to 0.5, ties 0.4 (1/2) and beats 0.2 (1). AUC = 7.5 / 9.
    truth = [1, 1, 1, 0, 0, 0]
    scores = [0.8, 0.6, 0.4, 0.5, 0.4, 0.2]
    assert roc_auc(truth, scores) == pytest.approx(7.5 / 9)


def test_auc_of_perfect_useless_and_inverted_scores():
    truth = [0, 0, 1, 1]
    assert roc_auc(truth, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc(truth, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc(truth, [0.4, 0.3, 0.2, 0.1]) == 0.0


@pytest.mark.parametrize("rounding", [None, 1, 0])
@pytest.mark.parametrize("seed", [1, 2])
def test_auc_matches_scikit_learn_and_mann_whitney_with_and_without_ties(seed, rounding):
    truth, scores = _scored_cohort(seed, rounding=rounding)
    ours = roc_auc(truth, scores)
    assert ours == pytest.approx(sk.roc_auc_score(truth, scores), abs=1e-12)
    u_statistic = scipy.stats.mannwhitneyu(scores[truth], scores[~truth]).statistic
    assert ours == pytest.approx(u_statistic / (truth.sum() * (~truth).sum()), abs=1e-12)


def test_auc_accepts_zero_one_integers_and_booleans_alike():
    truth, scores = _scored_cohort(3)
    assert roc_auc(truth.astype(int), scores) == roc_auc(truth, scores)
    assert roc_auc(truth.astype(float), scores) == roc_auc(truth, scores)


def test_bootstrap_interval_is_reproducible_with_a_seed():
    truth, scores = _scored_cohort(4)
    first = roc_auc_with_bootstrap_ci(truth, scores, n_resamples=300, seed=42)
    again = roc_auc_with_bootstrap_ci(truth, scores, n_resamples=300, seed=42)
    other = roc_auc_with_bootstrap_ci(truth, scores, n_resamples=300, seed=43)
    assert first == again
    assert (first.lower, first.upper) != (other.lower, other.upper)
    assert first.seed == 42
    assert first.n_resamples == 300


def test_bootstrap_can_draw_from_a_callers_generator():
    truth, scores = _scored_cohort(5)
    from_generator = roc_auc_with_bootstrap_ci(
        truth, scores, n_resamples=200, seed=np.random.default_rng(9)
    )
    from_seed = roc_auc_with_bootstrap_ci(truth, scores, n_resamples=200, seed=9)
    assert (from_generator.lower, from_generator.upper) == (from_seed.lower, from_seed.upper)
    assert from_generator.seed is None


def test_bootstrap_interval_brackets_the_auc_and_narrows_with_level():
    truth, scores = _scored_cohort(6)
    wide = roc_auc_with_bootstrap_ci(truth, scores, confidence_level=0.95, seed=1)
    narrow = roc_auc_with_bootstrap_ci(truth, scores, confidence_level=0.5, seed=1)
    assert wide.auc == roc_auc(truth, scores)
    assert wide.lower < narrow.lower < wide.auc < narrow.upper < wide.upper
    assert (wide.n_positive, wide.n_negative) == (60, 140)
    assert wide.n_resamples == 1000  # the chest X-ray paper's number of resamples


def test_bootstrap_interval_agrees_with_scipys_independent_per_class_bootstrap():
    # scipy.stats.bootstrap resamples each of several samples on its own, which is exactly a
    # stratified bootstrap; its random draws differ from ours, so agreement is statistical.
    truth, scores = _scored_cohort(7, n_positive=80, n_negative=120)
    ours = roc_auc_with_bootstrap_ci(truth, scores, n_resamples=2000, seed=3)

    def auc_of(positive_scores, negative_scores, axis):
        u = scipy.stats.mannwhitneyu(positive_scores, negative_scores, axis=axis).statistic
        return u / (positive_scores.shape[axis] * negative_scores.shape[axis])

    oracle = scipy.stats.bootstrap(
        (scores[truth], scores[~truth]),
        auc_of,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(3),
    ).confidence_interval
    assert ours.lower == pytest.approx(oracle.low, abs=0.01)
    assert ours.upper == pytest.approx(oracle.high, abs=0.01)


def test_stratified_bootstrap_works_with_a_single_positive_case():
    # An unstratified resample would often hold no positive case and have no AUC.
    truth = [1] + [0] * 30
    scores = [0.9] + list(np.linspace(0.0, 1.0, 30))
    estimate = roc_auc_with_bootstrap_ci(truth, scores, n_resamples=200, seed=0)
    assert 0.0 <= estimate.lower <= estimate.auc <= estimate.upper <= 1.0


def test_auc_estimate_serialises_to_json():
    truth, scores = _scored_cohort(8)
    estimate = roc_auc_with_bootstrap_ci(truth, scores, n_resamples=100, seed=5)
    decoded = json.loads(json.dumps(estimate.to_dict(), allow_nan=False))
    assert decoded == {
        "auc": estimate.auc,
        "lower": estimate.lower,
        "upper": estimate.upper,
        "confidence_level": 0.95,
        "n_resamples": 100,
        "seed": 5,
        "n_positive": 60,
        "n_negative": 140,
    }


@pytest.mark.parametrize("rounding", [None, 1])
def test_roc_points_match_scikit_learn_without_dropping_points(rounding):
    truth, scores = _scored_cohort(9, rounding=rounding)
    curve = roc_curve(truth, scores)
    fpr, tpr, thresholds = sk.roc_curve(truth, scores, drop_intermediate=False)
    np.testing.assert_allclose(curve.false_positive_rate, fpr)
    np.testing.assert_allclose(curve.true_positive_rate, tpr)
    assert math.isinf(curve.thresholds[0])
    np.testing.assert_allclose(curve.thresholds[1:], thresholds[1:])


def test_roc_curve_runs_from_origin_to_corner_and_its_area_is_the_auc():
    truth, scores = _scored_cohort(10, rounding=1)
    curve = roc_curve(truth, scores)
    assert (curve.false_positive_rate[0], curve.true_positive_rate[0]) == (0.0, 0.0)
    assert (curve.false_positive_rate[-1], curve.true_positive_rate[-1]) == (1.0, 1.0)
    assert np.all(np.diff(curve.false_positive_rate) >= 0)
    assert np.all(np.diff(curve.true_positive_rate) >= 0)
    area = np.trapezoid(curve.true_positive_rate, curve.false_positive_rate)
    assert area == pytest.approx(roc_auc(truth, scores), abs=1e-12)


def test_roc_curve_of_a_hand_worked_example():
    curve = roc_curve([1, 1, 1, 0, 0, 0], [0.8, 0.6, 0.4, 0.5, 0.4, 0.2])
    assert curve.thresholds == (math.inf, 0.8, 0.6, 0.5, 0.4, 0.2)
    assert curve.true_positive_rate == pytest.approx((0, 1 / 3, 2 / 3, 2 / 3, 1, 1))
    assert curve.false_positive_rate == pytest.approx((0, 0, 0, 1 / 3, 2 / 3, 1))
    assert curve.to_dict()["thresholds"] == [None, 0.8, 0.6, 0.5, 0.4, 0.2]


ALL_AUC_FUNCTIONS = [roc_auc, roc_auc_with_bootstrap_ci, roc_curve]


@pytest.mark.parametrize(
    ("truth", "scores", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "single class"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "single class"),
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([], [], "truth is empty"),
        ([0, 1, 1], [0.1, math.nan, 0.3], "scores contains NaN"),
        ([0, math.nan, 1], [0.1, 0.2, 0.3], "truth contains NaN"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "binary"),
        (["normal", "osteoporosis"], [0.1, 0.2], "binary"),
    ],
)
def test_bad_auc_inputs_are_rejected_with_a_clear_message(truth, scores, message):
    for function in ALL_AUC_FUNCTIONS:
        with pytest.raises(ValueError, match=message):
            function(truth, scores)


@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        ({"n_resamples": 0}, ValueError, "at least 1"),
        ({"n_resamples": 10.5}, TypeError, "integer"),
        ({"seed": -1}, ValueError, "seed must not be negative"),
        ({"seed": "abc"}, TypeError, "seed"),
        ({"confidence_level": 1.5}, ValueError, "confidence_level"),
    ],
)
def test_bad_bootstrap_settings_are_rejected(keywords, error, message):
    with pytest.raises(error, match=message):
        roc_auc_with_bootstrap_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], **keywords)
