"""The card-driven classifier pipeline: a whole-film screening classifier described by its model card.

A model card with ``pipeline = "classifier"`` and a ``[classifier]`` section
(:class:`~osteonode.zoo.ClassifierSpec`) says everything this pipeline needs: the paper's
preprocessing by name, the per-channel normalisation, one or more two-class stages with their
cut-offs and answers, where the finding is, and which films (views, ages) the method is for. A site
adds such a model (an architecture osteonode has, e.g. Boonrod 2025's ResNet-18 of AP and DarkNet-19 of
lateral lumbar films) with a model folder and a routing rule.

Shape: locate -> measure -> decide -> explain.

- locate: a film of a view the card does not read, too small, or that the transform cannot read
  (no contrast) is not evaluable; otherwise the card's transform at its ``input_size``, then
  ``(x - mean) / std`` per channel.
- measure: the stages in order; each gives the softmax probability of its *positive* answer and the
  Grad-CAM of that class in the same forward pass. A stage at or above its threshold decides; below
  it, the next stage runs (the last stage's ``negative`` answer otherwise).
- decide: one finding per stage (a stage that did not run says so).
- explain: each stage's Grad-CAM of its positive class (the evidence of low bone density),
  resized onto the film; the result carries the deciding stage's.

Intended use: the card's ``preferred_views`` and ``min_age_years``; a film outside them is analysed
with a note, or skipped (:class:`~osteonode.pipelines.base.OutsideIntendedUse`) under the ``skip``
policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import structlog
import torch
from torch import nn

from osteonode.bone import who_applicability
from osteonode.config import IntendedUsePolicy, PipelineSettings
from osteonode.imaging.pixels import Radiograph
from osteonode.imaging.transforms import ClassifierTransform, classifier_input, resize_with_scale
from osteonode.pipelines.base import (
    Category,
    Finding,
    Method,
    ModelIdentity,
    OutsideIntendedUse,
    Result,
    SourceImage,
    Truth,
)
from osteonode.pipelines.inference import InferencePrecision, autocast, probability_and_cam
from osteonode.reference import ReferenceData
from osteonode.zoo import ClassifierSpec, ClassifierStage, LoadedModel, ModelError

__all__ = ["ClassifierAnalysis", "ClassifierPipeline", "StageOutput"]

log = structlog.get_logger(__name__)

#: Index of the stage's positive answer among its two logits (0 = negative, 1 = positive).
POSITIVE_CLASS = 1
#: Below this many pixels on a side a film cannot be read.
MIN_SIDE = 32


@dataclass(frozen=True)
class StageOutput:
    """What one stage measured: its positive answer's probability and Grad-CAM (input size)."""

    stage: ClassifierStage
    probability: float
    cam: np.ndarray


@dataclass(frozen=True, eq=False)
class ClassifierAnalysis:
    """A result and the heat-map of every stage that ran, on the source image, by network role."""

    result: Result
    heatmaps: Mapping[str, np.ndarray]


