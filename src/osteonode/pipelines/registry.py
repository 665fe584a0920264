"""The configured pipelines, each loaded from its model folder.

Every ``[pipelines.<name>]`` (the shipped ones, and any a routing rule names) loads the model folder
``[models].dir / <model>``; the card's ``pipeline`` key says which implementation runs it, so a
site adds a model of a known kind with a model folder and a routing rule, and no code. A pipeline
whose model is missing or damaged is *unavailable*, with the reason: routed jobs then stay
``queued`` for it, so nothing the node received is lost while a model is being installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, Self, runtime_checkable

import structlog

from osteonode.config import NodeConfig, PipelineSettings
from osteonode.imaging.pixels import Radiograph
from osteonode.inference import InferencePlan, prepare_model
from osteonode.pipelines.base import FindingSite, Method, Result, Truth
from osteonode.pipelines.chest import ChestPipeline
from osteonode.pipelines.classifier import ClassifierPipeline
from osteonode.pipelines.hip import HipPipeline
from osteonode.pipelines.lumbar import LumbarPipeline
from osteonode.reference import MissingReferenceError, ReferenceData, load_reference
from osteonode.zoo import LoadedModel, ModelError, load_model

__all__ = ["IMPLEMENTATIONS", "LoadedPipelines", "Pipeline", "load_pipelines"]

log = structlog.get_logger(__name__)


@runtime_checkable
class Pipeline(Protocol):
    """What a worker needs from an analysis pipeline."""

    name: str
    """The configured pipeline's name (``[pipelines.<name>]``), written on every result."""
    truth: Truth
    """What a validation cohort must give to judge this method's answers."""
    site: FindingSite
    """Where the method's answer is (the lumbar spine, the chest, the hips)."""
    views: tuple[str, ...]
    """The views it reads (canonical, see :func:`osteonode.header.canonical_view`); () for any."""

    @classmethod
    def from_model(
        cls, model: LoadedModel, settings: PipelineSettings, reference: ReferenceData, *, name: str
    ) -> Self:
        """Build the pipeline from its loaded model, its settings and the reference data."""
        ...

    def run(self, radiograph: Radiograph) -> Result:
        """Analyse one radiograph (raises OutsideIntendedUse only under the skip policy)."""
        ...


@dataclass(frozen=True)
class LoadedPipelines:
    """The pipelines this process can run, how each runs, and why the others cannot."""

    available: Mapping[str, Pipeline]
    unavailable: Mapping[str, str]
    plans: Mapping[str, InferencePlan] = field(default_factory=dict)
    """How each available pipeline runs (``[inference]`` applied to its model)."""


#: The implementation that runs each kind of model card.
IMPLEMENTATIONS: Mapping[Method, type[Pipeline]] = MappingProxyType(
    {
        Method.LUMBAR: LumbarPipeline,
        Method.CHEST: ChestPipeline,
        Method.HIP: HipPipeline,
        Method.CLASSIFIER: ClassifierPipeline,
    }
)


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
        Each pipeline either available, with its inference plan, or unavailable with the reason
        (logged as well).
    """
    reference = load_reference() if reference is None else reference
    available: dict[str, Pipeline] = {}
    unavailable: dict[str, str] = {}
    plans: dict[str, InferencePlan] = {}
    for name, settings in config.pipelines.items():
        directory = config.models.dir / settings.model_name(name)
        if not settings.enabled:
            unavailable[name] = "disabled in the configuration"
        elif not directory.is_dir():
            unavailable[name] = f"model folder {directory} not found"
        else:
            try:
                model = load_model(directory, device=config.models.device)
                implementation = IMPLEMENTATIONS[model.card.pipeline]
                plan = prepare_model(model, config.inference)
                available[name] = implementation.from_model(model, settings, reference, name=name)
            except (ModelError, MissingReferenceError) as error:
                unavailable[name] = str(error)
            else:
                plans[name] = plan
                log.info("pipeline_loaded", pipeline=name, model=model.card.name,
                         version=model.card.version, method=model.card.pipeline.value,
                         **plan.describe())
                continue
        log.warning("pipeline_unavailable", pipeline=name, reason=unavailable[name])
    return LoadedPipelines(available=available, unavailable=unavailable, plans=plans)
