"""Analysis pipelines and the registry that loads them from the configured model folders.

A pipeline takes one decoded radiograph and returns a plain-data :class:`~.base.Result`; it knows
nothing of networking, the database or DICOM encoding. Each enabled pipeline is loaded from its model
folder (``[models].dir`` / ``[pipelines.<name>].model``, by default ``models/<name>-demo``). A
pipeline whose model is missing or damaged is *unavailable*, with the reason: routed jobs then stay
``queued`` for it, so nothing the node received is lost while a model is being installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self, runtime_checkable

import structlog

from osteonode.config import NodeConfig, PipelineName, PipelineSettings
from osteonode.imaging.pixels import Radiograph
from osteonode.pipelines.base import Result
from osteonode.reference import MissingReferenceError, ReferenceData, load_reference

__all__ = ["LoadedPipelines", "Pipeline", "load_pipelines"]

log = structlog.get_logger(__name__)

#: Where each pipeline's class lives, imported only when the pipeline is enabled.
_PIPELINE_CLASSES: Mapping[PipelineName, str] = {
    PipelineName.LUMBAR: "osteonode.pipelines.lumbar:LumbarPipeline",
    PipelineName.CHEST: "osteonode.pipelines.chest:ChestPipeline",
    PipelineName.HIP: "osteonode.pipelines.hip:HipPipeline",
}


@runtime_checkable
class Pipeline(Protocol):
    """What a worker needs from an analysis pipeline."""

    name: ClassVar[PipelineName]

    @classmethod
    def from_model(cls, model: object, settings: PipelineSettings, reference: ReferenceData) -> Self:
        """Build the pipeline from its loaded model, its settings and the reference data."""
        ...

    def run(self, radiograph: Radiograph) -> Result:
        """Analyse one radiograph (raises OutsideIntendedUse only under the skip policy)."""
        ...


@dataclass(frozen=True)
class LoadedPipelines:
    """The pipelines this process can run, and why the others cannot."""

    available: Mapping[PipelineName, Pipeline]
    unavailable: Mapping[PipelineName, str]


def _pipeline_class(name: PipelineName) -> type[Pipeline] | None:
    module_name, _, class_name = _PIPELINE_CLASSES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        return None
    return getattr(module, class_name)


def load_pipelines(config: NodeConfig, reference: ReferenceData | None = None) -> LoadedPipelines:
    """Load every enabled pipeline whose model folder is usable.

    Parameters
    ----------
    config
        Node configuration (``[pipelines.*]`` and ``[models]``).
    reference
        T-score references and calibrations; ``load_reference()`` when None.

    Returns
    -------
    LoadedPipelines
        Each pipeline either available or unavailable with the reason (logged as well).
    """
    from osteonode.zoo import ModelError, load_model

    reference = load_reference() if reference is None else reference
    available: dict[PipelineName, Pipeline] = {}
    unavailable: dict[PipelineName, str] = {}
    for name in PipelineName:
        settings = config.pipelines.get(name)
        directory = config.models.dir / settings.model_name(name)
        pipeline_class = _pipeline_class(name)
        if not settings.enabled:
            unavailable[name] = "disabled in the configuration"
        elif pipeline_class is None:
            unavailable[name] = "not installed in this version of osteonode"
        elif not directory.is_dir():
            unavailable[name] = f"model folder {directory} not found"
        else:
            try:
                model = load_model(directory, device=config.models.device)
                available[name] = pipeline_class.from_model(model, settings, reference)
            except (ModelError, MissingReferenceError) as error:
                unavailable[name] = str(error)
            else:
                log.info("pipeline_loaded", pipeline=name.value, model=model.card.name,
                         version=model.card.version, device=str(model.device))
                continue
        log.warning("pipeline_unavailable", pipeline=name.value, reason=unavailable[name])
    return LoadedPipelines(available=available, unavailable=unavailable)
