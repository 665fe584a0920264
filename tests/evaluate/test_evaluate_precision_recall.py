"""Precision-recall curve and average precision, against hand-worked numbers and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from osteonode.evaluate.metrics import average_precision, precision_recall_curve


def test_a_hand_worked_ranking() -> None:
    # Scores ranked: 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-).
    truth, scores = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    curve = precision_recall_curve(truth, scores)
    assert curve.recall == (0.5, 0.5, 1.0, 1.0)
    assert curve.precision == pytest.approx((1.0, 0.5, 2 / 3, 0.5))
    assert curve.prevalence == 0.5
    assert average_precision(truth, scores) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_a_perfect_ranking_has_average_precision_one() -> None:
    assert average_precision([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_agrees_with_scikit_learn_including_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random(60) < 0.3
    scores = np.round(rng.random(60) + 0.4 * truth, 1)  # rounding makes ties
    assert average_precision(truth, scores) == pytest.approx(average_precision_score(truth, scores))


def test_one_class_only_is_refused() -> None:
    with pytest.raises(ValueError):
        average_precision([1, 1, 1], [0.2, 0.5, 0.9])
