"""Where on the film a card-driven classifier looks: the whole film, or regions a locator finds.

A classifier's card names its :class:`~osteonode.pipelines.base.RegionKind`; :func:`region_finder`
builds the finder, which turns a film into :class:`FilmRegion` s, each read by the classifier as one
input (a region that cannot be read carries the reason instead).

- :class:`WholeFilm`: the film is one region.
- :class:`FemurSides`: Jang et al. 2021. The femur localiser (:mod:`osteonode.nets.femur_locator`)
  sees the whole film resized to its input size and z-transformed, and returns for the femur on
  the image's left and the one on its right the crop box, the state (evaluable, prosthesis, cut
  off by the field of view) and its confidence. Image sides become patient sides through Patient
  Orientation (0020,0020); without it the standard display of a frontal film (the patient's right
  on the image's left) is assumed and the result says so. The femur on the image's right is
  mirrored so that both crops look alike to the classifier.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from pydicom.dataset import Dataset
from torch import nn

from osteonode.bone import Laterality
from osteonode.imaging.pixels import Radiograph
from osteonode.imaging.transforms import resize_with_scale, ztransform_2sigma
from osteonode.nets.femur_locator import IMAGE_SIDES, FemurLocator, SideState
from osteonode.pipelines.base import Region, RegionKind

__all__ = [
    "CropWindow",
    "FemurSides",
    "FilmRegion",
    "FoundRegions",
    "RegionFinder",
    "WholeFilm",
    "crop_window",
    "extract_crop",
    "image_side_lateralities",
    "locator_film",
    "region_finder",
]

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
_HIP_NAMES = {Laterality.RIGHT: "Right hip", Laterality.LEFT: "Left hip"}


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
class FilmRegion:
    """A part of the film that the classifier reads as one input.

    Attributes
    ----------
    name : str or None
        The region's finding name, e.g. ``"Right hip"``; None for the whole film (its findings
        are named by the stages alone).
    box : tuple of float or None
        ``(column0, row0, column1, row1)`` in source pixel coordinates, pixel centres at
        integers; None for the whole film.
    laterality : Laterality or None
        The patient's side, for a paired structure.
    mirrored : bool
        The crop is mirrored left-right before the network sees it.
    confidence : float or None
        How sure the locator is of the region's state.
    reason : str or None
        Why the region cannot be read; None when it can.
    """

    name: str | None = None
    box: tuple[float, float, float, float] | None = None
    laterality: Laterality | None = None
    mirrored: bool = False
    confidence: float | None = None
    reason: str | None = None

    @property
    def evaluable(self) -> bool:
        """Whether the region can be classified."""
        return self.reason is None

    def window(self, shape: tuple[int, int]) -> CropWindow | None:
        """The region's pixels on a film of ``shape``; None when it is not on the film."""
        if self.box is None:
            return CropWindow(0, shape[0], 0, shape[1])
        return crop_window(self.box, shape)

    def outline(self, shape: tuple[int, int]) -> Region | None:
        """The region as a SCOORD rectangle (corner origin), clipped to the film.

        None for the whole film, or a box with less than a pixel on the film.
        """
        if self.box is None:
            return None
        rows, columns = shape
        # Pixel-centre coordinates to SCOORD's corner origin: add half a pixel.
        column0, row0, column1, row1 = (
            min(max(value + 0.5, 0.0), float(limit))
            for value, limit in zip(self.box, (columns, rows, columns, rows), strict=True)
        )
        if column1 - column0 < 1.0 or row1 - row0 < 1.0:
            return None
        return Region.box(column0, row0, column1, row1)


@dataclass(frozen=True)
class FoundRegions:
    """The regions of one film, in reading order, and notes for the reader about finding them."""

    regions: tuple[FilmRegion, ...]
    notes: tuple[str, ...] = ()


class RegionFinder(Protocol):
    """Turns a film into the regions a classifier reads."""

    def find(self, radiograph: Radiograph) -> FoundRegions:
        """The film's regions (each evaluable, or with the reason it is not)."""
        ...


class WholeFilm:
    """The whole film is the classifier's one input."""

    def find(self, radiograph: Radiograph) -> FoundRegions:
        """One region: the film."""
        return FoundRegions(regions=(FilmRegion(),))


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
    resized, _ = resize_with_scale(window_pixels(pixels, window, mirror), size)
    return resized


def window_pixels(pixels: np.ndarray, window: CropWindow, mirror: bool) -> np.ndarray:
    """The window's pixels (contiguous), mirrored left-right if asked."""
    crop = pixels[window.row0 : window.row1, window.column0 : window.column1]
    return np.ascontiguousarray(crop[:, ::-1] if mirror else crop)


