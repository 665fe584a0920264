"""The validation report's figures, drawn with matplotlib and returned as PNG bytes.

Each function takes plain numbers (the statistics come from :mod:`osteonode.evaluate.metrics`
and :mod:`osteonode.evaluate.report`; nothing is computed here beyond what a plot needs) and
returns one PNG image, ready to embed in a self-contained HTML page. Figures are built on
:class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, never through pyplot, so no
global backend or figure registry is touched and figures can be drawn from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from osteonode.evaluate.metrics import AucEstimate, PrecisionRecallCurve, RocCurve

__all__ = [
    "BlandAltmanLines",
    "PrecisionRecallSeries",
    "RegressionBand",
    "RocSeries",
    "bland_altman_figure",
    "confusion_matrix_figure",
    "precision_recall_figure",
    "roc_figure",
    "scatter_figure",
]

_DPI = 110
_SQUARE = (5.0, 4.6)
_WIDE = (6.0, 4.2)


@dataclass(frozen=True, slots=True)
class RegressionBand:
    """A fitted regression line and its confidence band, evaluated on a grid of x values.

    Attributes
    ----------
    slope, intercept : float
        The least-squares line ``y = intercept + slope * x``.
    x : tuple of float
        The grid, increasing.
    lower, upper : tuple of float
        The band's limits at each grid value.
    confidence_level : float
        The band's two-sided confidence level.
    """

    slope: float
    intercept: float
    x: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    confidence_level: float


@dataclass(frozen=True, slots=True)
class BlandAltmanLines:
    """The horizontal lines of a Bland-Altman plot.

    Attributes
    ----------
    mean_difference : float
        The bias, mean of ``predicted - observed``.
    lower_limit, upper_limit : float
        The limits of agreement.
    confidence_level : float
        The share of differences the limits are meant to hold.
    """

    mean_difference: float
    lower_limit: float
    upper_limit: float
    confidence_level: float


@dataclass(frozen=True, slots=True)
class RocSeries:
    """One ROC curve to draw, with its AUC for the legend.

    Attributes
    ----------
    name : str
        What the curve separates, e.g. "osteoporosis vs not".
    curve : RocCurve
        The curve's points.
    auc : AucEstimate
        The AUC and its confidence interval.
    """

    name: str
    curve: RocCurve
    auc: AucEstimate


@dataclass(frozen=True, slots=True)
class PrecisionRecallSeries:
    """One precision-recall curve to draw, with its average precision for the legend.

    Attributes
    ----------
    name : str
        What the curve separates, e.g. "osteoporosis vs not".
    curve : PrecisionRecallCurve
        The curve's points and the prevalence.
    average_precision : float
        The area under the step curve.
    """

    name: str
    curve: PrecisionRecallCurve
    average_precision: float


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _paired(observed: npt.ArrayLike, predicted: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(observed, dtype=np.float64)
    y = np.asarray(predicted, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"observed and predicted must be non-empty vectors of one length, got "
                         f"shapes {x.shape} and {y.shape}")
    return x, y


def scatter_figure(
    observed: npt.ArrayLike,
    predicted: npt.ArrayLike,
    band: RegressionBand,
    *,
    unit: str = "g/cm²",
    r_text: str | None = None,
) -> bytes:
    """Draw observed against estimated values with the regression line, its band and identity.

    Parameters
    ----------
    observed, predicted : array_like
        The reference (x axis) and estimated (y axis) values, paired.
    band : RegressionBand
        The fitted line and its confidence band.
    unit : str, optional
        The values' unit, for the axis labels.
    r_text : str, optional
        A line such as "r = 0.90 (0.88-0.92)" written in the plot's corner.

    Returns
    -------
    bytes
        A PNG image.

    Raises
    ------
    ValueError
        If the inputs are not paired non-empty vectors.
    """
    x, y = _paired(observed, predicted)
    figure = Figure(figsize=_SQUARE)
    axes = figure.add_subplot()
    axes.scatter(x, y, s=12, alpha=0.6, color="#1f77b4", edgecolors="none", label="images")
    grid = np.asarray(band.x)
    axes.fill_between(grid, band.lower, band.upper, color="#d62728", alpha=0.2,
                      label=f"{band.confidence_level:.0%} band", linewidth=0)
    axes.plot(grid, band.intercept + band.slope * grid, color="#d62728",
              label=f"y = {band.intercept:.3f} + {band.slope:.3f} x")
    low = float(min(x.min(), y.min()))
    high = float(max(x.max(), y.max()))
    margin = 0.05 * (high - low or 1.0)
    limits = (low - margin, high + margin)
    axes.plot(limits, limits, color="0.4", linestyle="--", linewidth=1, label="identity")
    axes.set_xlim(limits)
    axes.set_ylim(limits)
    axes.set_aspect("equal")
    axes.set_xlabel(f"observed (reference) BMD [{unit}]")
    axes.set_ylabel(f"estimated BMD [{unit}]")
    if r_text:
        axes.text(0.03, 0.97, r_text, transform=axes.transAxes, va="top")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return _png(figure)


def bland_altman_figure(
    observed: npt.ArrayLike,
    predicted: npt.ArrayLike,
    lines: BlandAltmanLines,
    *,
    unit: str = "g/cm²",
) -> bytes:
    """Draw the Bland-Altman plot: difference against mean of each pair, bias and limits.

    Parameters
    ----------
    observed, predicted : array_like
        The reference and estimated values, paired.
    lines : BlandAltmanLines
        The bias and the limits of agreement.
    unit : str, optional
        The values' unit, for the axis labels.

    Returns
    -------
    bytes
        A PNG image.

    Raises
    ------
    ValueError
        If the inputs are not paired non-empty vectors.
    """
    x, y = _paired(observed, predicted)
    figure = Figure(figsize=_WIDE)
    axes = figure.add_subplot()
    axes.scatter((x + y) / 2, y - x, s=12, alpha=0.6, color="#1f77b4", edgecolors="none")
    axes.axhline(lines.mean_difference, color="#d62728",
                 label=f"bias {lines.mean_difference:+.3f}")
    for limit in (lines.lower_limit, lines.upper_limit):
        axes.axhline(limit, color="#d62728", linestyle="--", linewidth=1)
    axes.axhline(0.0, color="0.6", linewidth=0.8)
    axes.plot([], [], color="#d62728", linestyle="--", linewidth=1,
              label=f"limits of agreement ({lines.lower_limit:+.3f}, {lines.upper_limit:+.3f})")
    axes.set_xlabel(f"mean of observed and estimated [{unit}]")
    axes.set_ylabel(f"estimated − observed [{unit}]")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return _png(figure)


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """Draw a confusion matrix as a heat-map with its counts, rows = truth.

    Parameters
    ----------
    matrix : sequence of sequence of int
        Square counts, rows = truth, columns = prediction.
    labels : sequence of str
        The class names, in the order of the rows and columns.

    Returns
    -------
    bytes
        A PNG image.

    Raises
    ------
    ValueError
        If the matrix is not square or does not match the labels.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape != (len(labels), len(labels)):
        raise ValueError(f"a {len(labels)}-label confusion matrix must be {len(labels)} x "
                         f"{len(labels)}, got shape {counts.shape}")
    names = [str(label).replace("_", " ") for label in labels]
    figure = Figure(figsize=_SQUARE)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues", vmin=0)
    threshold = counts.max() / 2 if counts.max() else 1
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black")
    axes.set_xticks(range(len(names)), names, rotation=20, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("truth (reference)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return _png(figure)


def roc_figure(series: Sequence[RocSeries]) -> bytes:
    """Draw one or more ROC curves with the chance diagonal, AUC and interval in the legend.

    Parameters
    ----------
    series : sequence of RocSeries
        The curves, at least one.

    Returns
    -------
    bytes
        A PNG image.

    Raises
    ------
    ValueError
        If ``series`` is empty.
    """
    if not series:
        raise ValueError("a ROC figure needs at least one curve")
    figure = Figure(figsize=_SQUARE)
    axes = figure.add_subplot()
    for item in series:
        estimate = item.auc
        # Straight segments between the points: their area is the AUC, ties included.
        axes.plot(item.curve.false_positive_rate, item.curve.true_positive_rate,
                  label=f"{item.name}: AUC {estimate.auc:.3f} "
                        f"({estimate.lower:.3f}-{estimate.upper:.3f})")
    axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("1 − specificity (false positive rate)")
    axes.set_ylabel("sensitivity (true positive rate)")
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return _png(figure)


def precision_recall_figure(series: Sequence[PrecisionRecallSeries]) -> bytes:
    """Draw precision-recall curves as steps, each with its prevalence (a random ranking).

    Parameters
    ----------
    series : sequence of PrecisionRecallSeries
        The curves, at least one.

    Returns
    -------
    bytes
        A PNG image.

    Raises
    ------
    ValueError
        If ``series`` is empty.
    """
    if not series:
        raise ValueError("a precision-recall figure needs at least one curve")
    figure = Figure(figsize=_SQUARE)
    axes = figure.add_subplot()
    for item in series:
        curve = item.curve
        # Steps: the precision of a point holds over the recall it adds (the AP's definition).
        (line,) = axes.step((0.0, *curve.recall), (curve.precision[0], *curve.precision),
                            where="pre", label=f"{item.name}: AP {item.average_precision:.3f}")
        axes.axhline(curve.prevalence, color=line.get_color(), linestyle=":", linewidth=1,
                     label=f"prevalence {curve.prevalence:.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("recall (sensitivity)")
    axes.set_ylabel("precision (PPV)")
    axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return _png(figure)
