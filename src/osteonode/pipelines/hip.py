"""Hip pipeline: osteoporosis per proximal femur on an AP hip or pelvis film (METHODS.md section 3).

Jang et al. 2021: a crop of the proximal femur of one side (acetabular roof to below the lesser
trochanter, teardrop to beyond the vastus ridge), z-transformed with two sigma and clipped to
[-1, 1], goes through VGG16 with a non-local block, which gives the probability of osteoporosis
(T-score <= -2.5) for that side.

Shape: locate -> measure -> decide -> explain.

- locate: the femur localiser (:mod:`osteonode.nets.femur_locator`) sees the whole film resized to
  the card's ``locator_rows`` x ``locator_columns`` and z-transformed, and returns for the femur on
  the image's left and the one on its right the crop box, the state (evaluable, prosthesis, cut
  off by the field of view) and its confidence. Image sides become patient sides through Patient
  Orientation (0020,0020); without it the standard display of a frontal film (the patient's right
  on the image's left) is assumed and the result says so.
- measure: each evaluable side's crop is resized to ``crop_size`` square, the right-of-image
  femur mirrored so both look alike to the network, z-transformed, and classified; Grad-CAM of the
  osteoporosis logit comes from the same forward pass (the logits are captured on the way).
- decide: a side is osteoporotic when its probability reaches ``[pipelines.hip] threshold``; the
  film's answer is the worse side.
- explain: each side's Grad-CAM, scaled by that side's probability (so a confident "no" does not
  glow like a "yes"), is pasted back onto the full film inside its crop.

Answers: the classifier is two-class and cannot tell normal from low bone mass, so a side below
the threshold is :attr:`~osteonode.pipelines.base.Category.NOT_OSTEOPOROSIS`, never a WHO
category; a side at or above it is ``OSTEOPOROSIS``. The film's answer is the worse side.

Intended use: women aged 55 or over. A man, a woman under 55 (or unknown sex or age) is analysed
with a note, or skipped (:class:`~osteonode.pipelines.base.OutsideIntendedUse`) under the ``skip``
policy when the header shows the patient is outside (unknown sex or age is analysed with a note).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import structlog
import torch
from pydicom.dataset import Dataset
from torch import nn

from osteonode.bone import Laterality, Sex, who_applicability
from osteonode.config import IntendedUsePolicy, PipelineSettings
from osteonode.explain import grad_cam
from osteonode.imaging.pixels import Radiograph
from osteonode.imaging.transforms import resize_with_scale, ztransform_2sigma
from osteonode.nets.femur_locator import IMAGE_SIDES, FemurLocator, SideState
from osteonode.pipelines.base import (
    Category,
    Finding,
    FindingSite,
    Method,
    OutsideIntendedUse,
    Region,
    Result,
    SourceImage,
    Truth,
)
from osteonode.pipelines.inference import captured_output
from osteonode.reference import ReferenceData
from osteonode.zoo import LoadedModel, ModelCard, ModelError

__all__ = [
    "CLASSIFIER_ROLE",
    "INTENDED_MIN_AGE_YEARS",
    "LOCATOR_ROLE",
    "CropWindow",
    "HipGeometry",
    "HipPipeline",
    "SideLocation",
    "SideMeasure",
    "crop_window",
    "extract_crop",
    "image_side_lateralities",
    "intended_use",
    "locator_film",
]

log = structlog.get_logger(__name__)

#: Role names of the two networks in the model card.
LOCATOR_ROLE = "locator"
CLASSIFIER_ROLE = "classifier"
#: The name of the decision cut-off in ``[pipelines.<name>].thresholds``, and its default.
THRESHOLD_NAME = "osteoporosis"
DEFAULT_THRESHOLD = 0.5
#: The paper's intended population: women aged 55 or over.
INTENDED_MIN_AGE_YEARS = 55
#: Why a side is not evaluable, by localiser state.
_STATE_REASONS = {
    SideState.PROSTHESIS: "hip prosthesis",
    SideState.OUTSIDE_FIELD: "femur cut off by the field of view",
}
#: A predicted crop box may overhang the film by this share of its size before the side counts as
#: cut off (the localiser's edge error is a few percent).
_OVERHANG_TOLERANCE = 0.04
#: A crop box narrower than this many source pixels is no femur.
_MIN_BOX_PIXELS = 8.0
_FINDING_NAMES = {Laterality.RIGHT: "Right hip", Laterality.LEFT: "Left hip"}


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


@dataclass(frozen=True)
class CropWindow:
    """Integer pixel window of a crop on the source: rows ``row0:row1``, columns ``column0:column1``."""

    row0: int
    row1: int
    column0: int
    column1: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the window."""
        return (self.row1 - self.row0, self.column1 - self.column0)