class ClassifierPipeline:
    """A staged two-class classifier of the whole film, as its model card describes it.

    Parameters
    ----------
    networks
        The network of each stage, by role; each returns (N, 2) logits and has a ``gradcam_layer``
        module and an ``in_chans`` int.
    spec
        The card's ``[classifier]`` section.
    input_size
        (rows, columns) the networks see.
    settings
        ``[pipelines.<name>]``: ``thresholds`` may override a stage's cut-off by network role.
    identity
        The model card's identity; the thresholds in force are added to its parameters.
    device
        Where the networks are.
    name
        The configured pipeline's name, written on every result.
    precision
        float32, or bfloat16 autocast.

    Raises
    ------
    TypeError
        A network that is not a classifier with a Grad-CAM layer, or settings of the wrong type.
    ValueError
        A stage without its network, a threshold for no stage, or normalisation values that do not
        fit the networks' input channels.
    """

    truth: ClassVar[Truth] = Truth.FILM

    def __init__(
        self,
        *,
        networks: Mapping[str, nn.Module],
        spec: ClassifierSpec,
        input_size: tuple[int, int],
        settings: PipelineSettings,
        identity: ModelIdentity,
        device: torch.device,
        name: str,
        precision: InferencePrecision = InferencePrecision.FLOAT32,
    ) -> None:
        if not isinstance(spec, ClassifierSpec):
            raise TypeError(f"spec must be a ClassifierSpec, not {type(spec).__name__}")
        if not isinstance(settings, PipelineSettings):
            raise TypeError(f"settings must be PipelineSettings, not {type(settings).__name__}")
        roles = [stage.network for stage in spec.stages]
        channels = set()
        for role in roles:
            network = networks.get(role)
            if network is None:
                raise ValueError(f"stage {role!r} has no network")
            if not isinstance(network, nn.Module) or not isinstance(
                getattr(network, "gradcam_layer", None), nn.Module
            ):
                raise TypeError(f"network {role!r} must be a torch module with a gradcam_layer")
            if not isinstance(getattr(network, "in_chans", None), int):
                raise TypeError(f"network {role!r} must say its input channels (in_chans)")
            channels.add(network.in_chans)
        if len(channels) != 1:
            raise ValueError(f"the stages' networks take different input channels: {sorted(channels)}")
        self.channels = channels.pop()
        for values, what in ((spec.mean, "mean"), (spec.std, "std")):
            if len(values) not in (1, self.channels):
                raise ValueError(f"{what} needs 1 or {self.channels} values, got {values}")
        if spec.transform is ClassifierTransform.GRAYSCALE_TRUNCATION and input_size[0] != input_size[1]:
            raise ValueError(f"grayscale truncation makes a square input, not {tuple(input_size)}")
        unknown = set(settings.thresholds) - set(roles)
        if unknown:
            raise ValueError(f"thresholds {sorted(unknown)} name no stage; the stages are {roles}")
        self.stages = tuple(
            stage.model_copy(update={"threshold": settings.thresholds.get(stage.network, stage.threshold)})
            for stage in spec.stages
        )
        self.networks = {role: networks[role] for role in roles}
        self.spec = spec
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.settings = settings
        self.identity = dataclasses.replace(
            identity,
            parameters=(
                *identity.parameters,
                *((f"{stage.network}_threshold", f"{stage.threshold:g}") for stage in self.stages),
            ),
        )
        self.device = torch.device(device)
        self.name = name
        self.site = spec.finding_site
        self.views = tuple(spec.views)
        self.precision = InferencePrecision(precision)
        self._mean = torch.tensor(spec.mean, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(spec.std, dtype=torch.float32)[:, None, None]

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        settings: PipelineSettings,
        reference: ReferenceData | None = None,
        *,
        name: str,
        precision: InferencePrecision = InferencePrecision.FLOAT32,
    ) -> Self:
        """Build the pipeline from a loaded classifier model folder.

        ``reference`` is not used: a classifier answers with categories, not T-scores.

        Raises
        ------
        ModelError
            The card is not a classifier card, or it cannot be applied with these settings.
        """
        card = model.card
        if card.pipeline is not Method.CLASSIFIER or card.classifier is None:
            raise ModelError(f"model {card.name!r} is a {card.pipeline.value} model, not a classifier")
        try:
            return cls(
                networks=model.networks,
                spec=card.classifier,
                input_size=card.input_size,
                settings=settings,
                identity=card.identity(),
                device=model.device,
                name=name,
                precision=precision,
            )
        except (TypeError, ValueError) as error:
            raise ModelError(f"model {card.name!r}: {error}") from None

    # -- run --------------------------------------------------------------------------------

    def run(self, radiograph: Radiograph) -> Result:
        """Analyse one film.

        Raises
        ------
        OutsideIntendedUse
            The film is outside the intended use and the policy is ``skip``.
        """
        return self.analyse(radiograph).result

    def analyse(self, radiograph: Radiograph) -> ClassifierAnalysis:
        """Analyse one film and keep every stage's heat-map.

        Raises
        ------
        OutsideIntendedUse
            The film is outside the intended use and the policy is ``skip``.
        """
        issues, notes = self.intended_use(radiograph)
        if issues and self.settings.outside_intended_use is IntendedUsePolicy.SKIP:
            raise OutsideIntendedUse("; ".join(issues))
        notes = (*issues, *notes)
        source = SourceImage.from_radiograph(radiograph)
        located = self.locate(radiograph)
        if isinstance(located, str):
            log.info("classifier_not_evaluable", pipeline=self.name,
                     sop_instance_uid=source.sop_instance_uid, reason=located)
            result = Result(
                pipeline=self.name, site=self.spec.finding_site, source=source,
                model=self.identity, evaluable=False, reason=located, notes=notes,
            )
            return ClassifierAnalysis(result=result, heatmaps={})
        outputs = self.measure(located)
        category, findings = self.decide(outputs)
        heatmaps = {o.stage.network: self.explain(o, radiograph.shape) for o in outputs}
        log.info(
            "classifier_analysed",
            pipeline=self.name,
            sop_instance_uid=source.sop_instance_uid,
            category=category.value,
            **{f"{o.stage.network}_probability": round(o.probability, 4) for o in outputs},
        )
        result = Result(
            pipeline=self.name,
            site=self.spec.finding_site,
            source=source,
            model=self.identity,
            evaluable=True,
            category=category,
            findings=findings,
            notes=notes,
            heatmap=heatmaps[outputs[-1].stage.network],
            heatmap_meaning=outputs[-1].stage.heatmap_meaning,
        )
        return ClassifierAnalysis(result=result, heatmaps=heatmaps)

    def locate(self, radiograph: Radiograph) -> torch.Tensor | str:
        """The network input of the whole film, or why the film cannot be read.

        Returns
        -------
        torch.Tensor or str
            (1, channels, rows, columns) on the pipeline's device, or the not-evaluable reason.
        """
        view = radiograph.facts.view
        if self.spec.views and view and view not in self.spec.views:
            named = view.lower() if view in ("LATERAL", "OBLIQUE") else view
            return f"{named} view; this method reads {'/'.join(self.spec.views)} films"
        if min(radiograph.shape) < MIN_SIDE:
            return f"image of {radiograph.shape[0]} x {radiograph.shape[1]} pixels is too small"
        try:
            image = classifier_input(radiograph.pixels, self.spec.transform, self.input_size)
        except ValueError as error:  # the film cannot be read this way (no contrast): say why
            return str(error)
        inputs = (torch.from_numpy(image)[None].expand(self.channels, -1, -1) - self._mean) / self._std
        return inputs[None].to(self.device)

    def measure(self, inputs: torch.Tensor) -> tuple[StageOutput, ...]:
        """The stages in order, until one reaches its threshold."""
        outputs = []
        for stage in self.stages:
            outputs.append(self.run_stage(stage, inputs))
            if outputs[-1].probability >= stage.threshold:
                break
        return tuple(outputs)

    def run_stage(self, stage: ClassifierStage | str, inputs: torch.Tensor) -> StageOutput:
        """One stage (or its network's role) on a network input from :meth:`locate`."""
        if isinstance(stage, str):
            stage = next(s for s in self.stages if s.network == stage)
        with autocast(self.precision, self.device):
            probability, cam = probability_and_cam(self.networks[stage.network], inputs, POSITIVE_CLASS)
        return StageOutput(stage=stage, probability=probability, cam=cam)

    def decide(self, outputs: Sequence[StageOutput]) -> tuple[Category, tuple[Finding, ...]]:
        """The film's answer and one finding per stage."""
        deciding = outputs[-1]
        positive = deciding.probability >= deciding.stage.threshold
        category = deciding.stage.positive if positive else deciding.stage.negative
        assert category is not None  # only the last stage can answer negative (card validation)
        findings = []
        for index, stage in enumerate(self.stages):
            site = self.spec.finding_site
            if index >= len(outputs):
                findings.append(Finding(
                    stage.finding, site, threshold=stage.threshold, included=False,
                    reason=f"not run: {deciding.stage.finding} decided",
                ))
                continue
            output = outputs[index]
            found = output.probability >= stage.threshold
            answers_osteoporosis = stage.positive is Category.OSTEOPOROSIS
            findings.append(Finding(
                stage.finding,
                site,
                probability=output.probability,
                threshold=stage.threshold,
                osteoporosis_present=found if answers_osteoporosis else None,
                category=None if answers_osteoporosis else category,
            ))
        return category, tuple(findings)

    def explain(self, output: StageOutput, source_shape: tuple[int, int]) -> np.ndarray:
        """The deciding stage's Grad-CAM resized from the network input onto the whole film."""
        resized, _ = resize_with_scale(output.cam, source_shape)
        return np.clip(resized, 0.0, 1.0).astype(np.float32)

    def intended_use(self, radiograph: Radiograph) -> tuple[list[str], list[str]]:
        """Why a film is outside the method's intended use, and notes for the reader.

        Returns
        -------
        (issues, notes)
            ``issues``: a view other than the preferred ones, a patient under the card's minimum
            age or of unknown age (the policy decides whether the film is analysed); ``notes``: an
            unrecorded view and WHO applicability.
        """
        facts = radiograph.facts
        preferred = self.spec.preferred_views
        issues = []
        if preferred and facts.view and facts.view not in preferred:
            issues.append(f"{facts.view} film: the method is intended for {'/'.join(preferred)} films")
        minimum = self.spec.min_age_years
        if minimum is not None:
            age = facts.patient_age_years
            if age is None:
                issues.append(f"patient age unknown: the method is intended for ages {minimum} and over")
            elif age < minimum:
                issues.append(f"patient aged {age}: the method is intended for ages {minimum} and over")
        notes = []
        expected = preferred or self.spec.views
        if expected and not facts.view:
            notes.append(f"view position not recorded: the film was taken to be {expected[0]}")
        # The age notes of who_applicability repeat the issues above; keep its notes on sex only.
        notes += who_applicability(max(minimum or 0, 50), facts.patient_sex)
        return issues, notes
