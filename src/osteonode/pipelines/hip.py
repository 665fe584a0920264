"""Hip pipeline: osteoporosis per proximal femur on an AP hip or pelvis film (METHODS.md section 3).

Jang et al. 2021: a crop of the proximal femur of one side (acetabular roof to below the lesser
trochanter, teardrop to beyond the vastus ridge), z-transformed with two sigma and clipped to
[-1, 1], goes through VGG16 with a non-local block, which gives the probability of osteoporosis
(T-score <= -2.5) for that side.

The pipeline is the card-driven classifier (:class:`~osteonode.pipelines.classifier.ClassifierPipeline`)
with the paper's description (:func:`hip_spec`):

- the femur localiser finds each side's crop (:class:`~osteonode.pipelines.regions.FemurSides`:
  boxes, prosthesis or cut-off sides, patient sides from Patient Orientation), at the card's
  ``locator_rows`` x ``locator_columns``;
- each evaluable side's crop, the one on the image's right mirrored, is resized to ``crop_size``,
  z-transformed with two sigma and classified by the one-logit VGG16-NL (sigmoid), with the
  Grad-CAM of osteoporosis from the same pass;
- a side is osteoporotic at or above ``[pipelines.<name>].thresholds.osteoporosis`` (0.5); the
  film's answer is the worse side. The method is two-class: a side below the threshold is
  :attr:`~osteonode.pipelines.base.Category.NOT_OSTEOPOROSIS`, never a WHO category;
- the heat-map is each side's Grad-CAM, weighted by that side's probability, in its crop.

Intended use: women aged 55 or over. Another patient, or one whose sex or age is not recorded, is
analysed with a note, or skipped (:class:`~osteonode.pipelines.base.OutsideIntendedUse`) under the
``skip`` policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from osteonode.bone import Category, Sex
from osteonode.config import PipelineSettings
from osteonode.imaging.transforms import ClassifierTransform
from osteonode.pipelines.base import FindingSite, Method, RegionKind, Truth
from osteonode.pipelines.classifier import ClassifierPipeline
from osteonode.reference import ReferenceData
from osteonode.zoo import ClassifierSpec, ClassifierStage, LoadedModel, ModelCard, ModelError

__all__ = [
    "CLASSIFIER_ROLE",
    "INTENDED_MIN_AGE_YEARS",
    "LOCATOR_ROLE",
    "THRESHOLD_NAME",
    "HipGeometry",
    "HipPipeline",
    "hip_spec",
]

#: Role names of the two networks in the model card.
LOCATOR_ROLE = "locator"
CLASSIFIER_ROLE = "classifier"
#: The name of the decision cut-off in ``[pipelines.<name>].thresholds``.
THRESHOLD_NAME = "osteoporosis"
#: The paper's intended population: women aged 55 or over.
INTENDED_MIN_AGE_YEARS = 55


@dataclass(frozen=True)
class HipGeometry:
    """Input sizes of the two networks, as the model card's parameters give them.

    Parameters
    ----------
    locator_shape : tuple of int
        (rows, columns) of the film the localiser sees; multiples of 32.
    crop_size : int
        Side of the square crop the classifier sees; a multiple of 32.
    """

    locator_shape: tuple[int, int]
    crop_size: int

    def __post_init__(self) -> None:
        if len(self.locator_shape) != 2 or any(n < 32 or n % 32 for n in self.locator_shape):
            raise ValueError(f"locator_shape must be two multiples of 32, got {self.locator_shape}")
        if self.crop_size < 32 or self.crop_size % 32:
            raise ValueError(f"crop_size must be a multiple of 32, got {self.crop_size}")

    @classmethod
    def from_card(cls, card: ModelCard) -> Self:
        """Read ``locator_rows``, ``locator_columns`` and ``crop_size`` from the card.

        Raises
        ------
        ModelError
            A parameter is missing or not a valid size.
        """
        try:
            shape = (int(card.parameters["locator_rows"]), int(card.parameters["locator_columns"]))
            return cls(locator_shape=shape, crop_size=int(card.parameters["crop_size"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(
                f"model {card.name!r}: hip input sizes in the card are unusable: {error}"
            ) from None

    def as_parameters(self) -> dict[str, int]:
        """The card parameters that :meth:`from_card` reads."""
        return {
            "locator_rows": self.locator_shape[0],
            "locator_columns": self.locator_shape[1],
            "crop_size": self.crop_size,
        }


def hip_spec(geometry: HipGeometry) -> ClassifierSpec:
    """The hip method as the card-driven classifier runs it, at the card's input sizes."""
    return ClassifierSpec(
        finding_site=FindingSite.HIP,
        transform=ClassifierTransform.ZTRANSFORM_2SIGMA,
        stages=[
            ClassifierStage(
                network=CLASSIFIER_ROLE,
                name=THRESHOLD_NAME,
                finding="Osteoporosis",
                positive=Category.OSTEOPOROSIS,
                negative=Category.NOT_OSTEOPOROSIS,
            ),
        ],
        views=["AP", "PA"],
        sexes=[Sex.FEMALE],
        min_age_years=INTENDED_MIN_AGE_YEARS,
        population=f"women aged {INTENDED_MIN_AGE_YEARS} or over",
        regions=RegionKind.FEMUR_SIDES,
        locator=LOCATOR_ROLE,
        locator_input_size=geometry.locator_shape,
    )


class HipPipeline(ClassifierPipeline):
    """Per-side osteoporosis probability on AP hip / pelvis films: the classifier of :func:`hip_spec`."""

    truth: Truth = Truth.PER_SIDE

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        settings: PipelineSettings,
        reference: ReferenceData | None = None,
        *,
        name: str = Method.HIP.value,
    ) -> Self:
        """Build the pipeline from a loaded hip model (``locator`` and ``classifier`` networks).

        ``reference`` is not used: the hip method classifies without a T-score.

        Raises
        ------
        ModelError
            The model is not a hip model, or its card or networks cannot be applied.
        """
        card = model.card
        if card.pipeline is not Method.HIP:
            raise ModelError(f"model {card.name!r} is a {card.pipeline.value} model, not a hip model")
        geometry = HipGeometry.from_card(card)
        if tuple(card.input_size) != (geometry.crop_size, geometry.crop_size):
            raise ModelError(f"model {card.name!r}: input_size must be the square crop_size")
        return cls.from_spec(model, hip_spec(geometry), settings, name=name)