@dataclass(frozen=True)
class SideLocation:
    """What the localiser found on one side.

    Attributes
    ----------
    image_side : str
        ``"image_left"`` or ``"image_right"``.
    laterality : Laterality
        The patient's side.
    box : tuple of float
        ``(column0, row0, column1, row1)`` in source pixel coordinates, pixel centres at integers.
    state : SideState
        Evaluable, prosthesis or cut off.
    confidence : float
        The localiser's probability of ``state``.
    reason : str or None
        Why the side is not evaluable.
    """

    image_side: str
    laterality: Laterality
    box: tuple[float, float, float, float]
    state: SideState
    confidence: float
    reason: str | None

    @property
    def evaluable(self) -> bool:
        """Whether the side can be classified."""
        return self.state is SideState.EVALUABLE and self.reason is None

    @property
    def mirrored(self) -> bool:
        """Crops of the femur on the image's right are mirrored to look like the left one."""
        return self.image_side == IMAGE_SIDES[1]


@dataclass(frozen=True)
class SideMeasure:
    """The classifier's output for one evaluable side.

    Attributes
    ----------
    location : SideLocation
        Where the crop came from.
    probability : float
        Probability of osteoporosis.
    cam : numpy.ndarray
        Grad-CAM of the osteoporosis logit on the crop as the network saw it, float32 [0, 1].
    """

    location: SideLocation
    probability: float
    cam: np.ndarray


def image_side_lateralities(header: Dataset) -> tuple[tuple[Laterality, Laterality], str | None]:
    """The patient sides shown on the image's left and right, from Patient Orientation.

    Patient Orientation (0020,0020) names the patient direction of increasing column first: ``L``
    means the image's right is the patient's left (the standard display of a frontal film), ``R``
    the opposite.

    Parameters
    ----------
    header : pydicom.dataset.Dataset
        The source's header.

    Returns
    -------
    (image_left, image_right), assumption
        The patient side on each image side; ``assumption`` is a note for the result when the
        header did not say and the standard display was assumed, else None.
    """
    orientation = header.get("PatientOrientation")
    values = [str(v).strip().upper() for v in (orientation or [])]
    row_direction = values[0] if values else ""
    # The first of L/R in the row direction decides (oblique values such as "LH" are allowed).
    letters = [c for c in row_direction if c in "LR"]
    if letters and letters[0] == "L":
        return (Laterality.RIGHT, Laterality.LEFT), None
    if letters and letters[0] == "R":
        return (Laterality.LEFT, Laterality.RIGHT), None
    return (Laterality.RIGHT, Laterality.LEFT), (
        "Patient Orientation does not give the patient's left and right; the standard display of"
        " an AP film was assumed (patient's right on the image's left)"
    )