class FemurSides:
    """The proximal femur on each side of an AP hip or pelvis film, as Jang et al. 2021 crop it.

    Parameters
    ----------
    locator : FemurLocator
        The femur localiser, eval mode.
    input_size : tuple of int
        (rows, columns) of the film the localiser sees; multiples of 32.
    device : torch.device
        Where the localiser is.

    Raises
    ------
    TypeError
        The locator is not a femur localiser.
    ValueError
        An input size the localiser cannot take.
    """

    def __init__(
        self, locator: FemurLocator, input_size: tuple[int, int], device: torch.device
    ) -> None:
        if not isinstance(locator, FemurLocator):
            raise TypeError(f"the femur sides need a FemurLocator, not {type(locator).__name__}")
        if len(input_size) != 2 or any(n < 32 or n % 32 for n in input_size):
            raise ValueError(f"the locator input must be two multiples of 32, got {tuple(input_size)}")
        self.locator = locator.eval()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.device = torch.device(device)

    def find(self, radiograph: Radiograph) -> FoundRegions:
        """Each side's crop box and state, right hip first, with the localiser's notes."""
        film, (row_scale, column_scale) = locator_film(radiograph.pixels, self.input_size)
        inputs = torch.from_numpy(ztransform_2sigma(film))[None, None].to(self.device)
        with torch.inference_mode():  # locating needs no gradient; only Grad-CAM does
            located = FemurLocator.decode(self.locator(inputs))
        lateralities, assumption = image_side_lateralities(radiograph.header)
        sides = []
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
            sides.append((
                state,
                FilmRegion(
                    name=_HIP_NAMES[lateralities[index]],
                    box=box,
                    laterality=lateralities[index],
                    mirrored=image_side == IMAGE_SIDES[1],
                    confidence=float(probabilities[state]),
                    reason=_not_evaluable_reason(state, box, radiograph.shape),
                ),
            ))
        if assumption is not None:
            sides, assumption = _sides_from_image_laterality(
                sides, radiograph.facts.laterality, assumption
            )
        sides.sort(key=lambda side: side[1].laterality is not Laterality.RIGHT)
        notes = (*([assumption] if assumption else []), _locator_note(sides))
        return FoundRegions(regions=tuple(region for _, region in sides), notes=notes)


def region_finder(
    kind: RegionKind,
    networks: Mapping[str, nn.Module],
    *,
    locator: str | None,
    locator_input_size: tuple[int, int] | None,
    device: torch.device,
) -> RegionFinder:
    """The finder of a classifier card's ``regions``.

    Parameters
    ----------
    kind
        The card's region kind.
    networks
        The model's networks by role.
    locator, locator_input_size
        The locator network's role and input size, for a kind that needs one.
    device
        Where the networks are.

    Raises
    ------
    TypeError, ValueError
        The locator is missing or not of the kind's network type, or its input size is unusable.
    """
    if RegionKind(kind) is RegionKind.WHOLE_FILM:
        return WholeFilm()
    if locator is None or locator_input_size is None or locator not in networks:
        raise ValueError(f"regions {kind.value!r} need a locator network and its input size")
    return FemurSides(networks[locator], locator_input_size, device)


def _sides_from_image_laterality(
    sides: list[tuple[SideState, FilmRegion]], image_laterality: str | None, assumption: str
) -> tuple[list[tuple[SideState, FilmRegion]], str]:
    """Without Patient Orientation, let Image Laterality R or L name the single femur on the film.

    A one-hip film marked R or L shows that hip whatever the display orientation; when exactly one
    side has a femur on the film, it gets the marked side and the other side the opposite one.
    """
    marked = {"R": Laterality.RIGHT, "L": Laterality.LEFT}.get(
        (image_laterality or "").strip().upper()
    )
    present = [index for index, (state, _) in enumerate(sides) if state is not SideState.OUTSIDE_FIELD]
    if marked is None or len(present) != 1:
        return sides, assumption
    other = Laterality.LEFT if marked is Laterality.RIGHT else Laterality.RIGHT
    relabelled = []
    for index, (state, region) in enumerate(sides):
        side = marked if index == present[0] else other
        relabelled.append((state, dataclasses.replace(region, laterality=side, name=_HIP_NAMES[side])))
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


def _locator_note(sides: Sequence[tuple[SideState, FilmRegion]]) -> str:
    found = {
        SideState.EVALUABLE: "femur found",
        SideState.PROSTHESIS: "prosthesis",
        SideState.OUTSIDE_FIELD: "cut off by the field of view",
    }
    parts = [
        f"{region.name.lower()} {found[state]} {region.confidence:.0%}"
        for state, region in sides
        if region.name is not None and region.confidence is not None
    ]
    return "femur localisation confidence: " + ", ".join(parts)
