"""Chest pipeline: two-stage low bone mass screening on a PA chest film (METHODS.md section 2).

Park et al. 2025 (OsPenScreen): stage 1 classifies osteoporosis vs not; stage 2, run only on films
stage 1 calls not osteoporotic, classifies low bone mass vs normal. Each stage is a two-class
ConvNeXt with softmax confidence; the final answer is one of osteoporosis, low bone mass, normal,
with both stage probabilities.

Shape: locate -> measure -> decide -> explain.

- locate: the paper's grayscale truncation of the whole film (clip to the range of the central
  50% box, rescale to 0-255, resize to the model card's ``input_size``), then the model card's
  ``normalisation``; a film whose central box has no contrast, or a lateral film, is not evaluable.
- measure: stage 1 always, stage 2 when stage 1 is below its threshold. Each stage runs once, with
  Grad-CAM of its finding's class (osteoporosis, low bone mass) at the network's last stage taken
  in the same forward pass, so a stage costs one forward pass and a backward pass through the head.
- decide: thresholds from ``[pipelines.chest]``; two findings ("Stage 1: osteoporosis",
  "Stage 2: low bone mass"), the second saying so when it did not run.
- explain: each stage's map resized back onto the full film. ``Result.heatmap`` is the map of the
  stage that gave the answer (stage 1 for osteoporosis, else stage 2); :meth:`ChestPipeline.analyse`
  returns every stage's map.

Intended use: PA films of patients aged 50 or over. An AP film, a patient under 50 or an unknown age
is analysed with a note, or skipped (:class:`~osteonode.pipelines.base.OutsideIntendedUse`) under
the ``skip`` policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import structlog
import torch
from torch import nn

from osteonode.bone import Category, who_applicability
from osteonode.config import IntendedUsePolicy, PipelineSettings
from osteonode.imaging.pixels import Radiograph
from osteonode.imaging.transforms import (
    TRUNCATION_OUTPUT_MAX,
    central_half_bounds,
    grayscale_truncation,
    resize_with_scale,
)
from osteonode.pipelines.base import (
    Finding,
    FindingSite,
    Method,
    ModelIdentity,
    OutsideIntendedUse,
    Result,
    SourceImage,
    Truth,
)
from osteonode.pipelines.inference import probability_and_cam
from osteonode.reference import ReferenceData
from osteonode.zoo import LoadedModel, ModelCard, ModelError

__all__ = [
    "INTENDED_MIN_AGE_YEARS",
    "ChestAnalysis",
    "ChestPipeline",
    "ChestPreprocessing",
    "InferencePrecision",
    "Stage",
    "StageOutput",
    "final_category",
    "intended_use",
]

log = structlog.get_logger(__name__)

#: The paper's intended population: patients aged 50 or over.
INTENDED_MIN_AGE_YEARS = 50
#: Views the method cannot read: lateral films and the decubitus positions (header views).
LATERAL_VIEWS = frozenset({"LATERAL", "LLD", "RLD"})
#: Index of the finding's class in each stage's two logits (0 = absent, 1 = present).
POSITIVE_CLASS = 1
#: Each stage's cut-off unless ``[pipelines.<name>].thresholds`` sets it (the paper's 0.5).
DEFAULT_THRESHOLD = 0.5


class Stage(enum.StrEnum):
    """The two classifier stages; the value is the network's role in the model card."""

    OSTEOPOROSIS = "stage1"
    LOW_BONE_MASS = "stage2"

    @property
    def finding_name(self) -> str:
        """The finding's tracking identifier in results and reports."""
        return _FINDING_NAMES[self]


_FINDING_NAMES = {
    Stage.OSTEOPOROSIS: "Stage 1: osteoporosis",
    Stage.LOW_BONE_MASS: "Stage 2: low bone mass",
}
#: What the film's heat-map shows when a stage decides: the Grad-CAM of that stage's finding.
HEATMAP_MEANINGS = {
    Stage.OSTEOPOROSIS: "evidence of osteoporosis (Grad-CAM of stage 1)",
    Stage.LOW_BONE_MASS: "evidence of low bone mass (Grad-CAM of stage 2)",
}


