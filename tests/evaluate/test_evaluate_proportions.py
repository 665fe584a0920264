"""Wilson score intervals: published values, Hmisc::binconf's edge cases, scipy as an oracle."""

import math

import pytest
import scipy.stats

from osteonode.evaluate.metrics import wilson_interval

# Newcombe RG. Two-sided confidence intervals for the single proportion: comparison of seven
# methods. Stat Med 1998;17:857-872, Table I, method 3 (Wilson score interval without continuity
# correction), 95 per cent, printed to four decimals. Examples (a)-(d) of the paper, and 29/29.
# The table was seen as quoted by others, not in the paper's full text; every value agrees with
# the closed-form Wilson limits and with scipy's to the printed four decimals.
NEWCOMBE_1998_METHOD_3 = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0000),
]


@pytest.mark.parametrize(("successes", "total", "lower", "upper"), NEWCOMBE_1998_METHOD_3)
def test_plain_wilson_interval_reproduces_newcombe_1998(successes, total, lower, upper):
    interval = wilson_interval(successes, total, hmisc_edge_cases=False)
    assert round(interval.lower, 4) == lower
    assert round(interval.upper, 4) == upper
    assert interval.estimate == successes / total


@pytest.mark.parametrize("total", [1, 2, 3, 5, 20, 137])
@pytest.mark.parametrize("confidence_level", [0.9, 0.95, 0.99])
def test_plain_wilson_interval_matches_scipy_for_every_count(total, confidence_level):
    for successes in range(total + 1):
        ours = wilson_interval(
            successes, total, confidence_level=confidence_level, hmisc_edge_cases=False
        )
        oracle = scipy.stats.binomtest(successes, total).proportion_ci(
            confidence_level=confidence_level, method="wilson"
        )
        assert ours.lower == pytest.approx(oracle.low, abs=1e-12), (successes, total)
        assert ours.upper == pytest.approx(oracle.high, abs=1e-12), (successes, total)


# Hmisc::binconf, method "wilson" (its default): harrelfe/Hmisc, R/binconf.s, unchanged since
# commit 66cda19 (2006-10-24), read at d4700aa. After the Wilson limits it sets
#   if (x == 1)     lower <- -log(1 - alpha) / n
#   if (x == n - 1) upper <- 1 + log(1 - alpha) / n
# and has no special case at x = 0 or x = n, where the Wilson limits are 0 and 1 anyway.


def test_hmisc_lower_limit_at_one_success():
    interval = wilson_interval(1, 10)
    assert interval.lower == pytest.approx(-math.log(0.95) / 10, abs=1e-15)  # 0.005129...
    assert round(interval.lower, 6) == 0.005129
    # The upper limit stays Wilson's.
    assert interval.upper == wilson_interval(1, 10, hmisc_edge_cases=False).upper
    # Newcombe's 1/29 example: Wilson gives 0.0061, Hmisc replaces it with -log(0.95)/29.
    assert wilson_interval(1, 29).lower == pytest.approx(-math.log(0.95) / 29, abs=1e-15)


def test_hmisc_upper_limit_at_one_failure():
    interval = wilson_interval(9, 10)
    assert interval.upper == pytest.approx(1 + math.log(0.95) / 10, abs=1e-15)  # 0.994871...
    assert round(interval.upper, 6) == 0.994871
    assert interval.lower == wilson_interval(9, 10, hmisc_edge_cases=False).lower


def test_hmisc_replaces_both_limits_when_n_is_two_and_x_is_one():
    interval = wilson_interval(1, 2, confidence_level=0.9)
    assert interval.lower == pytest.approx(-math.log(0.9) / 2, abs=1e-15)
    assert interval.upper == pytest.approx(1 + math.log(0.9) / 2, abs=1e-15)


def test_hmisc_rules_apply_literally_for_a_single_trial():
    # n = 1: x = 1 is both "x == 1" (lower replaced) and x == n (upper is 1);
    # x = 0 is both x == 0 (lower is 0) and "x == n - 1" (upper replaced).
    success = wilson_interval(1, 1)
    assert (success.lower, success.upper) == pytest.approx((-math.log(0.95), 1.0), abs=1e-15)
    failure = wilson_interval(0, 1)
    assert (failure.lower, failure.upper) == pytest.approx((0.0, 1 + math.log(0.95)), abs=1e-15)


def test_no_successes_or_no_failures_give_limits_of_exactly_zero_and_one():
    for total in (1, 7, 20, 328):
        assert wilson_interval(0, total).lower == 0.0
        assert wilson_interval(total, total).upper == 1.0


@pytest.mark.parametrize("total", [5, 20, 137])
def test_hmisc_interval_equals_plain_wilson_away_from_the_edge_cases(total):
    for successes in range(2, total - 1):
        assert wilson_interval(successes, total) == wilson_interval(
            successes, total, hmisc_edge_cases=False
        )


def test_every_interval_contains_its_estimate_and_stays_in_zero_one():
    for total in (1, 2, 3, 10, 50):
        for successes in range(total + 1):
            interval = wilson_interval(successes, total)
            assert 0.0 <= interval.lower <= interval.estimate <= interval.upper <= 1.0


@pytest.mark.parametrize(
    ("successes", "total", "error", "message"),
    [
        (5, 4, ValueError, "exceed total"),
        (-1, 4, ValueError, "successes must not be negative"),
        (0, -3, ValueError, "total must not be negative"),
        (0, 0, ValueError, "at least 1"),
        (2.0, 4, TypeError, "integer count"),
        (True, 4, TypeError, "integer count"),
    ],
)
def test_invalid_counts_are_rejected(successes, total, error, message):
    with pytest.raises(error, match=message):
        wilson_interval(successes, total)


def test_estimate_serialises_with_its_counts_and_level():
    assert wilson_interval(3, 4, confidence_level=0.9).to_dict() == {
        "estimate": 0.75,
        "lower": wilson_interval(3, 4, confidence_level=0.9).lower,
        "upper": 1 + math.log(0.9) / 4,
        "successes": 3,
        "total": 4,
        "confidence_level": 0.9,
    }