def intended_use(radiograph: Radiograph) -> tuple[list[str], list[str]]:
    """Notes on the intended population (women aged 55 or over), and reasons to skip.

    Parameters
    ----------
    radiograph : Radiograph
        The film (its header facts).

    Returns
    -------
    notes, outside
        ``notes`` for the result; ``outside`` the reasons the patient is known to be outside
        the intended population (what the skip policy acts on).
    """
    sex = radiograph.facts.patient_sex
    age = radiograph.facts.patient_age_years
    population = f"the hip method is intended for women aged {INTENDED_MIN_AGE_YEARS} or over"
    outside: list[str] = []
    unknown: list[str] = []
    if sex is Sex.MALE:
        outside.append(f"male patient; {population}")
    elif sex is not Sex.FEMALE:
        unknown.append(f"patient sex not given as female; {population}")
    if age is not None and age < INTENDED_MIN_AGE_YEARS:
        outside.append(f"patient aged {age}; {population}")
    elif age is None:
        unknown.append(f"patient age unknown; {population}")
    notes = (
        outside
        + unknown
        + [n for n in who_applicability(age, sex) if not n.startswith("age unknown")]
    )
    return notes, outside


def locator_film(
    pixels: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, tuple[float, float]]:
    """The whole film resized (anti-aliased) to the localiser's ``shape``, before normalisation.

    Parameters
    ----------
    pixels : numpy.ndarray
        Source pixels (bone bright).
    shape : tuple of int
        (rows, columns).

    Returns
    -------
    film, scale
        float32 resized film and the source pixels per localiser pixel, (row, column).
    """
    film, scale_map = resize_with_scale(pixels, shape)
    return film, scale_map.scale


def crop_window(
    box: Sequence[float], shape: tuple[int, int], margin: float = 0.0
) -> CropWindow | None:
    """The integer pixel window of ``box`` grown by ``margin`` of its size each side, on the film.

    Parameters
    ----------
    box : sequence of float
        ``(column0, row0, column1, row1)``, pixel centres at integers.
    shape : tuple of int
        (rows, columns) of the film.
    margin : float
        Share of the box's width (height) added left and right (top and bottom).

    Returns
    -------
    CropWindow or None
        Clipped to the film; None when less than two pixels of it are on the film either way.
    """
    column0, row0, column1, row1 = (float(v) for v in box)
    grow_c, grow_r = margin * (column1 - column0), margin * (row1 - row0)
    window = CropWindow(
        row0=max(0, math.floor(row0 - grow_r + 0.5)),
        row1=min(shape[0], math.floor(row1 + grow_r + 0.5) + 1),
        column0=max(0, math.floor(column0 - grow_c + 0.5)),
        column1=min(shape[1], math.floor(column1 + grow_c + 0.5) + 1),
    )
    return window if min(window.shape) >= 2 else None


def extract_crop(
    pixels: np.ndarray, window: CropWindow, size: int | tuple[int, int], mirror: bool
) -> np.ndarray:
    """The window of the film resized (anti-aliased) to ``size``, mirrored left-right if asked.

    Returns
    -------
    numpy.ndarray
        float32 crop, before normalisation.
    """
    crop = pixels[window.row0 : window.row1, window.column0 : window.column1]
    if mirror:
        crop = crop[:, ::-1]
    resized, _ = resize_with_scale(np.ascontiguousarray(crop), size)
    return resized