class InferencePrecision(enum.StrEnum):
    """Arithmetic of the forward pass: float32, or bfloat16 autocast (weights stay float32)."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


# --- preprocessing --------------------------------------------------------------------------

_FLOATS = r"[0-9]*\.?[0-9]+(?:\s+[0-9]*\.?[0-9]+)*"
#: The model card's ``normalisation`` for the chest pipeline, applied after grayscale truncation
#: to 0-255: ``"x/255, mean M, std S"``, with one value or one per input channel (space-separated).
NORMALISATION_PATTERN = re.compile(
    rf"^\s*x\s*/\s*255\s*,\s*mean\s+({_FLOATS})\s*,\s*std\s+({_FLOATS})\s*$"
)


@dataclass(frozen=True)
class ChestPreprocessing:
    """Grayscale truncation to a square input, then ``(x / 255 - mean) / std`` per channel.

    Parameters
    ----------
    size
        Side of the square network input (512 in the paper).
    channels
        Input channels of the networks; the grey image is repeated into each.
    mean, std
        One value, or one per channel, applied after scaling to [0, 1].

    Raises
    ------
    ValueError
        For a size below 32, or mean/std of the wrong length or a non-positive std.
    """

    size: int
    channels: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 32:
            raise ValueError(f"input size must be an int of at least 32, got {self.size!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values, got {values!r}")
        if any(value <= 0 for value in self.std):
            raise ValueError(f"std values must be positive, got {self.std!r}")

    @classmethod
    def from_card(cls, card: ModelCard, channels: int) -> Self:
        """Read the input size and normalisation from a chest model card.

        Raises
        ------
        ModelError
            A non-square input size, or a normalisation this pipeline cannot apply.
        """
        rows, columns = card.input_size
        if rows != columns:
            raise ModelError(
                f"model {card.name!r}: the chest input must be square, got {card.input_size}"
            )
        match = NORMALISATION_PATTERN.match(card.normalisation)
        if match is None:
            raise ModelError(
                f"model {card.name!r}: normalisation {card.normalisation!r} is not of the form"
                " 'x/255, mean M, std S' (one value or one per channel)"
            )
        try:
            return cls(
                size=rows,
                channels=channels,
                mean=tuple(float(v) for v in match.group(1).split()),
                std=tuple(float(v) for v in match.group(2).split()),
            )
        except ValueError as error:
            raise ModelError(f"model {card.name!r}: {error}") from None

    def describe(self) -> str:
        """The model card's ``normalisation`` text for these values."""
        mean = " ".join(f"{v:g}" for v in self.mean)
        std = " ".join(f"{v:g}" for v in self.std)
        return f"x/255, mean {mean}, std {std}"

    def truncate(self, pixels: np.ndarray) -> np.ndarray:
        """Grayscale truncation of a film to ``size x size``, float32 in [0, 255]."""
        return grayscale_truncation(pixels, size=self.size).astype(np.float32)

    def normalise(self, truncated: torch.Tensor) -> torch.Tensor:
        """Network input from truncated images.

        Parameters
        ----------
        truncated
            (N, H, W) images in [0, 255].

        Returns
        -------
        torch.Tensor
            (N, channels, H, W) float32.
        """
        if truncated.ndim != 3:
            raise ValueError(f"expected (N, H, W) images, got shape {tuple(truncated.shape)}")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=truncated.device)
        std = torch.tensor(self.std, dtype=torch.float32, device=truncated.device)
        scaled = (truncated.float() / TRUNCATION_OUTPUT_MAX)[:, None].expand(
            -1, self.channels, -1, -1
        )
        return (scaled - mean[None, :, None, None]) / std[None, :, None, None]

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        """The (1, channels, size, size) network input of one film."""
        return self.normalise(torch.from_numpy(self.truncate(pixels))[None])


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageOutput:
    """What one stage measured.

    Attributes
    ----------
    stage
        Which stage.
    probability
        Softmax probability of the stage's finding (osteoporosis, low bone mass).
    cam
        Grad-CAM of the finding's class at the network input's size, float32 in [0, 1].
    """

    stage: Stage
    probability: float
    cam: np.ndarray


