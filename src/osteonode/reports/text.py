"""The words and numbers a reader sees: banner lines, plain-text summary, series descriptions.

One module writes them so the Secondary Capture banner, the summary and any other display say
the same thing in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from osteonode.imaging.overlay import HEAT_FLOOR
from osteonode.pipelines.base import Category, Finding, ModelIdentity, Result

__all__ = [
    "DEFAULT_HEATMAP_MEANING",
    "STATUS_LINE",
    "banner_lines",
    "category_label",
    "finding_text",
    "heatmap_legend",
    "series_description",
    "summary_text",
]

#: Every output says it is an unverified machine result.
STATUS_LINE = "Preliminary, unverified AI result"

#: The legend of a heat-map whose result does not say what it shows.
DEFAULT_HEATMAP_MEANING = "where the model found evidence for its answer (Grad-CAM)"

#: Width (characters) at which the banner's key numbers wrap to a new line.
BANNER_WRAP = 64

#: Longest Series Description (LO).
_LO_MAX = 64
_SHORT_DISCLAIMER = "NOT FOR DIAGNOSTIC USE"

_CATEGORY_LABELS = {
    Category.NORMAL: "Normal",
    Category.LOW_BONE_MASS: "Low bone mass (osteopenia)",
    Category.OSTEOPOROSIS: "Osteoporosis",
    Category.NOT_OSTEOPOROSIS: "Not osteoporosis",
}


def category_label(category: Category) -> str:
    """The reader's name of an answer: a WHO category or "Not osteoporosis"."""
    return _CATEGORY_LABELS[Category(category)]