class HipPipeline:
    """Per-side osteoporosis probability on AP hip / pelvis films.

    Parameters
    ----------
    locator : FemurLocator
        The femur localiser, eval mode.
    classifier : torch.nn.Module
        One-logit classifier with ``gradcam_layer`` and a ``head`` (VGG16 non-local), eval mode.
    card : ModelCard
        The model card (identity, sizes).
    settings : PipelineSettings
        ``thresholds.osteoporosis`` (default 0.5) and the intended-use policy.
    device : torch.device
        Where the networks are.
    name : str
        The configured pipeline's name, written on every result.

    Raises
    ------
    TypeError
        If a network is not of the expected kind.
    """

    truth: ClassVar[Truth] = Truth.PER_SIDE
    site: ClassVar[FindingSite] = FindingSite.HIP
    views: ClassVar[tuple[str, ...]] = ("AP", "PA")

    def __init__(
        self,
        locator: FemurLocator,
        classifier: nn.Module,
        card: ModelCard,
        settings: PipelineSettings,
        device: torch.device,
        name: str = Method.HIP.value,
    ) -> None:
        if not isinstance(locator, FemurLocator):
            raise TypeError(f"locator must be a FemurLocator, not {type(locator).__name__}")
        if not isinstance(classifier, nn.Module) or not hasattr(classifier, "gradcam_layer"):
            raise TypeError("classifier must be a torch module with a gradcam_layer")
        if not isinstance(settings, PipelineSettings):
            raise TypeError(f"settings must be PipelineSettings, not {type(settings).__name__}")
        unknown = set(settings.thresholds) - {THRESHOLD_NAME}
        if unknown:
            raise ModelError(
                f"unknown hip thresholds {sorted(unknown)}; the hip method has '{THRESHOLD_NAME}'"
            )
        self.name = name
        self.threshold = settings.thresholds.get(THRESHOLD_NAME, DEFAULT_THRESHOLD)
        self.locator = locator.eval()
        self.classifier = classifier.eval()
        self.card = card
        self.settings = settings
        self.device = device
        self.geometry = HipGeometry.from_card(card)
        self.identity = card.identity()

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        settings: PipelineSettings,
        reference: ReferenceData,
        *,
        name: str = Method.HIP.value,
    ) -> Self:
        """Build the pipeline from a loaded hip model (``locator`` and ``classifier`` networks).

        ``reference`` is not used: the hip method classifies without a T-score.
        """
        if model.card.pipeline is not Method.HIP:
            raise ModelError(f"model {model.card.name!r} is for {model.card.pipeline}, not hip")
        return cls(
            model[LOCATOR_ROLE], model[CLASSIFIER_ROLE], model.card, settings, model.device, name
        )

    def run(self, radiograph: Radiograph) -> Result:
        """Analyse one film.

        Raises
        ------
        OutsideIntendedUse
            Under the skip policy, for a patient known to be outside the intended population.
        """
        notes, outside = intended_use(radiograph)
        if outside and self.settings.outside_intended_use is IntendedUsePolicy.SKIP:
            raise OutsideIntendedUse("; ".join(outside))
        locations, orientation_note = self.locate(radiograph)
        measures = self.measure(radiograph, locations)
        findings, category = self.decide(radiograph, locations, measures)
        notes = [
            *([orientation_note] if orientation_note else []),
            *notes,
            _locator_note(locations),
        ]
        source = SourceImage.from_radiograph(radiograph)
        if category is None:
            reasons = "; ".join(
                f"{_FINDING_NAMES[loc.laterality].lower()}: {loc.reason}" for loc in locations
            )
            log.info("hip_not_evaluable", sop_instance_uid=source.sop_instance_uid, reason=reasons)
            return Result(
                pipeline=self.name,
                site=FindingSite.HIP,
                source=source,
                model=self.identity,
                evaluable=False,
                reason=f"no evaluable hip ({reasons})",
                findings=findings,
                notes=tuple(notes),
            )
        log.info(
            "hip_analysed",
            sop_instance_uid=source.sop_instance_uid,
            category=category.value,
            probabilities={m.location.laterality.value: round(m.probability, 3) for m in measures},
        )
        return Result(
            pipeline=self.name,
            site=FindingSite.HIP,
            source=source,
            model=self.identity,
            evaluable=True,
            category=category,
            findings=findings,
            notes=tuple(notes),
            heatmap=self.explain(radiograph, measures),
            heatmap_meaning=HEATMAP_MEANING,
        )

    def locate(self, radiograph: Radiograph) -> tuple[tuple[SideLocation, ...], str | None]:
        """Find each side's crop box and state; map image sides to patient sides.

        Returns
        -------
        locations, assumption
            One location per image side, and the orientation note when the header was silent.
        """
        film, (row_scale, column_scale) = locator_film(
            radiograph.pixels, self.geometry.locator_shape
        )
        inputs = torch.from_numpy(ztransform_2sigma(film))[None, None].to(self.device)
        with torch.no_grad():
            located = FemurLocator.decode(self.locator(inputs))
        lateralities, assumption = image_side_lateralities(radiograph.header)
        rows, columns = radiograph.shape
        locations = []
        for index, image_side in enumerate(IMAGE_SIDES):
            c0, r0, c1, r1 = located.boxes[0, index].tolist()
            # Localiser pixel centres to source pixel centres (the ScaleMap convention).
            box = (
                (c0 + 0.5) * column_scale - 0.5,
                (r0 + 0.5) * row_scale - 0.5,
                (c1 + 0.5) * column_scale - 0.5,
                (r1 + 0.5) * row_scale - 0.5,
            )
            probabilities = located.state_probabilities[0, index]
            state = SideState(int(probabilities.argmax()))
            locations.append(
                SideLocation(
                    image_side=image_side,
                    laterality=lateralities[index],
                    box=box,
                    state=state,
                    confidence=float(probabilities[state]),
                    reason=_not_evaluable_reason(state, box, (rows, columns)),
                )
            )
        if assumption is not None:
            return _sides_from_image_laterality(
                tuple(locations), radiograph.facts.laterality, assumption
            )
        return tuple(locations), assumption

    def measure(
        self, radiograph: Radiograph, locations: Sequence[SideLocation]
    ) -> tuple[SideMeasure, ...]:
        """Classify the evaluable sides' crops (one batch) with Grad-CAM from the same pass."""
        evaluable = [loc for loc in locations if loc.evaluable]
        if not evaluable:
            return ()
        size = self.geometry.crop_size
        crops = []
        for location in evaluable:
            window = crop_window(location.box, radiograph.shape)
            assert window is not None  # an evaluable box lies on the film
            crops.append(
                ztransform_2sigma(extract_crop(radiograph.pixels, window, size, location.mirrored))
            )
        inputs = torch.from_numpy(np.stack(crops))[:, None].to(self.device)
        with captured_output(self.classifier.head) as logits:
            cams = grad_cam(self.classifier, inputs, self.classifier.gradcam_layer, class_index=0)
        probabilities = torch.sigmoid(logits[0][:, 0]).cpu().tolist()
        return tuple(
            SideMeasure(location=loc, probability=float(p), cam=cam)
            for loc, p, cam in zip(evaluable, probabilities, cams, strict=True)
        )

    def decide(
        self,
        radiograph: Radiograph,
        locations: Sequence[SideLocation],
        measures: Sequence[SideMeasure],
    ) -> tuple[tuple[Finding, ...], Category | None]:
        """One finding per side (right first) and the film's answer (None: no evaluable side).

        A side is osteoporosis or not osteoporosis; the film's answer is the worse side's.
        """
        threshold = self.threshold
        by_side = {m.location.laterality: m for m in measures}
        findings = []
        for location in sorted(locations, key=lambda loc: loc.laterality is not Laterality.RIGHT):
            region = _region(location.box, radiograph.shape)
            name = _FINDING_NAMES[location.laterality]
            measure = by_side.get(location.laterality)
            if measure is None:
                findings.append(
                    Finding(
                        name,
                        FindingSite.HIP,
                        laterality=location.laterality,
                        evaluable=False,
                        included=False,
                        reason=location.reason or "not evaluable",
                        region=region,
                    )
                )
                continue
            present = measure.probability >= threshold
            findings.append(
                Finding(
                    name,
                    FindingSite.HIP,
                    laterality=location.laterality,
                    probability=measure.probability,
                    threshold=threshold,
                    osteoporosis_present=present,
                    category=_answer(present),
                    region=region,
                )
            )
        if not measures:
            return tuple(findings), None
        worst = max(m.probability for m in measures)
        return tuple(findings), _answer(worst >= threshold)

    def explain(self, radiograph: Radiograph, measures: Sequence[SideMeasure]) -> np.ndarray:
        """Each side's Grad-CAM, scaled by its probability, pasted into its crop on the film."""
        heatmap = np.zeros(radiograph.shape, dtype=np.float32)
        for measure in measures:
            window = crop_window(measure.location.box, radiograph.shape)
            assert window is not None
            cam = measure.cam[:, ::-1] if measure.location.mirrored else measure.cam
            pasted, _ = resize_with_scale(np.ascontiguousarray(cam), window.shape)
            pasted = np.clip(pasted * measure.probability, 0.0, 1.0)
            target = heatmap[window.row0 : window.row1, window.column0 : window.column1]
            np.maximum(target, pasted, out=target)
        return heatmap


