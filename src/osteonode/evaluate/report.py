"""The validation report: every table and figure of the papers, from a predictions file.

:func:`analyse` turns checked :class:`~osteonode.evaluate.predictions.Prediction` rows into a
:class:`Validation` (the statistics, all from :mod:`osteonode.evaluate.metrics`);
:func:`write_report` writes its numbers as ``metrics.json`` and the whole report as one
self-contained ``report.html`` (figures embedded as PNG data URIs, no external files, readable
offline). The report shows, as the papers do:

1. the flow of images: received, excluded with reasons, analysed;
2. patient characteristics by sex;
3. estimated against observed BMD: scatter with regression line, its band and the identity line,
   and a Bland-Altman plot (when the file has BMD columns);
4. the confusion matrix and the per-class (one-vs-rest) table with Wilson intervals and kappas;
5. ROC curves with AUC and bootstrap interval (when the file has score columns);
6. subgroup tables by sex and age band.

A statistic that cannot be computed for the data at hand (a subgroup with one class only, fewer
than four BMD pairs) is recorded with the reason instead of a number.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import html
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, Generic, TypeVar

import numpy as np
import structlog

from osteonode import __version__
from osteonode.bone import WHO_CATEGORIES, Category, Sex
from osteonode.evaluate.figures import (
    BlandAltmanLines,
    RegressionBand,
    RocSeries,
    bland_altman_figure,
    confusion_matrix_figure,
    roc_figure,
    scatter_figure,
)
from osteonode.evaluate.metrics import (
    DEFAULT_BOOTSTRAP_RESAMPLES,
    DEFAULT_CONFIDENCE_LEVEL,
    AucEstimate,
    ClassificationReport,
    ProportionEstimate,
    RegressionReport,
    RocCurve,
    classification_report,
    regression_report,
    roc_auc_with_bootstrap_ci,
    roc_curve,
)
from osteonode.evaluate.predictions import (
    BMD_PHYSICAL_RANGE_G_CM2,
    NOT_OSTEOPOROSIS,
    Prediction,
    Status,
    read_predictions,
)

__all__ = [
    "HTML_FILE",
    "METRICS_FILE",
    "AgeBand",
    "Agreement",
    "Outcome",
    "ReportFiles",
    "RocResult",
    "Subgroup",
    "Validation",
    "ValidationSettings",
    "age_band",
    "analyse",
    "render_html",
    "validate_predictions_file",
    "write_report",
]

log = structlog.get_logger(__name__)

METRICS_FILE = "metrics.json"
HTML_FILE = "report.html"
METRICS_FORMAT = "osteonode-validation/1"
THREE_CLASS_LABELS = tuple(category.value for category in WHO_CATEGORIES)
#: Points on which the regression band is evaluated.
_BAND_GRID_POINTS = 60
_MIN_REGRESSION_PAIRS = 4

T = TypeVar("T")


class AgeBand(enum.StrEnum):
    """The age bands of the subgroup tables."""

    UNDER_50 = "<50"
    FROM_50_TO_64 = "50-64"
    FROM_65_TO_79 = "65-79"
    FROM_80 = ">=80"
    UNKNOWN = "unknown"


def age_band(age: float | None) -> AgeBand:
    """Return the age band of ``age`` in years; ``UNKNOWN`` for None.

    Parameters
    ----------
    age : float or None
        Age in whole or fractional years; a band's upper bound is exclusive (64.9 is 50-64).

    Returns
    -------
    AgeBand
    """
    if age is None:
        return AgeBand.UNKNOWN
    if age < 50:
        return AgeBand.UNDER_50
    if age < 65:
        return AgeBand.FROM_50_TO_64
    if age < 80:
        return AgeBand.FROM_65_TO_79
    return AgeBand.FROM_80


_SEX_NAMES = {Sex.FEMALE: "female", Sex.MALE: "male", Sex.OTHER: "other", Sex.UNKNOWN: "unknown"}


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """How the statistics are computed.

    Parameters
    ----------
    positive : Category or None
        Analyse one class against the rest (two classes) instead of the three WHO categories.
        None: three classes, unless the file uses ``not_osteoporosis`` (a two-class method), in
        which case osteoporosis against the rest.
    n_resamples : int
        Bootstrap resamples for the AUC intervals and the regression band.
    seed : int
        Seed of the bootstrap, so a report is reproducible.
    confidence_level : float
        Two-sided level of every interval.
    """

    positive: Category | None = None
    n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES
    seed: int = 0
    confidence_level: float = DEFAULT_CONFIDENCE_LEVEL

    def __post_init__(self) -> None:
        if self.positive is not None and not isinstance(self.positive, Category):
            raise TypeError(f"positive must be a Category or None, got {self.positive!r}")
        for name in ("n_resamples", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {self.n_resamples}")
        if self.seed < 0:
            raise ValueError(f"seed must not be negative, got {self.seed}")
        if not 0.0 < self.confidence_level < 1.0:
            raise ValueError(f"confidence_level must lie in (0, 1), got {self.confidence_level}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-ready plain values."""
        return {
            "positive": None if self.positive is None else self.positive.value,
            "bootstrap_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence_level": self.confidence_level,
        }


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """A statistic, or the reason it could not be computed."""

    value: T | None
    reason: str | None = None

    def to_dict(self, convert: Callable[[T], Any]) -> Any:
        """Return ``convert(value)``, or ``{"not_computed": reason}``."""
        return {"not_computed": self.reason} if self.value is None else convert(self.value)