@dataclass(frozen=True, eq=False)
class ChestAnalysis:
    """A chest result and every stage's heat-map on the source image.

    Attributes
    ----------
    result
        The film's result (its heat-map is the deciding stage's).
    heatmaps
        Stage -> Grad-CAM map at the source image's size, for each stage that ran.
    """

    result: Result
    heatmaps: Mapping[Stage, np.ndarray]


# --- the pipeline ---------------------------------------------------------------------------


def final_category(
    stage1_probability: float,
    stage2_probability: float | None,
    stage1_threshold: float,
    stage2_threshold: float,
) -> Category:
    """The two-stage decision: osteoporosis at or above stage 1's threshold, else stage 2 decides.

    Parameters
    ----------
    stage1_probability
        Probability of osteoporosis.
    stage2_probability
        Probability of low bone mass; only read (and required) below stage 1's threshold.
    stage1_threshold, stage2_threshold
        The stages' thresholds.

    Raises
    ------
    ValueError
        Stage 2's probability is missing where it decides.
    """
    if stage1_probability >= stage1_threshold:
        return Category.OSTEOPOROSIS
    if stage2_probability is None:
        raise ValueError("stage 2 decides below stage 1's threshold and needs its probability")
    return (
        Category.LOW_BONE_MASS if stage2_probability >= stage2_threshold else Category.NORMAL
    )