#: What the film's heat-map shows (:meth:`HipPipeline.explain`).
HEATMAP_MEANING = "evidence of osteoporosis, weighted by each side's probability (Grad-CAM)"


def _answer(osteoporosis: bool) -> Category:
    """The two-class method's answer."""
    return Category.OSTEOPOROSIS if osteoporosis else Category.NOT_OSTEOPOROSIS


def _sides_from_image_laterality(
    locations: tuple[SideLocation, ...], image_laterality: str | None, assumption: str
) -> tuple[tuple[SideLocation, ...], str]:
    """Without Patient Orientation, let Image Laterality R or L name the single femur on the film.

    A one-hip film marked R or L shows that hip whatever the display orientation; when exactly one
    side has a femur on the film, it gets the marked side and the other side the opposite one.
    """
    marked = {"R": Laterality.RIGHT, "L": Laterality.LEFT}.get(
        (image_laterality or "").strip().upper()
    )
    present = [loc for loc in locations if loc.state is not SideState.OUTSIDE_FIELD]
    if marked is None or len(present) != 1:
        return locations, assumption
    other = Laterality.LEFT if marked is Laterality.RIGHT else Laterality.RIGHT
    relabelled = tuple(
        dataclasses.replace(loc, laterality=marked if loc is present[0] else other)
        for loc in locations
    )
    note = (
        f"Patient Orientation does not give the patient's left and right; the femur on the film was"
        f" taken to be the {marked.name.lower()} hip from Image Laterality {marked.value}"
    )
    return relabelled, note