def _t_score(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _percent(value: float) -> str:
    return f"{100.0 * value:.0f}%"


def _headline(result: Result) -> str:
    if not result.evaluable:
        return f"Not evaluable: {result.reason}"
    assert result.category is not None  # an evaluable Result always has one
    headline = category_label(result.category)
    if result.t_score is not None:
        headline += f", T-score {_t_score(result.t_score)}"
    return headline


def finding_text(finding: Finding) -> str:
    """One finding's key numbers (or why it has none), e.g. ``"L2 0.812 g/cm2 T -2.1"``.

    Parameters
    ----------
    finding : Finding
        The finding.

    Returns
    -------
    str
        Short text naming the finding first.
    """
    if not finding.evaluable:
        return f"{finding.name} not evaluable ({finding.reason})"
    parts = [finding.name]
    if finding.bmd_g_cm2 is not None:
        parts.append(f"{finding.bmd_g_cm2:.3f} g/cm2")
    if finding.t_score is not None:
        parts.append(f"T {_t_score(finding.t_score)}")
    if finding.probability is not None:
        probability = f"p {_percent(finding.probability)}"
        if finding.threshold is not None:
            probability += f" (cut-off {_percent(finding.threshold)})"
        parts.append(probability)
    if finding.category is not None and finding.bmd_g_cm2 is None and finding.t_score is None:
        parts.append(category_label(finding.category).lower())
    if finding.osteoporosis_present is not None and finding.category is None:
        parts.append("osteoporosis" if finding.osteoporosis_present else "no osteoporosis")
    text = " ".join(parts)
    if not finding.included:
        text += " excluded" + (f" ({finding.reason})" if finding.reason else "")
    return text


def _wrap(items: Iterable[str], width: int) -> list[str]:
    """Join items with " | " into lines no longer than `width` where the items allow."""
    lines: list[str] = []
    current = ""
    for item in items:
        candidate = f"{current} | {item}" if current else item
        if current and len(candidate) > width:
            lines.append(current)
            candidate = item
        current = candidate
    if current:
        lines.append(current)
    return lines


def banner_lines(result: Result) -> list[str]:
    """The lines burnt into the Secondary Capture's banner.

    The film's answer first, then each finding's key numbers (BMD and T-score per vertebra,
    probability per stage or side, and why a site is excluded or not evaluable), then the model
    with the preliminary status, and the "not for diagnostic use" line when the model has one.

    Parameters
    ----------
    result : Result
        The analysed radiograph.

    A film that is not evaluable says so alone on the first line, and why on the second, so the
    reason is read once and large.

    Returns
    -------
    list of str
        Banner lines, top to bottom.

    Raises
    ------
    TypeError
        When `result` is not a Result.
    """
    if not isinstance(result, Result):
        raise TypeError(f"result must be a Result, not {type(result).__name__}")
    lines = ["Not evaluable", f"Reason: {result.reason}"] if not result.evaluable else [
        _headline(result)
    ]
    lines += _wrap((_banner_finding(finding, result) for finding in result.findings), BANNER_WRAP)
    if result.evaluable and result.heatmap is None:
        # No colour on the film must not read as "no evidence".
        lines.append("No heat-map computed")
    elif result.heatmap is not None and heatmap_legend(result) is None:
        # Grad-CAM found nothing to show: say so, rather than draw a legend for no colour.
        lines.append(f"Heat-map ({_meaning(result)}): empty on this film")
    lines.append(f"{result.model.name} {result.model.version} - {STATUS_LINE}")
    if result.disclaimer:
        lines.append(result.disclaimer)
    return lines


def _banner_finding(finding: Finding, result: Result) -> str:
    """A finding's banner text; a site refused for the film's own reason does not repeat it."""
    if not finding.evaluable and not result.evaluable and finding.reason == result.reason:
        return f"{finding.name} not evaluable"
    return finding_text(finding)


def _meaning(result: Result) -> str:
    return result.heatmap_meaning or DEFAULT_HEATMAP_MEANING


def heatmap_legend(result: Result) -> str | None:
    """What the Secondary Capture's colours mean, or None when the film shows no colour.

    Parameters
    ----------
    result : Result
        The analysed radiograph.

    Returns
    -------
    str or None
        The result's heat-map meaning (or :data:`DEFAULT_HEATMAP_MEANING`); None when there is
        no heat-map or none of it reaches the colour floor, so no legend promises colours the
        film does not show.
    """
    if not isinstance(result, Result):
        raise TypeError(f"result must be a Result, not {type(result).__name__}")
    if result.heatmap is None or float(np.max(result.heatmap, initial=0.0)) < HEAT_FLOOR:
        return None
    return _meaning(result)


def summary_text(result: Result) -> str:
    """A short plain-text summary of a result, for logs of record, e-mail or a console.

    Parameters
    ----------
    result : Result
        The analysed radiograph.

    Returns
    -------
    str
        Several lines, ending with a newline.

    Raises
    ------
    TypeError
        When `result` is not a Result.
    """
    if not isinstance(result, Result):
        raise TypeError(f"result must be a Result, not {type(result).__name__}")
    lines = [
        f"osteonode {result.pipeline} result ({STATUS_LINE.lower()})",
        f"Result: {_headline(result)}",
    ]
    if result.findings:
        lines.append("Findings:")
        lines += [f"  {finding_text(finding)}" for finding in result.findings]
    if result.notes:
        lines.append("Notes:")
        lines += [f"  {note}" for note in result.notes]
    lines.append(f"Model: {result.model.name} {result.model.version} ({result.model.architecture})")
    if result.disclaimer:
        lines.append(result.disclaimer)
    return "\n".join(lines) + "\n"


def series_description(model: ModelIdentity, kind: str) -> str:
    """The Series Description of an output: model, object kind and any disclaimer, in 64 chars.

    The model's full disclaimer is used when it fits; otherwise the short "NOT FOR DIAGNOSTIC
    USE", and the model name is shortened before the disclaimer ever is.

    Parameters
    ----------
    model : ModelIdentity
        The model behind the result.
    kind : str
        Short name of the object, e.g. ``"SR"`` or ``"SC"``.

    Returns
    -------
    str
        At most 64 characters.
    """
    if not isinstance(model, ModelIdentity):
        raise TypeError(f"model must be a ModelIdentity, not {type(model).__name__}")
    head = f"{model.name} {model.version} {kind}"
    if model.disclaimer is None:
        return head[:_LO_MAX]
    full = f"{head} - {model.disclaimer}"
    if len(full) <= _LO_MAX:
        return full
    tail = f" - {_SHORT_DISCLAIMER}"
    return head[: _LO_MAX - len(tail)] + tail
