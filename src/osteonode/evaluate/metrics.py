"""Agreement and accuracy statistics for validating osteonode against a local DXA cohort.

Pure functions over numpy arrays: they read their inputs, never change them, and keep no state.
The definitions are those of the papers osteonode reproduces (METHODS.md, section 5):

* regression: Pearson's r with a Fisher-z confidence interval, RMSE, MAE, and NRMSE (RMSE divided
  by the range of the *observed* values);
* classification: a confusion matrix with rows = truth and columns = prediction; per class,
  one-vs-rest accuracy, sensitivity, specificity, PPV, NPV, F1 and Cohen's kappa; unweighted,
  linear- and quadratic-weighted kappa over all classes;
* proportions: Wilson score intervals as R's ``Hmisc::binconf`` computes them by default;
* ranking: the area under the ROC curve (Mann-Whitney, ties count one half) with a stratified
  bootstrap percentile interval, and the ROC curve's points for plotting.

A quantity whose denominator is zero (the sensitivity of a class that never occurs, say) is NaN
in the result objects and ``None`` in their ``to_dict()`` output, so reports stay valid JSON.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_BOOTSTRAP_RESAMPLES",
    "DEFAULT_CONFIDENCE_LEVEL",
    "AucEstimate",
    "ClassMetrics",
    "ClassificationReport",
    "CorrelationEstimate",
    "KappaWeighting",
    "PrecisionRecallCurve",
    "ProportionEstimate",
    "RegressionReport",
    "RocCurve",
    "average_precision",
    "classification_report",
    "classification_report_from_confusion_matrix",
    "cohen_kappa",
    "confusion_matrix",
    "kappa_from_confusion_matrix",
    "mean_absolute_error",
    "normalized_root_mean_squared_error",
    "pearson_correlation",
    "precision_recall_curve",
    "regression_report",
    "roc_auc",
    "roc_auc_with_bootstrap_ci",
    "roc_curve",
    "root_mean_squared_error",
    "wilson_interval",
]

DEFAULT_CONFIDENCE_LEVEL = 0.95
# The chest X-ray paper (METHODS.md, section 2) bootstrapped its AUC intervals with 1,000 resamples.
DEFAULT_BOOTSTRAP_RESAMPLES = 1000

Label = str | int


class KappaWeighting(enum.StrEnum):
    """Disagreement weights ``w_ij`` for Cohen's kappa between label positions ``i`` and ``j``.

    ``UNWEIGHTED`` is ``w_ij = 0`` on the diagonal and 1 elsewhere (plain Cohen's kappa),
    ``LINEAR`` is ``|i - j|`` and ``QUADRATIC`` is ``(i - j)**2``. The weighted forms treat the
    order of the labels as given as an ordinal scale.
    """

    UNWEIGHTED = "unweighted"
    LINEAR = "linear"
    QUADRATIC = "quadratic"


def _json_float(value: float) -> float | None:
    """Return ``value`` as a JSON-safe number: ``None`` where it is NaN (undefined)."""
    return None if math.isnan(value) else float(value)


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def _check_confidence_level(confidence_level: float) -> float:
    level = float(confidence_level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence_level must lie strictly between 0 and 1, got {level}")
    return level


def _normal_quantile_two_sided(confidence_level: float) -> float:
    """Return the standard normal quantile ``z`` with ``P(|Z| <= z) = confidence_level``."""
    return NormalDist().inv_cdf(0.5 + confidence_level / 2.0)


def _as_finite_vector(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must contain numbers only: {error}") from error
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN at positions {np.flatnonzero(np.isnan(array))[:10]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains infinite values")
    return array


def _paired_vectors(
    observed: npt.ArrayLike, predicted: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    observed_array = _as_finite_vector("observed", observed)
    predicted_array = _as_finite_vector("predicted", predicted)
    if observed_array.size != predicted_array.size:
        raise ValueError(
            f"observed and predicted differ in length: {observed_array.size} != "
            f"{predicted_array.size}"
        )
    return observed_array, predicted_array


def _check_labels(labels: Sequence[Label]) -> tuple[Label, ...]:
    checked: list[Label] = []
    for label in labels:
        if isinstance(label, np.generic):
            label = label.item()
        if not isinstance(label, str | int):
            raise TypeError(f"labels must be str or int, got {label!r} ({type(label).__name__})")
        checked.append(label)
    if len(checked) < 2:
        raise ValueError(f"at least two labels are needed, got {checked}")
    if len(set(checked)) != len(checked):
        raise ValueError(f"labels must be unique, got {checked}")
    return tuple(checked)


def _label_positions(
    name: str, values: npt.ArrayLike, labels: tuple[Label, ...]
) -> npt.NDArray[np.intp]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN at positions {np.flatnonzero(np.isnan(array))[:10]}")
    position_of = {label: index for index, label in enumerate(labels)}
    positions = [position_of.get(value) for value in array.tolist()]
    unknown = sorted({repr(value) for value, at in zip(array.tolist(), positions) if at is None})
    if unknown:
        raise ValueError(f"{name} holds values that are not in labels {list(labels)}: {unknown}")
    return np.asarray(positions, dtype=np.intp)


def _check_confusion_matrix(
    matrix: npt.ArrayLike, labels: tuple[Label, ...] | None = None
) -> npt.NDArray[np.int64]:
    array = np.asarray(matrix)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError("a confusion matrix needs at least two classes")
    if labels is not None and array.shape[0] != len(labels):
        raise ValueError(f"the confusion matrix is {array.shape[0]} x {array.shape[1]} but "
                         f"{len(labels)} labels were given")
    if array.dtype.kind not in "iuf" or not np.isfinite(array).all():
        raise ValueError("confusion matrix counts must be finite numbers")
    if (array < 0).any():
        raise ValueError("confusion matrix counts must not be negative")
    if (array != np.round(array)).any():
        raise ValueError("confusion matrix counts must be whole numbers")
    counts = array.astype(np.int64)
    if counts.sum() == 0:
        raise ValueError("the confusion matrix is empty (all counts are zero)")
    return counts


def _binary_truth(truth: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    array = np.asarray(truth)
    if array.ndim != 1:
        raise ValueError(f"truth must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError("truth is empty")
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"truth contains NaN at positions {np.flatnonzero(np.isnan(array))[:10]}")
    if array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all():
        found = sorted({repr(value) for value in np.unique(array).tolist()})
        raise ValueError(f"truth must be binary (False/True or 0/1), found {found}")
    return array.astype(bool)


def _scored_classes(
    truth: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Split ``scores`` into those of the positive and those of the negative cases."""
    is_positive = _binary_truth(truth)
    score_array = _as_finite_vector("scores", scores)
    if score_array.size != is_positive.size:
        raise ValueError(
            f"truth and scores differ in length: {is_positive.size} != {score_array.size}"
        )
    if is_positive.all() or not is_positive.any():
        raise ValueError("truth holds a single class; the AUC needs positive and negative cases")
    return score_array[is_positive], score_array[~is_positive]


# ---------------------------------------------------------------------------------------------
# Regression: BMD estimate against DXA
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CorrelationEstimate:
    """Pearson's r with its Fisher-z confidence interval.

    Attributes
    ----------
    r : float
        The sample correlation coefficient.
    lower, upper : float
        The confidence limits, ``tanh(atanh(r) -/+ z / sqrt(n - 3))``.
    confidence_level : float
        The two-sided confidence level of the interval.
    n : int
        The number of pairs.
    """

    r: float
    lower: float
    upper: float
    confidence_level: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Return the estimate as JSON-ready plain values."""
        return {
            "r": _json_float(self.r),
            "lower": _json_float(self.lower),
            "upper": _json_float(self.upper),
            "confidence_level": self.confidence_level,
            "n": self.n,
        }


def pearson_correlation(
    observed: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
) -> CorrelationEstimate:
    """Return Pearson's correlation coefficient with a Fisher-z confidence interval.

    Parameters
    ----------
    observed, predicted : array_like
        Paired finite values, for example DXA BMD and estimated BMD, at least four pairs
        (the interval's standard error is ``1 / sqrt(n - 3)``).
    confidence_level : float, optional
        Two-sided confidence level of the interval, in (0, 1).

    Returns
    -------
    CorrelationEstimate
        ``r`` and its interval; a perfect correlation has the degenerate interval ``[r, r]``.

    Raises
    ------
    ValueError
        If the inputs are empty, differ in length, contain NaN or infinite values, have fewer
        than four pairs, or either is constant (the correlation is then undefined).
    """
    level = _check_confidence_level(confidence_level)
    x, y = _paired_vectors(observed, predicted)
    n = x.size
    if n < 4:
        raise ValueError(f"a Fisher-z interval needs at least 4 pairs, got {n}")
    x_centred = x - x.mean()
    y_centred = y - y.mean()
    x_norm = float(np.sqrt(x_centred @ x_centred))
    y_norm = float(np.sqrt(y_centred @ y_centred))
    if x_norm == 0.0 or y_norm == 0.0:
        raise ValueError("a constant input has no correlation (its standard deviation is 0)")
    # Rounding can push |r| a hair past 1 for perfectly correlated data.
    r = float(np.clip((x_centred @ y_centred) / (x_norm * y_norm), -1.0, 1.0))
    half_width = _normal_quantile_two_sided(level) / math.sqrt(n - 3)
    if abs(r) == 1.0:
        lower = upper = r
    else:
        z = math.atanh(r)
        lower, upper = math.tanh(z - half_width), math.tanh(z + half_width)
    return CorrelationEstimate(r=r, lower=lower, upper=upper, confidence_level=level, n=n)


def root_mean_squared_error(observed: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Return the root mean squared difference between predicted and observed values.

    Parameters
    ----------
    observed, predicted : array_like
        Paired finite values of equal, non-zero length.

    Returns
    -------
    float
        ``sqrt(mean((predicted - observed)**2))``, in the unit of the inputs.

    Raises
    ------
    ValueError
        If the inputs are empty, differ in length or contain NaN or infinite values.
    """
    return _root_mean_squared_error(*_paired_vectors(observed, predicted))


def _root_mean_squared_error(
    observed: npt.NDArray[np.float64], predicted: npt.NDArray[np.float64]
) -> float:
    return float(np.sqrt(np.mean((predicted - observed) ** 2)))


def mean_absolute_error(observed: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Return the mean absolute difference between predicted and observed values.

    Parameters
    ----------
    observed, predicted : array_like
        Paired finite values of equal, non-zero length.

    Returns
    -------
    float
        ``mean(|predicted - observed|)``, in the unit of the inputs.

    Raises
    ------
    ValueError
        If the inputs are empty, differ in length or contain NaN or infinite values.
    """
    x, y = _paired_vectors(observed, predicted)
    return float(np.mean(np.abs(y - x)))


def normalized_root_mean_squared_error(
    observed: npt.ArrayLike, predicted: npt.ArrayLike
) -> float:
    """Return the RMSE divided by the range (max - min) of the observed values.

    This is the normalisation of the lumbar spine study (METHODS.md, section 1), which reported
    NRMSE 0.070; other papers divide by the mean instead, which gives a different number.

    Parameters
    ----------
    observed, predicted : array_like
        Paired finite values of equal, non-zero length.

    Returns
    -------
    float
        ``RMSE / (max(observed) - min(observed))``, dimensionless.

    Raises
    ------
    ValueError
        If the inputs are empty, differ in length, contain NaN or infinite values, or the
        observed values are all equal (their range is 0).
    """
    x, y = _paired_vectors(observed, predicted)
    observed_range = float(x.max() - x.min())
    if observed_range == 0.0:
        raise ValueError("the observed values are all equal, so their range is 0")
    return _root_mean_squared_error(x, y) / observed_range


@dataclass(frozen=True, slots=True)
class RegressionReport:
    """Agreement of a continuous estimate (e.g. BMD in g/cm2) with its reference measurement.

    Attributes
    ----------
    correlation : CorrelationEstimate
        Pearson's r with its confidence interval.
    rmse, mae : float
        Root mean squared and mean absolute error, in the unit of the inputs.
    nrmse : float
        RMSE divided by the range of the observed values.
    n : int
        The number of pairs.
    """

    correlation: CorrelationEstimate
    rmse: float
    mae: float
    nrmse: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready plain values."""
        return {
            "correlation": self.correlation.to_dict(),
            "rmse": self.rmse,
            "mae": self.mae,
            "nrmse": self.nrmse,
            "n": self.n,
        }


def regression_report(
    observed: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
) -> RegressionReport:
    """Return Pearson's r (with interval), RMSE, MAE and NRMSE of ``predicted`` vs ``observed``.

    Parameters
    ----------
    observed, predicted : array_like
        Paired finite values, at least four pairs, observed values not all equal.
    confidence_level : float, optional
        Two-sided confidence level of the correlation's interval.

    Returns
    -------
    RegressionReport

    Raises
    ------
    ValueError
        As :func:`pearson_correlation` and :func:`normalized_root_mean_squared_error`.
    """
    correlation = pearson_correlation(observed, predicted, confidence_level=confidence_level)
    return RegressionReport(
        correlation=correlation,
        rmse=root_mean_squared_error(observed, predicted),
        mae=mean_absolute_error(observed, predicted),
        nrmse=normalized_root_mean_squared_error(observed, predicted),
        n=correlation.n,
    )


# ---------------------------------------------------------------------------------------------
# Proportions: Wilson score intervals
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProportionEstimate:
    """A proportion ``successes / total`` with its Wilson score interval.

    Attributes
    ----------
    estimate : float
        ``successes / total``; NaN when ``total`` is 0.
    lower, upper : float
        The confidence limits; NaN when ``total`` is 0.
    successes, total : int
        The counts the proportion was computed from.
    confidence_level : float
        The two-sided confidence level of the interval.
    """

    estimate: float
    lower: float
    upper: float
    successes: int
    total: int
    confidence_level: float

    def to_dict(self) -> dict[str, Any]:
        """Return the estimate as JSON-ready plain values (``None`` where undefined)."""
        return {
            "estimate": _json_float(self.estimate),
            "lower": _json_float(self.lower),
            "upper": _json_float(self.upper),
            "successes": self.successes,
            "total": self.total,
            "confidence_level": self.confidence_level,
        }


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer count, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return int(value)


def wilson_interval(
    successes: int,
    total: int,
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
    hmisc_edge_cases: bool = True,
) -> ProportionEstimate:
    """Return the proportion ``successes / total`` with its Wilson score interval.

    With ``hmisc_edge_cases`` (the default) the limits are those of R's
    ``Hmisc::binconf(x, n, alpha, method = "wilson")`` (its default method): the Wilson score
    limits, except that at ``x = 1`` the lower limit is replaced by ``-log(1 - alpha) / n`` and
    at ``x = n - 1`` the upper limit by ``1 + log(1 - alpha) / n``, ``alpha = 1 -
    confidence_level`` (both replacements apply when ``n = 2, x = 1``). Hmisc has no special
    case at ``x = 0`` or ``x = n``: there the Wilson limits are exactly 0 and 1, and this function
    sets them so, free of rounding error. Without ``hmisc_edge_cases`` the plain Wilson (1927)
    score interval is returned, Newcombe's (1998) method 3.

    Parameters
    ----------
    successes : int
        Number of successes ``x``, ``0 <= x <= total``.
    total : int
        Number of trials ``n``, at least 1.
    confidence_level : float, optional
        Two-sided confidence level, in (0, 1).
    hmisc_edge_cases : bool, optional
        Apply Hmisc's replacements at ``x = 1`` and ``x = n - 1``.

    Returns
    -------
    ProportionEstimate

    Raises
    ------
    TypeError
        If a count is not an integer.
    ValueError
        If a count is negative, ``total`` is 0, or ``successes`` exceeds ``total``.
    """
    level = _check_confidence_level(confidence_level)
    x = _check_count("successes", successes)
    n = _check_count("total", total)
    if n == 0:
        raise ValueError("total must be at least 1")
    if x > n:
        raise ValueError(f"successes ({x}) exceed total ({n})")
    z = _normal_quantile_two_sided(level)
    z2 = z * z
    p = x / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half_width = z * math.sqrt((p * (1 - p) + z2 / (4 * n)) / n) / (1 + z2 / n)
    lower = 0.0 if x == 0 else centre - half_width
    upper = 1.0 if x == n else centre + half_width
    if hmisc_edge_cases:
        # log(confidence_level) is log(1 - alpha) without the rounding of forming alpha first.
        if x == 1:
            lower = -math.log(level) / n
        if x == n - 1:
            upper = 1 + math.log(level) / n
    return ProportionEstimate(
        estimate=p, lower=lower, upper=upper, successes=x, total=n, confidence_level=level
    )


def _proportion(successes: int, total: int, confidence_level: float) -> ProportionEstimate:
    """Like :func:`wilson_interval`, but an empty denominator gives an all-NaN estimate."""
    if total == 0:
        return ProportionEstimate(
            estimate=math.nan,
            lower=math.nan,
            upper=math.nan,
            successes=successes,
            total=0,
            confidence_level=confidence_level,
        )
    return wilson_interval(successes, total, confidence_level=confidence_level)


# ---------------------------------------------------------------------------------------------
# Classification: confusion matrix, per-class metrics, kappa
# ---------------------------------------------------------------------------------------------


def confusion_matrix(
    truth: npt.ArrayLike, predicted: npt.ArrayLike, labels: Sequence[Label]
) -> npt.NDArray[np.int64]:
    """Return the confusion matrix of ``predicted`` against ``truth``.

    Rows are the true class, columns the predicted class, both in the order of ``labels``:
    ``matrix[i, j]`` counts the cases whose truth is ``labels[i]`` and whose prediction is
    ``labels[j]``. (The hip paper's printed 2 x 2 table is the other way round.)

    Parameters
    ----------
    truth, predicted : array_like
        One label per case, of equal, non-zero length.
    labels : sequence of str or int
        All classes, unique, at least two; their order is the order of rows and columns and,
        for weighted kappa, the ordinal scale.

    Returns
    -------
    numpy.ndarray
        Integer counts, shape ``(len(labels), len(labels))``.

    Raises
    ------
    TypeError
        If a label is neither str nor int.
    ValueError
        If the inputs are empty, differ in length, contain NaN or values not in ``labels``, or
        the labels are not unique.
    """
    checked_labels = _check_labels(labels)
    truth_positions = _label_positions("truth", truth, checked_labels)
    predicted_positions = _label_positions("predicted", predicted, checked_labels)
    if truth_positions.size != predicted_positions.size:
        raise ValueError(
            f"truth and predicted differ in length: {truth_positions.size} != "
            f"{predicted_positions.size}"
        )
    n_classes = len(checked_labels)
    flat = np.bincount(truth_positions * n_classes + predicted_positions,
                       minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def _kappa_weights(n_classes: int, weighting: KappaWeighting) -> npt.NDArray[np.float64]:
    positions = np.arange(n_classes)
    distance = np.abs(positions[:, None] - positions[None, :]).astype(np.float64)
    if weighting is KappaWeighting.UNWEIGHTED:
        return (distance > 0).astype(np.float64)
    if weighting is KappaWeighting.LINEAR:
        return distance
    return distance**2


def _kappa(counts: npt.NDArray[np.int64], weighting: KappaWeighting) -> float:
    observed = counts.astype(np.float64)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = _kappa_weights(counts.shape[0], weighting)
    expected_disagreement = float((weights * expected).sum())
    if expected_disagreement == 0.0:
        # Both raters used one and the same class throughout: chance explains everything.
        return math.nan
    return 1.0 - float((weights * observed).sum()) / expected_disagreement


def kappa_from_confusion_matrix(
    matrix: npt.ArrayLike, *, weighting: KappaWeighting | str = KappaWeighting.UNWEIGHTED
) -> float:
    """Return Cohen's kappa, plain or weighted, from a confusion matrix.

    ``kappa = 1 - sum(w * O) / sum(w * E)`` with ``O`` the matrix, ``E = outer(row sums, column
    sums) / N`` and ``w`` the disagreement weights of ``weighting`` (see :class:`KappaWeighting`).
    Unweighted, this equals ``(p_o - p_e) / (1 - p_e)``.

    Parameters
    ----------
    matrix : array_like
        Square matrix of non-negative whole counts (rows truth, columns prediction; kappa is
        symmetric in the two, so the orientation does not change the result).
    weighting : KappaWeighting or str, optional
        ``"unweighted"``, ``"linear"`` or ``"quadratic"``.

    Returns
    -------
    float
        Kappa; NaN when every case has one and the same class in truth and prediction.

    Raises
    ------
    ValueError
        If the matrix is not square, is smaller than 2 x 2, holds negative, fractional or
        non-finite counts, sums to 0, or ``weighting`` is unknown.
    """
    return _kappa(_check_confusion_matrix(matrix), KappaWeighting(weighting))


def cohen_kappa(
    truth: npt.ArrayLike,
    predicted: npt.ArrayLike,
    labels: Sequence[Label],
    *,
    weighting: KappaWeighting | str = KappaWeighting.UNWEIGHTED,
) -> float:
    """Return Cohen's kappa, plain or weighted, of ``predicted`` against ``truth``.

    Parameters
    ----------
    truth, predicted : array_like
        One label per case, of equal, non-zero length.
    labels : sequence of str or int
        All classes in ordinal order (the order matters for the weighted forms).
    weighting : KappaWeighting or str, optional
        ``"unweighted"``, ``"linear"`` or ``"quadratic"``.

    Returns
    -------
    float
        See :func:`kappa_from_confusion_matrix`.

    Raises
    ------
    TypeError, ValueError
        As :func:`confusion_matrix`; ValueError also for an unknown ``weighting``.
    """
    weighting = KappaWeighting(weighting)
    return _kappa(confusion_matrix(truth, predicted, labels), weighting)


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    """One class against the rest: its 2 x 2 counts and the statistics derived from them.

    Attributes
    ----------
    label : str or int
        The class.
    true_positives, false_positives, false_negatives, true_negatives : int
        The one-vs-rest counts.
    accuracy : ProportionEstimate
        ``(TP + TN) / N``.
    sensitivity : ProportionEstimate
        ``TP / (TP + FN)`` (recall).
    specificity : ProportionEstimate
        ``TN / (TN + FP)``.
    ppv : ProportionEstimate
        ``TP / (TP + FP)`` (precision).
    npv : ProportionEstimate
        ``TN / (TN + FN)``.
    f1 : float
        ``2 TP / (2 TP + FP + FN)``; NaN when the class occurs neither in truth nor prediction.
    cohen_kappa : float
        Cohen's kappa of the 2 x 2 table.
    """

    label: Label
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    accuracy: ProportionEstimate
    sensitivity: ProportionEstimate
    specificity: ProportionEstimate
    ppv: ProportionEstimate
    npv: ProportionEstimate
    f1: float
    cohen_kappa: float

    def to_dict(self) -> dict[str, Any]:
        """Return the class's statistics as JSON-ready plain values."""
        return {
            "label": self.label,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "true_negatives": self.true_negatives,
            "accuracy": self.accuracy.to_dict(),
            "sensitivity": self.sensitivity.to_dict(),
            "specificity": self.specificity.to_dict(),
            "ppv": self.ppv.to_dict(),
            "npv": self.npv.to_dict(),
            "f1": _json_float(self.f1),
            "cohen_kappa": _json_float(self.cohen_kappa),
        }


@dataclass(frozen=True, slots=True)
class ClassificationReport:
    """The statistics of a multi-class (or two-class) classification against the truth.

    Attributes
    ----------
    labels : tuple of str or int
        The classes, in the order of the matrix rows and columns.
    confusion_matrix : tuple of tuple of int
        Counts, rows = truth, columns = prediction.
    n : int
        The number of cases.
    accuracy : ProportionEstimate
        Overall accuracy, the trace over ``n``.
    cohen_kappa, linear_weighted_kappa, quadratic_weighted_kappa : float
        Kappa over all classes; the weighted forms take ``labels`` as an ordinal scale.
    per_class : tuple of ClassMetrics
        One-vs-rest statistics, in the order of ``labels``.
    confidence_level : float
        The two-sided confidence level of every Wilson interval in the report.
    """

    labels: tuple[Label, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]
    n: int
    accuracy: ProportionEstimate
    cohen_kappa: float
    linear_weighted_kappa: float
    quadratic_weighted_kappa: float
    per_class: tuple[ClassMetrics, ...]
    confidence_level: float

    def for_label(self, label: Label) -> ClassMetrics:
        """Return the one-vs-rest statistics of ``label``.

        Raises
        ------
        KeyError
            If ``label`` is not one of the report's labels.
        """
        for metrics in self.per_class:
            if metrics.label == label:
                return metrics
        raise KeyError(f"{label!r} is not one of the labels {list(self.labels)}")

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready plain values (``None`` where undefined)."""
        return {
            "labels": list(self.labels),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "confusion_matrix_orientation": "rows=truth, columns=prediction",
            "n": self.n,
            "accuracy": self.accuracy.to_dict(),
            "cohen_kappa": _json_float(self.cohen_kappa),
            "linear_weighted_kappa": _json_float(self.linear_weighted_kappa),
            "quadratic_weighted_kappa": _json_float(self.quadratic_weighted_kappa),
            "per_class": [metrics.to_dict() for metrics in self.per_class],
            "confidence_level": self.confidence_level,
        }


def _one_vs_rest(
    counts: npt.NDArray[np.int64], index: int, label: Label, confidence_level: float
) -> ClassMetrics:
    total = int(counts.sum())
    tp = int(counts[index, index])
    fn = int(counts[index, :].sum()) - tp
    fp = int(counts[:, index].sum()) - tp
    tn = total - tp - fn - fp
    f1_denominator = 2 * tp + fp + fn
    return ClassMetrics(
        label=label,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        accuracy=_proportion(tp + tn, total, confidence_level),
        sensitivity=_proportion(tp, tp + fn, confidence_level),
        specificity=_proportion(tn, tn + fp, confidence_level),
        ppv=_proportion(tp, tp + fp, confidence_level),
        npv=_proportion(tn, tn + fn, confidence_level),
        f1=2 * tp / f1_denominator if f1_denominator else math.nan,
        cohen_kappa=_kappa(np.array([[tp, fn], [fp, tn]], dtype=np.int64),
                           KappaWeighting.UNWEIGHTED),
    )


def classification_report_from_confusion_matrix(
    matrix: npt.ArrayLike,
    labels: Sequence[Label],
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
) -> ClassificationReport:
    """Return the full classification report of a confusion matrix.

    Parameters
    ----------
    matrix : array_like
        Square matrix of non-negative whole counts, rows = truth, columns = prediction, in the
        order of ``labels`` (for a published table, check its orientation first).
    labels : sequence of str or int
        The classes, unique; their order is the ordinal scale of the weighted kappas.
    confidence_level : float, optional
        Two-sided confidence level of the Wilson intervals.

    Returns
    -------
    ClassificationReport

    Raises
    ------
    TypeError
        If a label is neither str nor int.
    ValueError
        If the labels are not unique or do not match the matrix's size, or the matrix is not a
        valid table of counts (see :func:`kappa_from_confusion_matrix`).
    """
    level = _check_confidence_level(confidence_level)
    checked_labels = _check_labels(labels)
    counts = _check_confusion_matrix(matrix, checked_labels)
    total = int(counts.sum())
    return ClassificationReport(
        labels=checked_labels,
        confusion_matrix=tuple(tuple(int(count) for count in row) for row in counts),
        n=total,
        accuracy=_proportion(int(np.trace(counts)), total, level),
        cohen_kappa=_kappa(counts, KappaWeighting.UNWEIGHTED),
        linear_weighted_kappa=_kappa(counts, KappaWeighting.LINEAR),
        quadratic_weighted_kappa=_kappa(counts, KappaWeighting.QUADRATIC),
        per_class=tuple(
            _one_vs_rest(counts, index, label, level) for index, label in enumerate(checked_labels)
        ),
        confidence_level=level,
    )


def classification_report(
    truth: npt.ArrayLike,
    predicted: npt.ArrayLike,
    labels: Sequence[Label],
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
) -> ClassificationReport:
    """Return the full classification report of ``predicted`` against ``truth``.

    Parameters
    ----------
    truth, predicted : array_like
        One label per case, of equal, non-zero length.
    labels : sequence of str or int
        All classes, unique, in ordinal order (e.g. normal, osteopenia, osteoporosis).
    confidence_level : float, optional
        Two-sided confidence level of the Wilson intervals.

    Returns
    -------
    ClassificationReport

    Raises
    ------
    TypeError, ValueError
        As :func:`confusion_matrix`.
    """
    return classification_report_from_confusion_matrix(
        confusion_matrix(truth, predicted, labels), labels, confidence_level=confidence_level
    )


# ---------------------------------------------------------------------------------------------
# Ranking: ROC curve and AUC
# ---------------------------------------------------------------------------------------------


def _mann_whitney_auc(
    positive_scores: npt.NDArray[np.float64], negative_scores: npt.NDArray[np.float64]
) -> float:
    """Return P(positive > negative) + P(positive == negative) / 2 over all pairs."""
    sorted_negatives = np.sort(negative_scores)
    below = np.searchsorted(sorted_negatives, positive_scores, side="left")
    below_or_tied = np.searchsorted(sorted_negatives, positive_scores, side="right")
    wins = below.sum() + 0.5 * (below_or_tied - below).sum()
    return float(wins) / (positive_scores.size * negative_scores.size)


def roc_auc(truth: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Return the area under the ROC curve (the Mann-Whitney statistic, ties counting 1/2).

    Parameters
    ----------
    truth : array_like
        Binary truth per case, bool or 0/1 (1 = positive, e.g. osteoporosis).
    scores : array_like
        Finite scores, higher meaning more likely positive (e.g. a probability).

    Returns
    -------
    float
        The probability that a random positive case scores higher than a random negative one,
        tied pairs counting one half.

    Raises
    ------
    ValueError
        If the inputs are empty, differ in length, contain NaN, truth is not binary, or truth
        holds a single class.
    """
    positives, negatives = _scored_classes(truth, scores)
    return _mann_whitney_auc(positives, negatives)


@dataclass(frozen=True, slots=True)
class AucEstimate:
    """The AUC with a stratified bootstrap percentile interval.

    Attributes
    ----------
    auc : float
        The AUC of the sample.
    lower, upper : float
        The percentile confidence limits over the bootstrap AUCs.
    confidence_level : float
        The two-sided confidence level of the interval.
    n_resamples : int
        The number of bootstrap resamples.
    seed : int or None
        The seed the resampling started from; None when a caller's Generator was used.
    n_positive, n_negative : int
        The numbers of positive and negative cases (each resample keeps both).
    """

    auc: float
    lower: float
    upper: float
    confidence_level: float
    n_resamples: int
    seed: int | None
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, Any]:
        """Return the estimate as JSON-ready plain values."""
        return {
            "auc": self.auc,
            "lower": self.lower,
            "upper": self.upper,
            "confidence_level": self.confidence_level,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
        }


def roc_auc_with_bootstrap_ci(
    truth: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
    n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
    seed: int | np.random.Generator = 0,
) -> AucEstimate:
    """Return the AUC with a stratified bootstrap percentile confidence interval.

    Each resample draws, with replacement, as many positive cases from the positives and as
    many negative cases from the negatives as the sample has, so every resample has both
    classes and the class balance of the sample. The limits are the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles (numpy's default linear interpolation) of the resampled AUCs.

    Parameters
    ----------
    truth : array_like
        Binary truth per case, bool or 0/1 (1 = positive).
    scores : array_like
        Finite scores, higher meaning more likely positive.
    confidence_level : float, optional
        Two-sided confidence level, in (0, 1).
    n_resamples : int, optional
        Number of bootstrap resamples, at least 1.
    seed : int or numpy.random.Generator, optional
        Seed of a fresh ``numpy.random.default_rng``, so the interval is reproducible; or a
        Generator to draw from (the result then records no seed).

    Returns
    -------
    AucEstimate

    Raises
    ------
    TypeError
        If ``seed`` is neither an int nor a Generator, or ``n_resamples`` is not an int.
    ValueError
        As :func:`roc_auc`; also if ``n_resamples`` is less than 1 or ``seed`` is negative.
    """
    level = _check_confidence_level(confidence_level)
    resamples = _check_count("n_resamples", n_resamples)
    if resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    if isinstance(seed, np.random.Generator):
        rng, recorded_seed = seed, None
    else:
        recorded_seed = _check_count("seed", seed)
        rng = np.random.default_rng(recorded_seed)
    positives, negatives = _scored_classes(truth, scores)
    resampled = np.empty(resamples, dtype=np.float64)
    for index in range(resamples):
        resampled[index] = _mann_whitney_auc(
            positives[rng.integers(0, positives.size, size=positives.size)],
            negatives[rng.integers(0, negatives.size, size=negatives.size)],
        )
    lower, upper = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return AucEstimate(
        auc=_mann_whitney_auc(positives, negatives),
        lower=float(lower),
        upper=float(upper),
        confidence_level=level,
        n_resamples=resamples,
        seed=recorded_seed,
        n_positive=int(positives.size),
        n_negative=int(negatives.size),
    )


@dataclass(frozen=True, slots=True)
class RocCurve:
    """The points of an empirical ROC curve, from (0, 0) to (1, 1).

    Attributes
    ----------
    false_positive_rate, true_positive_rate : tuple of float
        The curve's points, non-decreasing in both coordinates.
    thresholds : tuple of float
        ``thresholds[k]`` is the lowest score called positive at point ``k`` (a case is called
        positive when its score is ``>=`` the threshold); the first is ``+inf`` (no positives).
    """

    false_positive_rate: tuple[float, ...]
    true_positive_rate: tuple[float, ...]
    thresholds: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the curve as JSON-ready plain values (the ``+inf`` threshold as ``None``)."""
        return {
            "false_positive_rate": list(self.false_positive_rate),
            "true_positive_rate": list(self.true_positive_rate),
            "thresholds": [None if math.isinf(value) else value for value in self.thresholds],
        }


def roc_curve(truth: npt.ArrayLike, scores: npt.ArrayLike) -> RocCurve:
    """Return the points of the empirical ROC curve, one per distinct score, for plotting.

    The trapezoidal area under these points equals :func:`roc_auc`.

    Parameters
    ----------
    truth : array_like
        Binary truth per case, bool or 0/1 (1 = positive).
    scores : array_like
        Finite scores, higher meaning more likely positive.

    Returns
    -------
    RocCurve

    Raises
    ------
    ValueError
        As :func:`roc_auc`.
    """
    positives, negatives = _scored_classes(truth, scores)
    thresholds = np.unique(np.concatenate([positives, negatives]))[::-1]
    # Cases with score >= t, counted by searching the ascending sorted scores.
    sorted_positives = np.sort(positives)
    sorted_negatives = np.sort(negatives)
    true_positives = positives.size - np.searchsorted(sorted_positives, thresholds, side="left")
    false_positives = negatives.size - np.searchsorted(sorted_negatives, thresholds, side="left")
    return RocCurve(
        false_positive_rate=(0.0, *(false_positives / negatives.size).tolist()),
        true_positive_rate=(0.0, *(true_positives / positives.size).tolist()),
        thresholds=(math.inf, *thresholds.tolist()),
    )


# ---------------------------------------------------------------------------------------------
# Ranking: precision-recall curve and average precision
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrecisionRecallCurve:
    """The points of an empirical precision-recall curve, one per distinct score.

    Attributes
    ----------
    recall, precision : tuple of float
        The curve's points from the highest threshold (fewest cases called positive) to the
        lowest (every case called positive); recall is non-decreasing.
    thresholds : tuple of float
        ``thresholds[k]`` is the lowest score called positive at point ``k``.
    prevalence : float
        The share of positive cases: the precision of a test that ranks at random.
    """

    recall: tuple[float, ...]
    precision: tuple[float, ...]
    thresholds: tuple[float, ...]
    prevalence: float

    def to_dict(self) -> dict[str, Any]:
        """Return the curve as JSON-ready plain values."""
        return {
            "recall": list(self.recall),
            "precision": list(self.precision),
            "thresholds": list(self.thresholds),
            "prevalence": self.prevalence,
        }


def precision_recall_curve(truth: npt.ArrayLike, scores: npt.ArrayLike) -> PrecisionRecallCurve:
    """Return the precision-recall curve, one point per distinct score (ties form one point).

    Parameters
    ----------
    truth : array_like
        Binary truth per case, bool or 0/1 (1 = positive).
    scores : array_like
        Finite scores, higher meaning more likely positive.

    Returns
    -------
    PrecisionRecallCurve

    Raises
    ------
    ValueError
        As :func:`roc_auc`.
    """
    positives, negatives = _scored_classes(truth, scores)
    thresholds = np.unique(np.concatenate([positives, negatives]))[::-1]
    true_positives = positives.size - np.searchsorted(np.sort(positives), thresholds, side="left")
    false_positives = negatives.size - np.searchsorted(np.sort(negatives), thresholds, side="left")
    return PrecisionRecallCurve(
        recall=tuple((true_positives / positives.size).tolist()),
        precision=tuple((true_positives / (true_positives + false_positives)).tolist()),
        thresholds=tuple(thresholds.tolist()),
        prevalence=positives.size / (positives.size + negatives.size),
    )


def average_precision(truth: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Return the average precision: precision at each threshold weighted by the recall it adds.

    ``AP = sum_k (R_k - R_(k-1)) * P_k`` over the points of :func:`precision_recall_curve`,
    with ``R_0 = 0`` (a step function, no interpolation between points; the definition
    scikit-learn's ``average_precision_score`` uses).

    Parameters
    ----------
    truth : array_like
        Binary truth per case, bool or 0/1 (1 = positive).
    scores : array_like
        Finite scores, higher meaning more likely positive.

    Returns
    -------
    float
        In (0, 1]; a random ranking scores about the prevalence.

    Raises
    ------
    ValueError
        As :func:`roc_auc`.
    """
    curve = precision_recall_curve(truth, scores)
    recall = np.array((0.0, *curve.recall))
    return float(np.sum(np.diff(recall) * np.array(curve.precision)))