class ChestPipeline:
    """Two-stage ConvNeXt screening of PA chest films.

    Parameters
    ----------
    networks
        A two-class classifier per :class:`Stage` (ConvNeXt with ``gradcam_layer``), eval mode.
    preprocessing
        Input size and normalisation, from the model card.
    settings
        Stage thresholds and the intended-use policy.
    identity
        The model card's identity; the thresholds are added to its parameters.
    device
        Where the networks are.
    precision
        float32, or bfloat16 autocast.

    Raises
    ------
    TypeError, ValueError
        A network missing or without a Grad-CAM layer, or an argument of the wrong type.
    """

    truth: ClassVar[Truth] = Truth.FILM

    def __init__(
        self,
        *,
        networks: Mapping[Stage, nn.Module],
        preprocessing: ChestPreprocessing,
        settings: PipelineSettings,
        identity: ModelIdentity,
        device: torch.device,
        precision: InferencePrecision = InferencePrecision.FLOAT32,
        name: str = Method.CHEST.value,
    ) -> None:
        if set(networks) != set(Stage):
            raise ValueError(f"the chest pipeline needs networks {[s.value for s in Stage]}")
        for stage, network in networks.items():
            if not isinstance(network, nn.Module) or not isinstance(
                getattr(network, "gradcam_layer", None), nn.Module
            ):
                raise TypeError(
                    f"network {stage.value} must be a torch module with a gradcam_layer"
                )
        if not isinstance(preprocessing, ChestPreprocessing):
            raise TypeError("preprocessing must be a ChestPreprocessing")
        if not isinstance(settings, PipelineSettings):
            raise TypeError("settings must be PipelineSettings")
        unknown = set(settings.thresholds) - {stage.value for stage in Stage}
        if unknown:
            raise ValueError(
                f"unknown chest thresholds {sorted(unknown)}; the stages are 'stage1' and 'stage2'"
            )
        self.name = name
        self.networks = dict(networks)
        self.preprocessing = preprocessing
        self.settings = settings
        self.thresholds = {
            stage: settings.thresholds.get(stage.value, DEFAULT_THRESHOLD) for stage in Stage
        }
        self.identity = dataclasses.replace(
            identity,
            parameters=(
                *identity.parameters,
                *((f"{stage.value}_threshold", f"{self.thresholds[stage]:g}") for stage in Stage),
            ),
        )
        self.device = torch.device(device)
        self.precision = InferencePrecision(precision)

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        settings: PipelineSettings,
        reference: ReferenceData | None = None,
        *,
        precision: InferencePrecision = InferencePrecision.FLOAT32,
        name: str = Method.CHEST.value,
    ) -> Self:
        """Build the pipeline from a loaded chest model folder.

        Parameters
        ----------
        model
            The loaded model: networks ``stage1`` and ``stage2``, input size and normalisation.
        settings
            ``[pipelines.<name>]``: ``thresholds`` may set ``stage1`` and ``stage2``.
        reference
            Unused: the chest classifier gives categories, not T-scores.
        precision
            float32 or bfloat16 autocast.
        name
            The configured pipeline's name, written on every result.

        Raises
        ------
        ModelError
            The model is not a chest model or its card cannot be applied.
        """
        card = model.card
        if card.pipeline is not Method.CHEST:
            raise ModelError(
                f"model {card.name!r} is a {card.pipeline.value} model, not a chest model"
            )
        networks = {stage: model[stage.value] for stage in Stage}
        channels = {int(network.config.in_chans) for network in networks.values()}
        if len(channels) != 1:
            raise ModelError(f"model {card.name!r}: the two stages take different input channels")
        preprocessing = ChestPreprocessing.from_card(card, channels.pop())
        try:
            return cls(
                networks=networks,
                preprocessing=preprocessing,
                settings=settings,
                identity=card.identity(),
                device=model.device,
                precision=precision,
                name=name,
            )
        except ValueError as error:
            raise ModelError(f"model {card.name!r}: {error}") from None

    # -- run --------------------------------------------------------------------------------

    def run(self, radiograph: Radiograph) -> Result:
        """Analyse one chest film.

        Raises
        ------
        OutsideIntendedUse
            The film is outside the intended use and the policy is ``skip``.
        """
        return self.analyse(radiograph).result

    def analyse(self, radiograph: Radiograph) -> ChestAnalysis:
        """Analyse one chest film and keep every stage's heat-map.

        Raises
        ------
        OutsideIntendedUse
            The film is outside the intended use and the policy is ``skip``.
        """
        issues, notes = intended_use(radiograph)
        if issues and self.settings.outside_intended_use is IntendedUsePolicy.SKIP:
            raise OutsideIntendedUse("; ".join(issues))
        notes = (*issues, *notes)
        source = SourceImage.from_radiograph(radiograph)
        located = self.locate(radiograph)
        if isinstance(located, str):
            log.info(
                "chest_not_evaluable", sop_instance_uid=source.sop_instance_uid, reason=located
            )
            result = Result(
                pipeline=self.name,
                site=FindingSite.CHEST,
                source=source,
                model=self.identity,
                evaluable=False,
                reason=located,
                notes=notes,
            )
            return ChestAnalysis(result=result, heatmaps={})
        outputs = self.measure(located)
        category, findings = self.decide(outputs)
        heatmaps = self.explain(outputs, radiograph.shape)
        deciding = outputs[-1].stage
        log.info(
            "chest_analysed",
            sop_instance_uid=source.sop_instance_uid,
            category=category.value,
            **{
                f"{output.stage.value}_probability": round(output.probability, 4)
                for output in outputs
            },
        )
        result = Result(
            pipeline=self.name,
            site=FindingSite.CHEST,
            source=source,
            model=self.identity,
            evaluable=True,
            category=category,
            findings=findings,
            notes=notes,
            heatmap=heatmaps[deciding],
            heatmap_meaning=HEATMAP_MEANINGS[deciding],
        )
        return ChestAnalysis(result=result, heatmaps=heatmaps)

    def locate(self, radiograph: Radiograph) -> torch.Tensor | str:
        """The network input of the whole film, or why the film cannot be read.

        Returns
        -------
        torch.Tensor or str
            (1, channels, size, size) on the pipeline's device, or the not-evaluable reason.
        """
        view = radiograph.facts.view
        if view in LATERAL_VIEWS:
            return f"lateral view ({view}); the method reads PA chest films"
        if min(radiograph.shape) < 32:
            return f"image of {radiograph.shape[0]} x {radiograph.shape[1]} pixels is too small"
        rows, columns = central_half_bounds(radiograph.shape)
        centre = radiograph.pixels[rows, columns]
        if float(centre.max()) <= float(centre.min()):
            return "no contrast in the central half of the image (grayscale truncation impossible)"
        return self.preprocessing.prepare(radiograph.pixels).to(self.device)

    def measure(self, inputs: torch.Tensor) -> tuple[StageOutput, ...]:
        """Stage 1, then stage 2 when stage 1 is below its threshold."""
        outputs = [self.run_stage(Stage.OSTEOPOROSIS, inputs)]
        if outputs[0].probability < self.thresholds[Stage.OSTEOPOROSIS]:
            outputs.append(self.run_stage(Stage.LOW_BONE_MASS, inputs))
        return tuple(outputs)

    def decide(self, outputs: tuple[StageOutput, ...]) -> tuple[Category, tuple[Finding, ...]]:
        """The film's WHO category and the two stage findings."""
        by_stage = {output.stage: output for output in outputs}
        first = by_stage[Stage.OSTEOPOROSIS]
        threshold1 = self.thresholds[Stage.OSTEOPOROSIS]
        threshold2 = self.thresholds[Stage.LOW_BONE_MASS]
        second = by_stage.get(Stage.LOW_BONE_MASS)
        category = (
            final_category(
                first.probability,
                None if second is None else second.probability,
                threshold1,
                threshold2,
            )
        )
        stage1 = Finding(
            Stage.OSTEOPOROSIS.finding_name,
            FindingSite.CHEST,
            probability=first.probability,
            threshold=threshold1,
            osteoporosis_present=category.osteoporosis,
        )
        if second is None:
            stage2 = Finding(
                Stage.LOW_BONE_MASS.finding_name,
                FindingSite.CHEST,
                threshold=threshold2,
                included=False,
                reason="not run: stage 1 found osteoporosis",
            )
        else:
            stage2 = Finding(
                Stage.LOW_BONE_MASS.finding_name,
                FindingSite.CHEST,
                probability=second.probability,
                threshold=threshold2,
                category=category,
            )
        return category, (stage1, stage2)

    def explain(
        self, outputs: tuple[StageOutput, ...], source_shape: tuple[int, int]
    ) -> dict[Stage, np.ndarray]:
        """Each stage's Grad-CAM resized from the network input onto the whole film."""
        heatmaps = {}
        for output in outputs:
            resized, _ = resize_with_scale(output.cam, source_shape)
            heatmaps[output.stage] = np.clip(resized, 0.0, 1.0).astype(np.float32)
        return heatmaps

    def run_stage(self, stage: Stage, inputs: torch.Tensor) -> StageOutput:
        """One stage's probability and Grad-CAM on a network input from :meth:`locate`."""
        with self._autocast():
            probability, cam = probability_and_cam(self.networks[stage], inputs, POSITIVE_CLASS)
        return StageOutput(stage=stage, probability=probability, cam=cam)

    # -- helpers -------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.precision is InferencePrecision.FLOAT32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def intended_use(radiograph: Radiograph) -> tuple[list[str], list[str]]:
    """Why a film is outside the method's intended use, and other notes for the reader.

    Parameters
    ----------
    radiograph
        The decoded film (its header facts).

    Returns
    -------
    (issues, notes)
        ``issues``: patient under 50, age unknown, AP instead of PA (the policy decides whether the
        film is analysed); ``notes``: WHO applicability notes on sex, and an unrecorded view.
    """
    facts = radiograph.facts
    issues = []
    age = facts.patient_age_years
    if age is None:
        issues.append(
            f"patient age unknown: the chest method is intended for ages {INTENDED_MIN_AGE_YEARS} and over"
        )
    elif age < INTENDED_MIN_AGE_YEARS:
        issues.append(
            f"patient aged {age}: the chest method is intended for ages {INTENDED_MIN_AGE_YEARS} and"
            " over, and WHO T-score categories apply from 50 (or after menopause)"
        )
    if facts.view == "AP":
        issues.append("AP chest film: the chest method is intended for PA films")
    notes = []
    if not facts.view:
        notes.append("view position not recorded: the film was taken to be PA")
    sex = facts.patient_sex
    # The age notes of who_applicability repeat the issues above; keep its notes on sex only.
    notes += who_applicability(INTENDED_MIN_AGE_YEARS, sex)
    return issues, notes