def _attempt(compute: Callable[[], T]) -> Outcome[T]:
    try:
        return Outcome(compute())
    except ValueError as error:
        return Outcome(None, str(error))


@dataclass(frozen=True, slots=True)
class RocResult:
    """One ROC analysis: what it separates, which rows it used, its curve and AUC."""

    name: str
    description: str
    n_rows: int
    curve: RocCurve
    auc: AucEstimate

    def to_dict(self) -> dict[str, Any]:
        """Return the AUC, its interval and the curve as JSON-ready values."""
        return {"description": self.description, "n": self.n_rows, "auc": self.auc.to_dict(),
                "curve": self.curve.to_dict()}


@dataclass(frozen=True, slots=True)
class Agreement:
    """Regression and Bland-Altman statistics of estimated against observed BMD."""

    observed: tuple[float, ...]
    predicted: tuple[float, ...]
    report: RegressionReport
    band: RegressionBand
    bland_altman: BlandAltmanLines
    difference_sd: float

    def to_dict(self) -> dict[str, Any]:
        """Return the numbers as JSON-ready values (not the points themselves)."""
        return {
            **self.report.to_dict(),
            "unit": "g/cm2",
            "fit": {"slope": self.band.slope, "intercept": self.band.intercept,
                    "band": "bootstrap percentile band of the least-squares line",
                    "confidence_level": self.band.confidence_level},
            "bland_altman": {"mean_difference": self.bland_altman.mean_difference,
                             "sd_difference": self.difference_sd,
                             "lower_limit": self.bland_altman.lower_limit,
                             "upper_limit": self.bland_altman.upper_limit,
                             "difference": "predicted - observed",
                             "confidence_level": self.bland_altman.confidence_level},
        }


@dataclass(frozen=True, slots=True)
class Subgroup:
    """The statistics of one subgroup (by sex or age band)."""

    name: str
    n: int
    classification: ClassificationReport
    regression: Outcome[RegressionReport] | None
    auc: Outcome[AucEstimate] | None

    def to_dict(self) -> dict[str, Any]:
        """Return the subgroup's statistics as JSON-ready values."""
        return {
            "n": self.n,
            "classification": self.classification.to_dict(),
            "regression": None if self.regression is None
            else self.regression.to_dict(lambda report: report.to_dict()),
            "auc": None if self.auc is None else self.auc.to_dict(lambda auc: auc.to_dict()),
        }


