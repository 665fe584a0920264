"""The card-driven classifier pipeline: a screening classifier described by its model card.

A model card with ``pipeline = "classifier"`` and a ``[classifier]`` section
(:class:`~osteonode.zoo.ClassifierSpec`) says everything this pipeline needs: where on the film the
method looks (the whole film, or the regions a locator network finds, e.g. each proximal femur),
the paper's preprocessing by name, the per-channel normalisation, one or more two-class stages
with their cut-offs and answers, where the finding is, and which films (views, ages, sexes) the
method is for. A site adds such a model (an architecture osteonode has, e.g. Boonrod 2025's
ResNet-18 of AP and DarkNet-19 of lateral lumbar films) with a model folder and a routing rule.

Shape: locate -> measure -> decide -> explain.

- locate: a film of a view the card does not read, or too small, is not evaluable; otherwise the
  region finder (:mod:`osteonode.pipelines.regions`) gives the regions, and each evaluable one
  becomes a network input: its pixels (mirrored when the finder says so) through the card's
  transform at its ``input_size``, then ``(x - mean) / std`` per channel. A region the transform
  cannot read (no contrast) is not evaluable, with the reason.
- measure: the stages in order, all regions in one batch; each gives the probability of its
  *positive* answer (softmax of two logits, or sigmoid of one) and the Grad-CAM of that answer in
  the same forward pass. A region at or above a stage's threshold is decided; the others go on to
  the next stage (the last stage's ``negative`` answer otherwise).
- decide: one finding per region and stage (a stage that did not run says so); the deciding
  stage's finding carries the region's answer. The film's answer is its worst region's, the
  earlier a stage's answer the worse.
- explain: each stage's Grad-CAM of its positive answer (the evidence of low bone density)
  resized into its region on the film; with several regions each map is weighted by its
  region's probability, so that a confident "no" does not glow like a "yes". The result carries
  the deciding stages' maps.

Intended use: the card's ``preferred_views``, ``min_age_years`` and ``sexes``; a film outside them,
or whose patient's age or sex is not recorded where the card names one, is analysed with a note,
or skipped (:class:`~osteonode.pipelines.base.OutsideIntendedUse`) under the ``skip`` policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import structlog
import torch
from torch import nn

from osteonode.bone import Sex, who_applicability
from osteonode.config import IntendedUsePolicy, PipelineSettings
from osteonode.imaging.pixels import Radiograph
from osteonode.imaging.transforms import ClassifierTransform, classifier_input, resize_with_scale
from osteonode.nets.classifier import ImageClassifier
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
from osteonode.pipelines.inference import probability_and_cam
from osteonode.pipelines.regions import FilmRegion, RegionFinder, region_finder, window_pixels
from osteonode.reference import ReferenceData
from osteonode.zoo import ClassifierSpec, ClassifierStage, LoadedModel, ModelError

__all__ = ["ClassifierAnalysis", "ClassifierPipeline", "Located", "RegionOutcome", "StageOutput"]

log = structlog.get_logger(__name__)

#: Below this many pixels on a side a film cannot be read.
MIN_SIDE = 32
_SEX_WORDS = {Sex.FEMALE: "female", Sex.MALE: "male", Sex.OTHER: "other-sex"}


@dataclass(frozen=True, eq=False)
class StageOutput:
    """What one stage measured on one region: its positive answer's probability and Grad-CAM.

    Compared by identity (it holds an array).
    """

    stage: ClassifierStage
    probability: float
    cam: np.ndarray
    """Grad-CAM on the network input, float32 [0, 1]."""


@dataclass(frozen=True, eq=False)
class Located:
    """A film's regions and the network input of each evaluable one.

    Attributes
    ----------
    regions
        Every region, in reading order, evaluable or with the reason it is not.
    inputs
        (n, channels, rows, columns) on the pipeline's device, one per evaluable region, in order.
    notes
        What the reader should know about how the regions were found.
    """

    regions: tuple[FilmRegion, ...]
    inputs: torch.Tensor
    notes: tuple[str, ...] = ()

    @property
    def evaluable(self) -> tuple[FilmRegion, ...]:
        """The regions that have an input, in the order of :attr:`inputs`."""
        return tuple(region for region in self.regions if region.evaluable)


@dataclass(frozen=True)
class RegionOutcome:
    """The stages that ran on one region, in order; the last one decided."""

    region: FilmRegion
    outputs: tuple[StageOutput, ...]

    @property
    def deciding(self) -> StageOutput:
        """The stage that gave the region's answer."""
        return self.outputs[-1]

    @property
    def category(self) -> Category:
        """The region's answer."""
        output = self.deciding
        if output.probability >= output.stage.threshold:
            return output.stage.positive
        assert output.stage.negative is not None  # only the last stage falls through (card rule)
        return output.stage.negative


