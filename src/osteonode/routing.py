"""Decide from the header alone which pipeline analyses an image, or why none does.

The node first skips what no pipeline can read (other modalities, no pixel data, multi-frame or
colour images); then the ordered rules of ``[routing]`` are tried and the first whose every given
criterion matches decides. Vendors fill Body Part Examined and View Position loosely, so values are
compared ignoring case, spaces, hyphens and underscores, and the view is also read from the View
Code Sequence when View Position is empty.

Pixel data is never decoded here: :func:`route_file` reads the header and defers large values.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike

import pydicom
from pydicom.errors import InvalidDicomError

from osteonode.config import PipelineSettings, RoutingRule, RoutingSettings, SkipReason
from osteonode.header import HeaderFacts, normalise, read_header

__all__ = [
    "Decision",
    "Route",
    "Skip",
    "route_dataset",
    "route_file",
    "to_enabled_pipelines",
]

_GREYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})


@dataclass(frozen=True)
class Route:
    """The image goes to each of ``pipelines``; ``rule`` names the rule that decided."""

    pipelines: tuple[str, ...]
    rule: str
    destinations: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.pipelines or not all(isinstance(name, str) and name for name in self.pipelines):
            raise ValueError(f"a route needs one or more pipeline names, got {self.pipelines!r}")


@dataclass(frozen=True)
class Skip:
    """The image is not analysed, for ``reason``; ``rule`` is None for the node's own checks."""

    reason: SkipReason
    detail: str
    rule: str | None = None


Decision = Route | Skip


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Z0-9]+", text.upper())


def _accepts(values: Iterable[str], actual: str) -> bool:
    """Whether a criterion list accepts ``actual`` (an empty list accepts anything)."""
    wanted = {normalise(value) for value in values}
    return not wanted or actual in wanted


def _mentions(descriptions: Iterable[str], keyword: str) -> bool:
    """Whether consecutive whole words of a description spell ``keyword`` (separators ignored).

    ``LSPINE`` thus matches "L-SPINE AP", "L spine" and "LSPINE" but not "XLSPINE".
    """
    target = normalise(re.sub(r"[^A-Za-z0-9]+", "", keyword))
    for description in descriptions:
        words = _words(description)
        for start in range(len(words)):
            joined = ""
            for word in words[start:]:
                joined += word
                if len(joined) >= len(target):
                    break
            if joined == target:
                return True
    return False


def _matches(rule: RoutingRule, facts: HeaderFacts) -> bool:
    return (
        _accepts(rule.modality, facts.modality)
        and (not rule.sop_class or facts.sop_class_uid in rule.sop_class)
        and _accepts(rule.body_part, facts.body_part)
        and _accepts(rule.view, facts.view)
        and _accepts(rule.laterality, facts.laterality)
        and (not rule.keywords or any(_mentions(facts.descriptions, k) for k in rule.keywords))
    )


def _unanalysable(facts: HeaderFacts, accepted_modalities: Iterable[str]) -> Skip | None:
    """The node's own checks, applied before any rule: what no pipeline can read."""
    if not _accepts(accepted_modalities, facts.modality) or not facts.modality:
        return Skip(SkipReason.NOT_RADIOGRAPH, f"modality {facts.modality or '(empty)'!r} is not a radiograph")
    if not facts.has_pixel_data:
        return Skip(SkipReason.NO_PIXEL_DATA, "the object has no pixel data")
    if facts.frames > 1:
        return Skip(SkipReason.MULTI_FRAME, f"multi-frame image ({facts.frames} frames)")
    if facts.samples_per_pixel != 1 or facts.photometric not in _GREYSCALE:
        return Skip(
            SkipReason.COLOUR_IMAGE,
            f"not a greyscale image (photometric interpretation {facts.photometric or '(empty)'!r},"
            f" {facts.samples_per_pixel} samples per pixel)",
        )
    return None


def route_dataset(ds: pydicom.Dataset, settings: RoutingSettings | None = None) -> Decision:
    """Route one image by its header.

    Parameters
    ----------
    ds
        The image's dataset (pixel data need not be loaded).
    settings
        Accepted modalities and ordered rules; the shipped defaults when None.

    Returns
    -------
    Route or Skip
        The pipeline and deciding rule, or the reason the image is not analysed.
    """
    settings = RoutingSettings() if settings is None else settings
    facts = read_header(ds)
    refusal = _unanalysable(facts, settings.accepted_modalities)
    if refusal is not None:
        return refusal
    for rule in settings.rules:
        if not _matches(rule, facts):
            continue
        if rule.skip is not None:
            return Skip(rule.skip, f"skipped by rule {rule.name!r}", rule.name)
        destinations = tuple(rule.destinations) if rule.destinations is not None else None
        return Route(tuple(rule.pipelines), rule.name, destinations)
    return Skip(
        SkipReason.UNKNOWN_BODY_PART,
        f"no routing rule matched (body part {facts.body_part or '(empty)'!r},"
        f" view {facts.view or '(empty)'!r})",
    )


def route_file(path: str | PathLike[str], settings: RoutingSettings | None = None) -> Decision:
    """Route a DICOM file, reading its header only.

    Parameters
    ----------
    path
        The file (a Part 10 file, or a bare dataset as some senders write).
    settings
        As for :func:`route_dataset`.

    Returns
    -------
    Route or Skip
        As :func:`route_dataset`; a file that cannot be parsed is skipped as ``unreadable``.
    """
    try:
        ds = pydicom.dcmread(path, defer_size="4 KB", force=False)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError) as error:
        return Skip(SkipReason.UNREADABLE, f"cannot read the DICOM header: {error}")
    if "SOPClassUID" not in ds:
        return Skip(SkipReason.UNREADABLE, "cannot read the DICOM header: it has no SOP Class UID")
    return route_dataset(ds, settings)


def to_enabled_pipelines(decision: Decision, pipelines: Mapping[str, PipelineSettings]) -> Decision:
    """The decision with the pipelines the configuration disables taken out of its route.

    Parameters
    ----------
    decision
        What the rules decided.
    pipelines
        ``[pipelines.*]`` of the node configuration.

    Returns
    -------
    Route or Skip
        The route to the enabled pipelines; a ``pipeline_disabled`` skip when the rule's pipelines
        are all disabled (or not configured); a skip unchanged.
    """
    if not isinstance(decision, Route):
        return decision
    enabled = tuple(
        name for name in decision.pipelines if name in pipelines and pipelines[name].enabled
    )
    if not enabled:
        return Skip(
            SkipReason.PIPELINE_DISABLED,
            f"rule {decision.rule!r} routes to {', '.join(decision.pipelines)}, disabled in the"
            " configuration",
            decision.rule,
        )
    return dataclasses.replace(decision, pipelines=enabled)