@dataclass(frozen=True)
class Validation:
    """Every statistic of the report, computed from a set of predictions.

    Attributes
    ----------
    settings : ValidationSettings
        How it was computed.
    labels : tuple of str
        The classes of the confusion matrix, in ordinal order.
    positive : str or None
        The positive class of a two-class analysis.
    unit : str
        What one row counts ("image", or "image side" for per-side rows).
    flow : dict
        ``received``, ``excluded``, ``analysed`` and ``excluded_by_reason``.
    characteristics : dict
        Patient characteristics by sex, of the analysed rows.
    classification : ClassificationReport
        All analysed rows.
    agreement : Outcome of Agreement or None
        None when the file has no BMD pairs.
    roc : tuple of Outcome of RocResult
        One per score column present.
    subgroups : dict
        ``{"sex": {name: Subgroup}, "age_band": {name: Subgroup}}``.
    source : dict
        The predictions file's path and SHA-256, when read from a file.
    """

    settings: ValidationSettings
    labels: tuple[str, ...]
    positive: str | None
    unit: str
    flow: dict[str, Any]
    characteristics: dict[str, Any]
    classification: ClassificationReport
    agreement: Outcome[Agreement] | None
    roc: tuple[tuple[str, Outcome[RocResult]], ...]
    subgroups: dict[str, dict[str, Subgroup]]
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return everything numeric in the report as JSON-ready values (``metrics.json``)."""
        return {
            "format": METRICS_FORMAT,
            "osteonode_version": __version__,
            "source": self.source,
            "settings": {**self.settings.to_dict(), "labels": list(self.labels),
                         "positive_class": self.positive,
                         "bmd_physical_range_g_cm2": list(BMD_PHYSICAL_RANGE_G_CM2)},
            "unit": self.unit,
            "flow": self.flow,
            "characteristics": self.characteristics,
            "classification": self.classification.to_dict(),
            "regression": None if self.agreement is None
            else self.agreement.to_dict(lambda agreement: agreement.to_dict()),
            "roc": {name: outcome.to_dict(lambda result: result.to_dict())
                    for name, outcome in self.roc},
            "subgroups": {kind: {name: subgroup.to_dict() for name, subgroup in groups.items()}
                          for kind, groups in self.subgroups.items()},
        }


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


def _labels_and_mapping(
    rows: Sequence[Prediction], positive: Category | None
) -> tuple[tuple[str, ...], str | None, Callable[[str], str]]:
    """Choose the classes of the analysis and how a file category maps onto them."""
    used = {row.truth_category for row in rows} | {row.predicted_category for row in rows}
    if positive is None and NOT_OSTEOPOROSIS not in used:
        return THREE_CLASS_LABELS, None, lambda category: category
    positive = positive or Category.OSTEOPOROSIS
    if NOT_OSTEOPOROSIS in used and positive is not Category.OSTEOPOROSIS:
        raise ValueError(
            f"the file uses {NOT_OSTEOPOROSIS!r}, which cannot be split for the positive class "
            f"{positive.value!r}; analyse osteoporosis against the rest instead"
        )
    negative = f"not_{positive.value}"
    return (negative, positive.value), positive.value, (
        lambda category: positive.value if category == positive.value else negative
    )


def _flow(predictions: Sequence[Prediction]) -> dict[str, Any]:
    reasons = Counter(row.exclusion_reason for row in predictions if row.status is Status.EXCLUDED)
    excluded = sum(reasons.values())
    return {
        "received": len(predictions),
        "excluded": excluded,
        "analysed": len(predictions) - excluded,
        "excluded_by_reason": {str(reason): count for reason, count in reasons.most_common()},
    }


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "n": int(array.size),
        "mean": float(array.mean()) if array.size else None,
        "sd": float(array.std(ddof=1)) if array.size > 1 else None,
    }


def _characteristics(rows: Sequence[Prediction]) -> dict[str, Any]:
    """Patient characteristics of the analysed rows: columns by sex and all together."""
    groups: dict[str, list[Prediction]] = {}
    for sex in Sex:
        members = [row for row in rows if row.sex is sex]
        if members:
            groups[_SEX_NAMES[sex]] = members
    groups["all"] = list(rows)
    table: dict[str, Any] = {}
    for name, members in groups.items():
        bmd = [row.truth_bmd for row in members if row.truth_bmd is not None]
        table[name] = {
            "n": len(members),
            "age_years": _mean_sd([row.age for row in members if row.age is not None]),
            "age_band": {band.value: sum(age_band(row.age) is band for row in members)
                         for band in AgeBand},
            "truth_category": {label: sum(row.truth_category == label for row in members)
                               for label in (*THREE_CLASS_LABELS, NOT_OSTEOPOROSIS)
                               if any(row.truth_category == label for row in rows)},
            "truth_bmd_g_cm2": _mean_sd(bmd) if bmd else None,
        }
    return table


def _regression_band(
    observed: np.ndarray, predicted: np.ndarray, settings: ValidationSettings
) -> RegressionBand:
    """Fit the least-squares line and its bootstrap percentile band (pairs resampled)."""
    slope, intercept = np.polyfit(observed, predicted, 1)
    grid = np.linspace(observed.min(), observed.max(), _BAND_GRID_POINTS)
    rng = np.random.default_rng(settings.seed)
    lines = np.empty((settings.n_resamples, grid.size))
    for index in range(settings.n_resamples):
        pick = rng.integers(0, observed.size, size=observed.size)
        x, y = observed[pick], predicted[pick]
        x_centred = x - x.mean()
        spread = float(x_centred @ x_centred)
        # A resample that drew one x value only has no slope; it is left out of the band.
        if spread == 0.0:
            lines[index] = np.nan
            continue
        resample_slope = float(x_centred @ (y - y.mean())) / spread
        lines[index] = y.mean() + resample_slope * (grid - x.mean())
    level = settings.confidence_level
    lower, upper = np.nanquantile(lines, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return RegressionBand(slope=float(slope), intercept=float(intercept), x=tuple(grid.tolist()),
                          lower=tuple(lower.tolist()), upper=tuple(upper.tolist()),
                          confidence_level=level)


def _agreement(rows: Sequence[Prediction], settings: ValidationSettings) -> Agreement:
    pairs = [(row.truth_bmd, row.predicted_bmd) for row in rows
             if row.truth_bmd is not None and row.predicted_bmd is not None]
    if len(pairs) < _MIN_REGRESSION_PAIRS:
        raise ValueError(f"{len(pairs)} BMD pair(s); the regression needs at least "
                         f"{_MIN_REGRESSION_PAIRS}")
    observed = np.array([pair[0] for pair in pairs])
    predicted = np.array([pair[1] for pair in pairs])
    report = regression_report(observed, predicted, confidence_level=settings.confidence_level)
    difference = predicted - observed
    bias = float(difference.mean())
    sd = float(difference.std(ddof=1))
    half_width = NormalDist().inv_cdf(0.5 + settings.confidence_level / 2) * sd
    return Agreement(
        observed=tuple(observed.tolist()),
        predicted=tuple(predicted.tolist()),
        report=report,
        band=_regression_band(observed, predicted, settings),
        bland_altman=BlandAltmanLines(mean_difference=bias, lower_limit=bias - half_width,
                                      upper_limit=bias + half_width,
                                      confidence_level=settings.confidence_level),
        difference_sd=sd,
    )


def _osteoporosis_roc_rows(rows: Sequence[Prediction]) -> tuple[list[bool], list[float]]:
    scored = [row for row in rows if row.score is not None]
    return ([row.truth_category == Category.OSTEOPOROSIS.value for row in scored],
            [row.score for row in scored])  # type: ignore[misc]


def _low_bone_mass_roc_rows(rows: Sequence[Prediction]) -> tuple[list[bool], list[float]]:
    scored = [row for row in rows if row.score_low_bone_mass is not None
              and row.truth_category in (Category.NORMAL.value, Category.LOW_BONE_MASS.value)]
    return ([row.truth_category == Category.LOW_BONE_MASS.value for row in scored],
            [row.score_low_bone_mass for row in scored])  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class _RocAnalysis:
    """One ROC analysis the report runs when its score column is present."""

    legend: str
    description: str
    score_column: str
    select: Callable[[Sequence[Prediction]], tuple[list[bool], list[float]]]


_ROC_ANALYSES = {
    "osteoporosis_vs_not": _RocAnalysis(
        legend="osteoporosis vs not",
        description=("score (probability of osteoporosis) against truth osteoporosis, all "
                     "analysed rows with a score"),
        score_column="score",
        select=_osteoporosis_roc_rows,
    ),
    "low_bone_mass_vs_normal": _RocAnalysis(
        legend="low bone mass vs normal",
        description=("score_low_bone_mass against truth low bone mass, analysed rows with truth "
                     "normal or low bone mass and a stage-2 score"),
        score_column="score_low_bone_mass",
        select=_low_bone_mass_roc_rows,
    ),
}


def _roc(name: str, rows: Sequence[Prediction], settings: ValidationSettings) -> RocResult:
    analysis = _ROC_ANALYSES[name]
    truth, scores = analysis.select(rows)
    if not truth:
        raise ValueError("no analysed row has a score")
    auc = roc_auc_with_bootstrap_ci(truth, scores, confidence_level=settings.confidence_level,
                                    n_resamples=settings.n_resamples, seed=settings.seed)
    return RocResult(name=analysis.legend, description=analysis.description, n_rows=len(truth),
                     curve=roc_curve(truth, scores), auc=auc)


def _subgroups(
    rows: Sequence[Prediction],
    key: Callable[[Prediction], str],
    order: Iterable[str],
    labels: tuple[str, ...],
    classify: Callable[[str], str],
    settings: ValidationSettings,
    has_bmd: bool,
    has_score: bool,
) -> dict[str, Subgroup]:
    groups: dict[str, Subgroup] = {}
    for name in order:
        members = [row for row in rows if key(row) == name]
        if not members:
            continue
        groups[name] = Subgroup(
            name=name,
            n=len(members),
            classification=_classification(members, labels, classify, settings),
            regression=_attempt(lambda rows=members: _agreement(rows, settings).report)
            if has_bmd else None,
            auc=_attempt(lambda rows=members: _roc("osteoporosis_vs_not", rows, settings).auc)
            if has_score else None,
        )
    return groups


def _classification(
    rows: Sequence[Prediction],
    labels: tuple[str, ...],
    classify: Callable[[str], str],
    settings: ValidationSettings,
) -> ClassificationReport:
    return classification_report(
        [classify(row.truth_category) for row in rows],  # type: ignore[arg-type]
        [classify(row.predicted_category) for row in rows],  # type: ignore[arg-type]
        labels,
        confidence_level=settings.confidence_level,
    )


def analyse(
    predictions: Sequence[Prediction], settings: ValidationSettings | None = None
) -> Validation:
    """Compute every statistic of the report.

    Parameters
    ----------
    predictions : sequence of Prediction
        Checked rows, e.g. from :func:`~osteonode.evaluate.predictions.read_predictions`;
        excluded rows count in the flow of images only.
    settings : ValidationSettings, optional
        Classes, bootstrap and confidence level; the defaults when None.

    Returns
    -------
    Validation

    Raises
    ------
    ValueError
        If no row is analysed, or the positive class cannot be told apart with the file's
        categories (``not_osteoporosis`` with a positive class other than osteoporosis).
    """
    settings = settings or ValidationSettings()
    predictions = tuple(predictions)
    analysed = [row for row in predictions if row.status is Status.ANALYSED]
    if not analysed:
        raise ValueError(f"no row is analysed ({len(predictions)} excluded); nothing to validate")
    labels, positive, classify = _labels_and_mapping(analysed, settings.positive)
    has_bmd = any(row.truth_bmd is not None and row.predicted_bmd is not None for row in analysed)
    has_score = any(row.score is not None for row in analysed)
    roc = tuple(
        (name, _attempt(lambda name=name: _roc(name, analysed, settings)))
        for name, analysis in _ROC_ANALYSES.items()
        if any(getattr(row, analysis.score_column) is not None for row in analysed)
    )
    subgroup_arguments = (labels, classify, settings, has_bmd, has_score)
    validation = Validation(
        settings=settings,
        labels=labels,
        positive=positive,
        unit="image side" if any(row.side is not None for row in predictions) else "image",
        flow=_flow(predictions),
        characteristics=_characteristics(analysed),
        classification=_classification(analysed, labels, classify, settings),
        agreement=_attempt(lambda: _agreement(analysed, settings)) if has_bmd else None,
        roc=roc,
        subgroups={
            "sex": _subgroups(analysed, lambda row: _SEX_NAMES[row.sex], _SEX_NAMES.values(),
                              *subgroup_arguments),
            "age_band": _subgroups(analysed, lambda row: age_band(row.age).value,
                                   (band.value for band in AgeBand), *subgroup_arguments),
        },
    )
    log.info("validation_computed", analysed=len(analysed), labels=list(labels),
             regression=has_bmd, roc=[name for name, _ in roc])
    return validation


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
td { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f4f7; }
figure { display: inline-block; margin: 0.5rem 1rem 0.5rem 0; vertical-align: top;
         max-width: calc(50% - 1rem); }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; max-width: 620px; }
.meta { color: #555; font-size: 0.9rem; }
.note { color: #8a5a00; }
.flow { display: flex; align-items: flex-start; gap: 1rem; flex-wrap: wrap; }
.box { border: 2px solid #4a6fa5; border-radius: 6px; padding: 0.6rem 1rem; min-width: 11rem; }
.box.excluded { border-color: #b55; }
.box strong { font-size: 1.4rem; display: block; }
.arrow { font-size: 1.8rem; align-self: center; color: #4a6fa5; }
"""

