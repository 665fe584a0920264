"""Regression agreement: Pearson's r with its Fisher-z interval, RMSE, MAE, NRMSE."""

import math

import numpy as np
import pytest
import scipy.stats

from osteonode.evaluate.metrics import (
    mean_absolute_error,
    normalized_root_mean_squared_error,
    pearson_correlation,
    regression_report,
    root_mean_squared_error,
)


def test_pearson_r_of_a_hand_worked_example():
    # x deviations (-2,-1,0,1,2), y deviations (-2,0,1,0,1): Sxy = 6, Sxx = 10, Syy = 6.
    estimate = pearson_correlation([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    assert estimate.r == pytest.approx(6 / math.sqrt(60), abs=1e-12)
    # Fisher z by hand: tanh(atanh(r) -/+ 1.959964 / sqrt(5 - 3)).
    half_width = 1.959963984540054 / math.sqrt(2)
    assert estimate.lower == pytest.approx(math.tanh(math.atanh(estimate.r) - half_width))
    assert estimate.upper == pytest.approx(math.tanh(math.atanh(estimate.r) + half_width))
    assert estimate.n == 5
    assert estimate.confidence_level == 0.95


@pytest.mark.parametrize("confidence_level", [0.8, 0.9, 0.95, 0.99])
def test_pearson_r_and_interval_match_scipy(confidence_level):
    rng = np.random.default_rng(7)
    dxa = rng.normal(0.9, 0.15, size=200)
    estimated = dxa + rng.normal(0.0, 0.07, size=200)

    ours = pearson_correlation(dxa, estimated, confidence_level=confidence_level)
    oracle = scipy.stats.pearsonr(dxa, estimated)
    oracle_interval = oracle.confidence_interval(confidence_level=confidence_level)

    assert ours.r == pytest.approx(oracle.statistic, abs=1e-12)
    assert ours.lower == pytest.approx(oracle_interval.low, abs=1e-12)
    assert ours.upper == pytest.approx(oracle_interval.high, abs=1e-12)
    assert ours.confidence_level == confidence_level


def test_a_wider_confidence_level_gives_a_wider_interval():
    x = [0.7, 0.8, 0.85, 0.9, 1.0, 1.1]
    y = [0.72, 0.78, 0.9, 0.88, 0.97, 1.15]
    narrow = pearson_correlation(x, y, confidence_level=0.8)
    wide = pearson_correlation(x, y, confidence_level=0.99)
    assert wide.lower < narrow.lower < narrow.r < narrow.upper < wide.upper


def test_a_perfect_correlation_has_a_degenerate_interval():
    # Deviations of +-0.5 and +-1 make r exactly -1 in floating point (atanh(-1) is infinite).
    estimate = pearson_correlation([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 0.0, 0.0])
    assert (estimate.r, estimate.lower, estimate.upper) == (-1.0, -1.0, -1.0)
    # Where rounding leaves r a hair short of 1, the interval still collapses onto it.
    nearly = pearson_correlation([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert (nearly.lower, nearly.r, nearly.upper) == pytest.approx((1.0, 1.0, 1.0), abs=1e-12)


def test_errors_of_a_hand_worked_example():
    observed = [1.0, 2.0, 3.0]
    predicted = [1.0, 2.0, 6.0]  # errors 0, 0, 3
    assert root_mean_squared_error(observed, predicted) == pytest.approx(math.sqrt(3))
    assert mean_absolute_error(observed, predicted) == pytest.approx(1.0)
    # NRMSE divides by the range of the observed values (3 - 1), not of the predicted ones.
    nrmse = normalized_root_mean_squared_error(observed, predicted)
    assert nrmse == pytest.approx(math.sqrt(3) / 2)


def test_errors_match_scikit_learn():
    from sklearn.metrics import mean_absolute_error as sk_mae
    from sklearn.metrics import mean_squared_error as sk_mse

    rng = np.random.default_rng(11)
    observed = rng.normal(0.9, 0.15, size=300)
    predicted = observed + rng.normal(0.02, 0.08, size=300)

    assert root_mean_squared_error(observed, predicted) == pytest.approx(
        math.sqrt(sk_mse(observed, predicted)), rel=1e-12
    )
    assert mean_absolute_error(observed, predicted) == pytest.approx(
        sk_mae(observed, predicted), rel=1e-12
    )
    assert normalized_root_mean_squared_error(observed, predicted) == pytest.approx(
        math.sqrt(sk_mse(observed, predicted)) / np.ptp(observed), rel=1e-12
    )


def test_regression_report_collects_all_figures_as_plain_values():
    observed = [0.62, 0.75, 0.81, 0.9, 1.02, 1.1]
    predicted = [0.65, 0.7, 0.85, 0.95, 0.98, 1.12]
    report = regression_report(observed, predicted, confidence_level=0.9)

    assert report.n == 6
    assert report.correlation == pearson_correlation(observed, predicted, confidence_level=0.9)
    assert report.rmse == root_mean_squared_error(observed, predicted)
    assert report.mae == mean_absolute_error(observed, predicted)
    assert report.nrmse == normalized_root_mean_squared_error(observed, predicted)
    as_dict = report.to_dict()
    assert as_dict["correlation"]["r"] == report.correlation.r
    assert as_dict["correlation"]["confidence_level"] == 0.9
    assert set(as_dict) == {"correlation", "rmse", "mae", "nrmse", "n"}


@pytest.mark.parametrize(
    ("observed", "predicted", "message"),
    [
        ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0], "differ in length"),
        ([], [], "empty"),
        ([1.0, math.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], "observed contains NaN"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, math.nan, 4.0], "predicted contains NaN"),
        ([1.0, 2.0, 3.0, math.inf], [1.0, 2.0, 3.0, 4.0], "infinite"),
        ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], "one-dimensional"),
        (["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0], "numbers only"),
    ],
)
def test_bad_paired_inputs_are_rejected_with_a_clear_message(observed, predicted, message):
    for function in (pearson_correlation, root_mean_squared_error, mean_absolute_error,
                     normalized_root_mean_squared_error):
        with pytest.raises(ValueError, match=message):
            function(observed, predicted)


def test_pearson_needs_four_pairs_and_variation():
    with pytest.raises(ValueError, match="at least 4 pairs"):
        pearson_correlation([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="constant input"):
        pearson_correlation([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("confidence_level", [0.0, 1.0, 95, -0.5])
def test_confidence_level_outside_zero_one_is_rejected(confidence_level):
    with pytest.raises(ValueError, match="confidence_level"):
        pearson_correlation([1, 2, 3, 4], [1, 3, 2, 4], confidence_level=confidence_level)


def test_nrmse_is_undefined_when_observed_values_are_all_equal():
    with pytest.raises(ValueError, match="range is 0"):
        normalized_root_mean_squared_error([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