def _not_evaluable_reason(
    state: SideState, box: tuple[float, float, float, float], shape: tuple[int, int]
) -> str | None:
    if state is not SideState.EVALUABLE:
        return _STATE_REASONS[state]
    column0, row0, column1, row1 = box
    width, height = column1 - column0, row1 - row0
    if min(width, height) < _MIN_BOX_PIXELS:
        return "femur not found"
    rows, columns = shape
    tolerance_c, tolerance_r = _OVERHANG_TOLERANCE * width, _OVERHANG_TOLERANCE * height
    if (
        column0 < -0.5 - tolerance_c
        or row0 < -0.5 - tolerance_r
        or column1 > columns - 0.5 + tolerance_c
        or row1 > rows - 0.5 + tolerance_r
    ):
        return "crop region cut off by the field of view"
    return None


def _region(box: tuple[float, float, float, float], shape: tuple[int, int]) -> Region | None:
    """The box on the film as a SCOORD rectangle (corner origin), clipped; None when off the film."""
    rows, columns = shape
    # Pixel-centre coordinates to SCOORD's corner origin: add half a pixel.
    column0 = min(max(box[0] + 0.5, 0.0), float(columns))
    row0 = min(max(box[1] + 0.5, 0.0), float(rows))
    column1 = min(max(box[2] + 0.5, 0.0), float(columns))
    row1 = min(max(box[3] + 0.5, 0.0), float(rows))
    if column1 - column0 < 1.0 or row1 - row0 < 1.0:
        return None
    return Region.box(column0, row0, column1, row1)


def _locator_note(locations: Sequence[SideLocation]) -> str:
    found = {
        SideState.EVALUABLE: "femur found",
        SideState.PROSTHESIS: "prosthesis",
        SideState.OUTSIDE_FIELD: "cut off by the field of view",
    }
    parts = [
        f"{_FINDING_NAMES[loc.laterality].lower()} {found[loc.state]} {loc.confidence:.0%}"
        for loc in sorted(locations, key=lambda loc: loc.laterality is not Laterality.RIGHT)
    ]
    return "femur localisation confidence: " + ", ".join(parts)