# Marks on <body> whether every image decoded, so a headless browser can check the page.
_IMAGE_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (image) {
    return image.complete && image.naturalWidth > 0;
  });
  document.body.setAttribute("data-images-total", String(images.length));
  document.body.setAttribute("data-images-loaded", String(loaded.length));
});
"""


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _interval(estimate: float | None, lower: float | None, upper: float | None) -> str:
    if estimate is None or (isinstance(estimate, float) and math.isnan(estimate)):
        return "–"
    return f"{_number(estimate)} ({_number(lower)}–{_number(upper)})"


def _proportion(estimate: ProportionEstimate) -> str:
    return _interval(estimate.estimate, estimate.lower, estimate.upper)


def _label(label: object) -> str:
    return _text(str(label).replace("_", " "))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "") -> str:
    """Return an HTML table; header cells are escaped here, body cells must be escaped already."""
    head = "".join(f"<th>{_text(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    caption_html = f"<caption>{_text(caption)}</caption>" if caption else ""
    return (f'<div class="table"><table>{caption_html}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_text(alt)}">'
            f"<figcaption>{_text(caption)}</figcaption></figure>")


def _not_available(reason: str) -> str:
    return f'<p class="note">Not available: {_text(reason)}.</p>'


def _flow_html(validation: Validation) -> str:
    flow = validation.flow
    unit = validation.unit
    reasons = "".join(f"<li>{_text(reason)}: {count}</li>"
                      for reason, count in flow["excluded_by_reason"].items())
    return (
        '<div class="flow">'
        f'<div class="box"><strong>{flow["received"]}</strong>{_text(unit)}s received</div>'
        '<div class="arrow">→</div>'
        f'<div class="box excluded"><strong>{flow["excluded"]}</strong>excluded'
        f"{'<ul>' + reasons + '</ul>' if reasons else ''}</div>"
        '<div class="arrow">→</div>'
        f'<div class="box"><strong>{flow["analysed"]}</strong>{_text(unit)}s analysed</div>'
        "</div>"
    )


def _mean_sd_text(summary: dict[str, Any] | None) -> str:
    if not summary or summary["n"] == 0:
        return "–"
    digits = 3 if summary["mean"] < 10 else 1
    sd = "" if summary["sd"] is None else f" ± {_number(summary['sd'], digits)}"
    return f"{_number(summary['mean'], digits)}{sd} (n={summary['n']})"


def _characteristics_html(validation: Validation) -> str:
    table = validation.characteristics
    columns = list(table)
    total = table["all"]["n"]

    def count(value: int, of: int) -> str:
        return f"{value} ({value / of:.0%})" if of else "0"

    rows = [["n"] + [count(table[name]["n"], total) for name in columns],
            ["age, years, mean ± SD"] + [_mean_sd_text(table[name]["age_years"]) for name in columns]]
    for band in AgeBand:
        if table["all"]["age_band"][band.value]:
            rows.append([f"age {_text(band.value)}"]
                        + [count(table[name]["age_band"][band.value], table[name]["n"])
                           for name in columns])
    for label in table["all"]["truth_category"]:
        rows.append([f"truth: {_label(label)}"]
                    + [count(table[name]["truth_category"][label], table[name]["n"])
                       for name in columns])
    if table["all"]["truth_bmd_g_cm2"]:
        rows.append(["reference BMD, g/cm², mean ± SD"]
                    + [_mean_sd_text(table[name]["truth_bmd_g_cm2"]) for name in columns])
    return _table(["characteristic", *columns], rows,
                  caption=f"Analysed {validation.unit}s by sex")


def _regression_html(validation: Validation) -> str:
    if validation.agreement is None:
        return _not_available("the predictions have no truth_bmd/predicted_bmd pairs")
    if validation.agreement.value is None:
        return _not_available(validation.agreement.reason or "")
    agreement = validation.agreement.value
    report, lines = agreement.report, agreement.bland_altman
    correlation = report.correlation
    level = f"{validation.settings.confidence_level:.0%}"
    table = _table(
        ["statistic", "value"],
        [["n (pairs)", str(report.n)],
         [f"Pearson r ({level} CI)", _interval(correlation.r, correlation.lower, correlation.upper)],
         ["RMSE, g/cm²", _number(report.rmse)],
         ["MAE, g/cm²", _number(report.mae)],
         ["NRMSE (RMSE / range of observed)", _number(report.nrmse)],
         ["regression line",
          f"y = {_number(agreement.band.intercept)} + {_number(agreement.band.slope)} x"],
         ["bias (estimated − observed), g/cm²", _number(lines.mean_difference)],
         [f"{level} limits of agreement, g/cm²",
          f"{_number(lines.lower_limit)} to {_number(lines.upper_limit)}"]],
    )
    r_text = f"r = {_interval(correlation.r, correlation.lower, correlation.upper)}"
    scatter = scatter_figure(agreement.observed, agreement.predicted, agreement.band,
                             r_text=r_text)
    bland_altman = bland_altman_figure(agreement.observed, agreement.predicted, lines)
    return (
        table
        + _figure(scatter, "scatter of observed against estimated BMD",
                  f"Observed (reference) against estimated BMD, n = {report.n}: least-squares "
                  f"line with its {level} bootstrap band "
                  f"({validation.settings.n_resamples} resamples) and the identity line (dashed).")
        + _figure(bland_altman, "Bland-Altman plot of estimated against observed BMD",
                  f"Bland-Altman plot: difference against mean of each pair, bias and {level} "
                  "limits of agreement (bias ± z·SD).")
    )


def _classification_html(validation: Validation) -> str:
    report = validation.classification
    labels = report.labels
    level = f"{report.confidence_level:.0%}"
    matrix = _table(
        ["truth \\ predicted", *(str(label).replace("_", " ") for label in labels), "total"],
        [[_label(label), *(str(count) for count in row), str(sum(row))]
         for label, row in zip(labels, report.confusion_matrix)],
        caption="Confusion matrix (rows = truth, columns = prediction)",
    )
    per_class = _table(
        ["class (one vs rest)", "accuracy", "sensitivity", "specificity", "PPV", "NPV", "F1",
         "Cohen's κ"],
        [[_label(metrics.label), _proportion(metrics.accuracy), _proportion(metrics.sensitivity),
          _proportion(metrics.specificity), _proportion(metrics.ppv), _proportion(metrics.npv),
          _number(metrics.f1), _number(metrics.cohen_kappa)] for metrics in report.per_class],
        caption=f"Per-class metrics with {level} Wilson intervals",
    )
    overall = _table(
        ["overall", "value"],
        [["n", str(report.n)], [f"accuracy ({level} CI)", _proportion(report.accuracy)],
         ["Cohen's κ", _number(report.cohen_kappa)],
         ["linear-weighted κ", _number(report.linear_weighted_kappa)],
         ["quadratic-weighted κ", _number(report.quadratic_weighted_kappa)]],
    )
    figure = _figure(confusion_matrix_figure(report.confusion_matrix, [str(x) for x in labels]),
                     "confusion matrix", "Confusion matrix, rows = truth (reference category).")
    return matrix + figure + per_class + overall


def _roc_html(validation: Validation) -> str:
    if not validation.roc:
        return _not_available("the predictions have no score columns")
    parts: list[str] = []
    series: list[RocSeries] = []
    rows: list[list[str]] = []
    level = f"{validation.settings.confidence_level:.0%}"
    for name, outcome in validation.roc:
        if outcome.value is None:
            parts.append(_not_available(f"{name.replace('_', ' ')}: {outcome.reason}"))
            continue
        result = outcome.value
        series.append(RocSeries(name=result.name, curve=result.curve, auc=result.auc))
        rows.append([_text(result.name), str(result.n_rows), str(result.auc.n_positive),
                     str(result.auc.n_negative),
                     _interval(result.auc.auc, result.auc.lower, result.auc.upper)])
    if series:
        parts.insert(0, _table(["curve", "n", "positive", "negative", f"AUC ({level} CI)"], rows,
                               caption=f"AUC with stratified bootstrap percentile interval "
                                       f"({validation.settings.n_resamples} resamples, seed "
                                       f"{validation.settings.seed})"))
        parts.insert(1, _figure(roc_figure(series), "ROC curves",
                                "ROC curve(s); the dashed diagonal is chance."))
    return "".join(parts)


def _subgroup_table(validation: Validation, kind: str, title: str) -> str:
    groups = validation.subgroups[kind]
    focus = validation.positive or Category.OSTEOPOROSIS.value
    rows = []
    for name, group in groups.items():
        report = group.classification
        focus_metrics = report.for_label(focus)
        regression = group.regression.value if group.regression is not None else None
        auc = group.auc.value if group.auc is not None else None
        row = [_text(name), str(group.n), _proportion(report.accuracy),
               _number(report.cohen_kappa), _number(report.quadratic_weighted_kappa),
               _proportion(focus_metrics.sensitivity), _proportion(focus_metrics.specificity)]
        if group.auc is not None:
            row.append(_interval(auc.auc, auc.lower, auc.upper) if auc else
                       f'<span class="note">{_text(group.auc.reason)}</span>')
        if group.regression is not None:
            row.append(_interval(regression.correlation.r, regression.correlation.lower,
                                 regression.correlation.upper) if regression else
                       f'<span class="note">{_text(group.regression.reason)}</span>')
            row.append(_number(regression.rmse) if regression else "–")
        rows.append(row)
    header = ["subgroup", "n", "accuracy", "Cohen's κ", "quadratic κ",
              f"sensitivity ({focus.replace('_', ' ')})", f"specificity ({focus.replace('_', ' ')})"]
    any_group = next(iter(groups.values()))
    if any_group.auc is not None:
        header.append("AUC (osteoporosis vs not)")
    if any_group.regression is not None:
        header += ["Pearson r", "RMSE, g/cm²"]
    return _table(header, rows, caption=title)


def _subgroups_html(validation: Validation) -> str:
    return (_subgroup_table(validation, "sex", "By sex")
            + _subgroup_table(validation, "age_band", "By age band (years)"))


def render_html(validation: Validation) -> str:
    """Return the report as one self-contained HTML page.

    Parameters
    ----------
    validation : Validation
        The statistics, from :func:`analyse`.

    Returns
    -------
    str
        The page; its figures are embedded PNG data URIs and it loads nothing from elsewhere.
    """
    settings = validation.settings
    analysis = ("three classes (WHO categories)" if validation.positive is None
                else f"{validation.positive.replace('_', ' ')} against the rest")
    source = validation.source.get("path", "(in memory)")
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("flow", "1. Flow of images", _flow_html(validation)),
        ("characteristics", "2. Patient characteristics", _characteristics_html(validation)),
        ("regression", "3. Estimated against observed BMD", _regression_html(validation)),
        ("classification", "4. Classification", _classification_html(validation)),
        ("roc", "5. ROC analysis", _roc_html(validation)),
        ("subgroups", "6. Subgroups", _subgroups_html(validation)),
    ]
    body = "".join(f'<section id="{anchor}"><h2>{_text(title)}</h2>{content}</section>'
                   for anchor, title, content in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>osteonode validation report</title>"
        f"<style>{_STYLE}</style></head>"
        '<body data-images-total="" data-images-loaded="">'
        "<header><h1>osteonode validation report</h1>"
        f'<p class="meta">Predictions: {_text(source)} · analysis: {_text(analysis)} · '
        f"{settings.confidence_level:.0%} intervals · bootstrap {settings.n_resamples} resamples, "
        f"seed {settings.seed} · osteonode {_text(__version__)} · {created}</p></header>"
        f"<main>{body}</main>"
        '<footer class="meta"><p>Every number on this page is also in metrics.json. '
        "Confusion matrices: rows = truth. Intervals: Wilson score for proportions, Fisher z "
        "for Pearson r, stratified bootstrap percentile for AUC.</p></footer>"
        f"<script>{_IMAGE_CHECK_SCRIPT}</script>"
        "</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """The files a validation wrote.

    Attributes
    ----------
    metrics : pathlib.Path
        ``metrics.json``.
    html : pathlib.Path
        ``report.html``.
    """

    metrics: Path
    html: Path


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place, so no half file is left."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def write_report(validation: Validation, out_dir: str | Path) -> ReportFiles:
    """Write ``metrics.json`` and ``report.html`` into ``out_dir``.

    Both are rendered in memory first, so an error leaves no file half written.

    Parameters
    ----------
    validation : Validation
        The statistics, from :func:`analyse`.
    out_dir : str or pathlib.Path
        The folder; created when missing. Existing report files are replaced.

    Returns
    -------
    ReportFiles

    Raises
    ------
    OSError
        If the folder cannot be created or written.
    """
    out = Path(out_dir)
    metrics_text = json.dumps(validation.to_dict(), indent=2, allow_nan=False) + "\n"
    html_text = render_html(validation)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(metrics=out / METRICS_FILE, html=out / HTML_FILE)
    _write_atomically(files.metrics, metrics_text)
    _write_atomically(files.html, html_text)
    log.info("validation_report_written", out=str(out))
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_predictions_file(
    predictions_path: str | Path,
    out_dir: str | Path,
    settings: ValidationSettings | None = None,
) -> ReportFiles:
    """Read a predictions file, compute the statistics and write the report.

    Parameters
    ----------
    predictions_path : str or pathlib.Path
        The predictions CSV (see :mod:`osteonode.evaluate.predictions`).
    out_dir : str or pathlib.Path
        Where ``metrics.json`` and ``report.html`` go.
    settings : ValidationSettings, optional
        The defaults when None.

    Returns
    -------
    ReportFiles

    Raises
    ------
    PredictionsError
        If the file is malformed (nothing is written then).
    ValueError
        If nothing is analysed or the positive class does not fit the file's categories.
    OSError
        If the report cannot be written.
    """
    path = Path(predictions_path)
    validation = replace(analyse(read_predictions(path), settings),
                         source={"path": str(path.resolve()), "sha256": _sha256(path)})
    return write_report(validation, out_dir)
