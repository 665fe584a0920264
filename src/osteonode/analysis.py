"""Analysing one image: decode it once and run its pipeline, turning every refusal into a reason.

The worker and ``osteonode analyze`` share this, so an image gives the same answer (or the same
reason for having none) whether it came over the network or from the command line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from os import PathLike

import structlog

from osteonode.config import LimitsSettings, NodeConfig
from osteonode.imaging.pixels import ImageError, Radiograph, StoredValuesDecoder, load_radiograph
from osteonode.inference import InferencePlan
from osteonode.pipelines.registry import LoadedPipelines, Pipeline, load_pipelines
from osteonode.pipelines.base import OutsideIntendedUse, Result
from osteonode.routing import Decision, Route, route_file, to_enabled_pipelines

__all__ = ["Analysis", "Refusal", "RefusalKind", "analyse_file", "run_pipeline"]

log = structlog.get_logger(__name__)


class RefusalKind(enum.StrEnum):
    """Why a routed image got no result; the value is recorded as the job's skip reason."""

    IMAGE_ERROR = "image_error"
    OUTSIDE_INTENDED_USE = "outside_intended_use"
    PIPELINE_UNAVAILABLE = "pipeline_unavailable"


@dataclass(frozen=True)
class Refusal:
    """A routed image that was not analysed: the kind, and a specific human-readable detail."""

    kind: RefusalKind
    detail: str


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything ``osteonode analyze`` shows about one file."""

    decision: Decision
    radiograph: Radiograph | None = None
    result: Result | None = None
    refusal: Refusal | None = None


def run_pipeline(
    pipeline: Pipeline,
    source: str | PathLike[str],
    *,
    limits: LimitsSettings | None = None,
    decoder: StoredValuesDecoder | None = None,
) -> tuple[Radiograph | None, Result | Refusal]:
    """Decode ``source`` and run ``pipeline`` on it.

    Parameters
    ----------
    pipeline
        The pipeline the image was routed to.
    source
        The DICOM file.
    limits
        File and image size limits checked before decoding (``[limits]`` defaults when None).
    decoder
        Where the pixel data is decoded (the worker's isolated decoder process); in this process
        when None.

    Returns
    -------
    (radiograph, outcome)
        The decoded image (None when it could not be decoded) and the result, or the refusal:
        an image that cannot be decoded, or a film outside the intended use under the skip policy.
    """
    try:
        radiograph = load_radiograph(source, limits=limits, decoder=decoder)
    except ImageError as error:
        return None, Refusal(RefusalKind.IMAGE_ERROR, str(error))
    try:
        return radiograph, pipeline.run(radiograph)
    except OutsideIntendedUse as outside:
        return radiograph, Refusal(RefusalKind.OUTSIDE_INTENDED_USE, outside.reason)


def analyse_file(
    path: str | PathLike[str],
    config: NodeConfig,
    pipelines: LoadedPipelines | None = None,
    *,
    pipeline_name: str | None = None,
) -> Analysis:
    """Route a file and, when it goes to an available pipeline, analyse it.

    Parameters
    ----------
    path
        The DICOM file.
    config
        Node configuration (routing, pipelines, models).
    pipelines
        Already loaded pipelines; loaded from ``config`` when None.
    pipeline_name
        Which of the route's pipelines runs (the first when None); a pipeline the route does not
        name is refused with the reason.

    Returns
    -------
    Analysis
    """
    decision = to_enabled_pipelines(route_file(path, config.routing), config.pipelines)
    if not isinstance(decision, Route):
        return Analysis(decision)
    name = decision.pipelines[0] if pipeline_name is None else pipeline_name
    if name not in decision.pipelines:
        detail = f"routed to {', '.join(decision.pipelines)}, not {name}"
        return Analysis(decision, refusal=Refusal(RefusalKind.PIPELINE_UNAVAILABLE, detail))
    pipelines = load_pipelines(config) if pipelines is None else pipelines
    pipeline = pipelines.available.get(name)
    if pipeline is None:
        reason = pipelines.unavailable.get(name, "not loaded")
        detail = f"pipeline {name} is unavailable: {reason}"
        return Analysis(decision, refusal=Refusal(RefusalKind.PIPELINE_UNAVAILABLE, detail))
    # As in a worker: bfloat16 where [inference] and the model card say so.
    with (pipelines.plans.get(name) or InferencePlan()).autocast():
        radiograph, outcome = run_pipeline(pipeline, path, limits=config.limits)
    if isinstance(outcome, Refusal):
        return Analysis(decision, radiograph, refusal=outcome)
    return Analysis(decision, radiograph, result=outcome)
