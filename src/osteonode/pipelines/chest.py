"""Chest pipeline: two-stage low bone mass screening on a PA chest film (METHODS.md section 2).

Park et al. 2025 (OsPenScreen): stage 1 classifies osteoporosis vs not; stage 2, run only on films
stage 1 calls not osteoporotic, classifies low bone mass vs normal. Each stage is a two-class
ConvNeXt with softmax confidence; the final answer is one of osteoporosis, low bone mass, normal,
with both stage probabilities.

The pipeline is the card-driven classifier (:class:`~osteonode.pipelines.classifier.ClassifierPipeline`)
with the paper's description (:func:`chest_spec`): grayscale truncation (clip to the range of the
central 50% box, rescale, resize to the card's ``input_size``) then the card's ``normalisation``;
stage 1 then, below its threshold, stage 2, each with Grad-CAM of its finding's class in the same
forward pass; findings "Stage 1: osteoporosis" and "Stage 2: low bone mass"; thresholds from
``[pipelines.<name>].thresholds`` (``stage1``, ``stage2``). This module keeps what the chest model
folder and its trainer share: the stages, the card's normalisation and the decision rule.

Intended use: PA films of patients aged 50 or over. An AP film, a patient under 50 or an unknown age
is analysed with a note, or skipped (:class:`~osteonode.pipelines.base.OutsideIntendedUse`) under
the ``skip`` policy; a lateral or decubitus film is not evaluable.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch
from torch import nn

from osteonode.bone import Category
from osteonode.config import PipelineSettings
from osteonode.imaging.transforms import (
    TRUNCATION_OUTPUT_MAX,
    ClassifierTransform,
    grayscale_truncation,
)
from osteonode.pipelines.base import (
    FindingSite,
    Method,
    ModelIdentity,
)
from osteonode.pipelines.classifier import ClassifierPipeline
from osteonode.reference import ReferenceData
from osteonode.zoo import ClassifierSpec, ClassifierStage, LoadedModel, ModelCard, ModelError

__all__ = [
    "INTENDED_MIN_AGE_YEARS",
    "ChestPipeline",
    "ChestPreprocessing",
    "Stage",
    "chest_spec",
    "final_category",
]

#: The paper's intended population: patients aged 50 or over.
INTENDED_MIN_AGE_YEARS = 50
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


def chest_spec(preprocessing: ChestPreprocessing) -> ClassifierSpec:
    """The chest method as the card-driven classifier runs it, with the card's normalisation."""
    return ClassifierSpec(
        finding_site=FindingSite.CHEST,
        transform=ClassifierTransform.GRAYSCALE_TRUNCATION,
        mean=list(preprocessing.mean),
        std=list(preprocessing.std),
        stages=[
            ClassifierStage(
                network=Stage.OSTEOPOROSIS.value,
                finding=Stage.OSTEOPOROSIS.finding_name,
                positive=Category.OSTEOPOROSIS,
                threshold=DEFAULT_THRESHOLD,
            ),
            ClassifierStage(
                network=Stage.LOW_BONE_MASS.value,
                finding=Stage.LOW_BONE_MASS.finding_name,
                positive=Category.LOW_BONE_MASS,
                negative=Category.NORMAL,
                threshold=DEFAULT_THRESHOLD,
            ),
        ],
        views=["PA", "AP"],
        preferred_views=["PA"],
        min_age_years=INTENDED_MIN_AGE_YEARS,
        population="adults aged 50 or over",
    )


class ChestPipeline(ClassifierPipeline):
    """Two-stage ConvNeXt screening of PA chest films: the card-driven classifier of :func:`chest_spec`.

    Parameters
    ----------
    networks
        A two-class classifier per :class:`Stage` (ConvNeXt with ``gradcam_layer``), eval mode.
    preprocessing
        Input size and normalisation, from the model card.
    settings
        ``[pipelines.<name>]``: ``thresholds`` may set ``stage1`` and ``stage2``.
    identity
        The model card's identity; the thresholds are added to its parameters.
    device
        Where the networks are.
    name
        The configured pipeline's name, written on every result.

    Raises
    ------
    TypeError, ValueError
        A network missing or without a Grad-CAM layer, a threshold for no stage, or an argument of
        the wrong type.
    """

    def __init__(
        self,
        *,
        networks: Mapping[Stage, nn.Module],
        preprocessing: ChestPreprocessing,
        settings: PipelineSettings,
        identity: ModelIdentity,
        device: torch.device,
        name: str = Method.CHEST.value,
    ) -> None:
        if set(networks) != set(Stage):
            raise ValueError(f"the chest pipeline needs networks {[s.value for s in Stage]}")
        if not isinstance(preprocessing, ChestPreprocessing):
            raise TypeError("preprocessing must be a ChestPreprocessing")
        super().__init__(
            networks={Stage(stage).value: network for stage, network in networks.items()},
            spec=chest_spec(preprocessing),
            input_size=(preprocessing.size, preprocessing.size),
            settings=settings,
            identity=identity,
            device=device,
            name=name,
        )
        self.preprocessing = preprocessing

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        settings: PipelineSettings,
        reference: ReferenceData | None = None,
        *,
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
        channels = {int(network.in_chans) for network in networks.values()}
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
                name=name,
            )
        except (TypeError, ValueError) as error:
            raise ModelError(f"model {card.name!r}: {error}") from None