@dataclass(frozen=True, eq=False)
class ClassifierAnalysis:
    """A result and the heat-map of every stage that ran, on the source image, by network role."""

    result: Result
    heatmaps: Mapping[str, np.ndarray]


class ClassifierPipeline:
    """A staged two-class classifier of the film or of its regions, as its model card describes it.

    Parameters
    ----------
    networks
        The model's networks by role: each stage's (an
        :class:`~osteonode.nets.classifier.ImageClassifier` with one or two logits), and the
        locator the spec names.
    spec
        The card's ``[classifier]`` section.
    input_size
        (rows, columns) the stages' networks see.
    settings
        ``[pipelines.<name>]``: ``thresholds`` may override a stage's cut-off by its name.
    identity
        The model card's identity; the thresholds in force are added to its parameters.
    device
        Where the networks are.
    name
        The configured pipeline's name, written on every result.

    Raises
    ------
    TypeError
        A stage network that is not an image classifier, a locator of the wrong kind, or settings
        of the wrong type.
    ValueError
        A stage or locator without its network, a threshold for no stage, or normalisation values
        that do not fit the networks' input channels.
    """

    truth: Truth = Truth.FILM
    """The class's default; an instance's comes from its spec's regions."""

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
    ) -> None:
        if not isinstance(spec, ClassifierSpec):
            raise TypeError(f"spec must be a ClassifierSpec, not {type(spec).__name__}")
        if not isinstance(settings, PipelineSettings):
            raise TypeError(f"settings must be PipelineSettings, not {type(settings).__name__}")
        roles = [stage.network for stage in spec.stages]
        keys = [stage.key for stage in spec.stages]
        channels = set()
        for role in roles:
            network = networks.get(role)
            if network is None:
                raise ValueError(f"stage {role!r} has no network")
            if not isinstance(network, ImageClassifier):
                raise TypeError(f"network {role!r} must be an image classifier, not {type(network).__name__}")
            channels.add(network.in_chans)
        if len(channels) != 1:
            raise ValueError(f"the stages' networks take different input channels: {sorted(channels)}")
        self.channels = channels.pop()
        for values, what in ((spec.mean, "mean"), (spec.std, "std")):
            if len(values) not in (1, self.channels):
                raise ValueError(f"{what} needs 1 or {self.channels} values, got {values}")
        if spec.transform is ClassifierTransform.GRAYSCALE_TRUNCATION and input_size[0] != input_size[1]:
            raise ValueError(f"grayscale truncation makes a square input, not {tuple(input_size)}")
        unknown = set(settings.thresholds) - set(keys)
        if unknown:
            raise ValueError(f"thresholds {sorted(unknown)} name no stage; the stages are {keys}")
        self.stages = tuple(
            stage.model_copy(update={"threshold": settings.thresholds.get(stage.key, stage.threshold)})
            for stage in spec.stages
        )
        self.networks = {role: networks[role] for role in roles}
        self.regions: RegionFinder = region_finder(
            spec.regions,
            networks,
            locator=spec.locator,
            locator_input_size=spec.locator_input_size,
            device=device,
        )
        self.spec = spec
        self.truth = spec.regions.truth
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.settings = settings
        self.identity = dataclasses.replace(
            identity,
            parameters=(
                *identity.parameters,
                *((f"{stage.key}_threshold", f"{stage.threshold:g}") for stage in self.stages),
            ),
        )
        self.device = torch.device(device)
        self.name = name
        self.site = spec.finding_site
        self.views = tuple(spec.views)
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
        return cls.from_spec(model, card.classifier, settings, name=name)

    @classmethod
    def from_spec(
        cls,
        model: LoadedModel,
        spec: ClassifierSpec,
        settings: PipelineSettings,
        *,
        name: str,
    ) -> Self:
        """Build the pipeline from a loaded model folder run as ``spec`` describes.

        Raises
        ------
        ModelError
            The spec cannot be applied to the model's networks or with these settings.
        """
        try:
            return cls(
                networks=model.networks,
                spec=spec,
                input_size=model.card.input_size,
                settings=settings,
                identity=model.card.identity(),
                device=model.device,
                name=name,
            )
        except (TypeError, ValueError) as error:
            raise ModelError(f"model {model.card.name!r}: {error}") from None

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
        source = SourceImage.from_radiograph(radiograph)
        located = self.locate(radiograph)
        notes = (*issues, *notes, *located.notes)
        outcomes = self.measure(located)
        findings = self.decide(located.regions, outcomes, radiograph.shape)
        if not outcomes:
            reason = self._not_evaluable_reason(located.regions)
            log.info("classifier_not_evaluable", pipeline=self.name,
                     sop_instance_uid=source.sop_instance_uid, reason=reason)
            result = Result(
                pipeline=self.name, site=self.site, source=source, model=self.identity,
                evaluable=False, reason=reason, findings=findings, notes=notes,
            )
            return ClassifierAnalysis(result=result, heatmaps={})
        worst = min(outcomes, key=lambda outcome: self._severity(outcome.category))
        ran: dict[str, list[tuple[FilmRegion, StageOutput]]] = {}
        for outcome in outcomes:
            for output in outcome.outputs:
                ran.setdefault(output.stage.network, []).append((outcome.region, output))
        heatmaps = {role: self.explain(maps, radiograph.shape) for role, maps in ran.items()}
        # The film's map shows each region's deciding stage: the stage's own map when that stage
        # decided every region (one resize of a full-size film fewer on the hot path).
        deciding = [(outcome.region, outcome.deciding) for outcome in outcomes]
        role = worst.deciding.stage.network
        same = [output for _, output in ran[role]] == [output for _, output in deciding]
        log.info(
            "classifier_analysed",
            pipeline=self.name,
            sop_instance_uid=source.sop_instance_uid,
            category=worst.category.value,
            probabilities={
                o.region.name or "film": {out.stage.network: round(out.probability, 4) for out in o.outputs}
                for o in outcomes
            },
        )
        meaning = worst.deciding.stage.heatmap_meaning
        result = Result(
            pipeline=self.name,
            site=self.site,
            source=source,
            model=self.identity,
            evaluable=True,
            category=worst.category,
            findings=findings,
            notes=notes,
            heatmap=heatmaps[role] if same else self.explain(deciding, radiograph.shape),
            heatmap_meaning=meaning if worst.region.box is None else f"{meaning}, weighted by"
            " the probability of each outlined region",
        )
        return ClassifierAnalysis(result=result, heatmaps=heatmaps)

    def locate(self, radiograph: Radiograph) -> Located:
        """The film's regions and the network input of each evaluable one.

        A film of a view the card does not read, or too small, is one region that is not
        evaluable.
        """
        view = radiograph.facts.view
        reason = None
        if self.spec.views and view and view not in self.spec.views:
            named = view.lower() if view in ("LATERAL", "OBLIQUE") else view
            reason = f"{named} view; this method reads {'/'.join(self.spec.views)} films"
        elif min(radiograph.shape) < MIN_SIDE:
            reason = f"image of {radiograph.shape[0]} x {radiograph.shape[1]} pixels is too small"
        if reason is not None:
            return Located(regions=(FilmRegion(reason=reason),), inputs=self._no_inputs())
        found = self.regions.find(radiograph)
        regions, inputs = [], []
        for region in found.regions:
            if region.evaluable:
                try:
                    inputs.append(self._region_input(radiograph, region))
                except ValueError as error:  # the region cannot be read this way: say why
                    region = dataclasses.replace(region, reason=str(error))
            regions.append(region)
        stacked = torch.stack(inputs).to(self.device) if inputs else self._no_inputs()
        return Located(regions=tuple(regions), inputs=stacked, notes=found.notes)

    def measure(self, located: Located) -> tuple[RegionOutcome, ...]:
        """The stages in order on every evaluable region, until each reaches a threshold."""
        pending = list(range(len(located.evaluable)))
        outputs: list[list[StageOutput]] = [[] for _ in pending]
        for stage in self.stages:
            if not pending:
                break
            for index, output in zip(pending, self.run_stage(stage, located.inputs[pending]), strict=True):
                outputs[index].append(output)
            pending = [index for index in pending if outputs[index][-1].probability < stage.threshold]
        return tuple(
            RegionOutcome(region=region, outputs=tuple(ran))
            for region, ran in zip(located.evaluable, outputs, strict=True)
        )

    def run_stage(self, stage: ClassifierStage | str, inputs: torch.Tensor) -> tuple[StageOutput, ...]:
        """One stage (or its name) on network inputs from :meth:`locate`, one per input."""
        if isinstance(stage, str):
            stage = next(s for s in self.stages if s.key == stage)
        probabilities, cams = probability_and_cam(self.networks[stage.network], inputs)
        return tuple(
            StageOutput(stage=stage, probability=float(p), cam=cam)
            for p, cam in zip(probabilities, cams, strict=True)
        )

    def decide(
        self,
        regions: Sequence[FilmRegion],
        outcomes: Sequence[RegionOutcome],
        shape: tuple[int, int],
    ) -> tuple[Finding, ...]:
        """One finding per region and stage, in reading order.

        The deciding stage's finding carries the region's answer; an earlier stage that passed
        the region on says only whether its finding is present; a later stage says it did not run.
        """
        measured = iter(outcomes)
        findings = []
        for region in regions:
            outcome = next(measured) if region.evaluable else None
            if outcome is None and region.name is None:
                continue  # the film itself is not evaluable: the result says why
            for index, stage in enumerate(self.stages):
                common = {
                    "laterality": region.laterality,
                    "region": region.outline(shape),
                    "threshold": stage.threshold,
                }
                name = self._finding_name(region, stage)
                if outcome is None:
                    findings.append(Finding(
                        name, self.site, evaluable=False, included=False,
                        reason=region.reason or "not evaluable", **common,
                    ))
                elif index >= len(outcome.outputs):
                    findings.append(Finding(
                        name, self.site, included=False,
                        reason=f"not run: {outcome.deciding.stage.finding} decided", **common,
                    ))
                else:
                    output = outcome.outputs[index]
                    deciding = output is outcome.deciding
                    answers_osteoporosis = stage.positive is Category.OSTEOPOROSIS
                    findings.append(Finding(
                        name,
                        self.site,
                        probability=output.probability,
                        osteoporosis_present=(
                            output.probability >= stage.threshold if answers_osteoporosis else None
                        ),
                        category=outcome.category if deciding else None,
                        **common,
                    ))
        return tuple(findings)

    def explain(
        self, maps: Sequence[tuple[FilmRegion, StageOutput]], shape: tuple[int, int]
    ) -> np.ndarray:
        """Stage Grad-CAMs resized into their regions on a film of ``shape``.

        A located region's map is weighted by its probability, so that regions compare; where
        regions overlap the stronger evidence shows.
        """
        heatmap = np.zeros(shape, dtype=np.float32)
        for region, output in maps:
            window = region.window(shape)
            assert window is not None  # an evaluable region lies on the film
            cam = output.cam[:, ::-1] if region.mirrored else output.cam
            pasted, _ = resize_with_scale(np.ascontiguousarray(cam), window.shape)
            if region.box is not None:
                pasted = pasted * output.probability
            target = heatmap[window.row0 : window.row1, window.column0 : window.column1]
            np.maximum(target, np.clip(pasted, 0.0, 1.0), out=target)
        return heatmap

    def intended_use(self, radiograph: Radiograph) -> tuple[list[str], list[str]]:
        """Why a film is outside the method's intended use, and notes for the reader.

        Returns
        -------
        (issues, notes)
            ``issues``: a view other than the preferred ones, a patient under the card's minimum
            age or of another sex than the card's, or whose age or sex is not recorded where the
            card names one (the policy decides whether the film is analysed); ``notes``: an
            unrecorded view and WHO applicability.
        """
        facts = radiograph.facts
        spec = self.spec
        population = spec.population or self._population()
        preferred = spec.preferred_views
        issues = []
        if preferred and facts.view and facts.view not in preferred:
            issues.append(f"{facts.view} film: the method is intended for {'/'.join(preferred)} films")
        if spec.sexes:
            sex = facts.patient_sex
            if sex is None or sex is Sex.UNKNOWN:
                issues.append(f"patient sex not recorded: the method is intended for {population}")
            elif sex not in spec.sexes:
                issues.append(f"{_SEX_WORDS[sex]} patient: the method is intended for {population}")
        minimum = spec.min_age_years
        if minimum is not None:
            age = facts.patient_age_years
            if age is None:
                issues.append(f"patient age unknown: the method is intended for {population}")
            elif age < minimum:
                issues.append(f"patient aged {age}: the method is intended for {population}")
        notes = []
        expected = preferred or spec.views
        if expected and not facts.view:
            notes.append(f"view position not recorded: the film was taken to be {expected[0]}")
        # The age notes of who_applicability repeat the issues above; keep its notes on sex only.
        notes += who_applicability(max(minimum or 0, 50), facts.patient_sex)
        return issues, notes

    # -- helpers ----------------------------------------------------------------------------

    def _region_input(self, radiograph: Radiograph, region: FilmRegion) -> torch.Tensor:
        """(channels, rows, columns) network input of one region (CPU)."""
        window = region.window(radiograph.shape)
        if window is None:
            raise ValueError("the region is not on the film")
        pixels = window_pixels(radiograph.pixels, window, region.mirrored)
        image = torch.from_numpy(classifier_input(pixels, self.spec.transform, self.input_size))
        return (image[None].expand(self.channels, -1, -1) - self._mean) / self._std

    def _no_inputs(self) -> torch.Tensor:
        return torch.empty((0, self.channels, *self.input_size), device=self.device)

    def _finding_name(self, region: FilmRegion, stage: ClassifierStage) -> str:
        """The stage's finding for the whole film; the region's name, per stage when several."""
        if region.name is None:
            return stage.finding
        return region.name if len(self.stages) == 1 else f"{region.name}: {stage.finding}"

    def _severity(self, category: Category) -> int:
        """Rank of an answer, 0 the worst: the earlier a stage answers, the worse its answer."""
        answers = [stage.positive for stage in self.stages] + [self.stages[-1].negative]
        return answers.index(category)

    def _not_evaluable_reason(self, regions: Sequence[FilmRegion]) -> str:
        if len(regions) == 1 and regions[0].name is None:
            return regions[0].reason or "not evaluable"
        reasons = "; ".join(f"{(region.name or 'film').lower()}: {region.reason}" for region in regions)
        return f"no evaluable {self.site.value.replace('_', ' ')} ({reasons})"

    def _population(self) -> str:
        """Who the method is for, from the card's sexes and minimum age."""
        who = " or ".join({Sex.FEMALE: "women", Sex.MALE: "men", Sex.OTHER: "patients of other sex"}[sex]
                          for sex in self.spec.sexes) or "patients"
        minimum = self.spec.min_age_years
        return f"{who} aged {minimum} or over" if minimum is not None else who
