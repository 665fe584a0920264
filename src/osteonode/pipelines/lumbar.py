"""Lumbar pipeline: BMD of L1-L4 from a frontal lumbar spine film (METHODS.md sections 1 and 4).

Shape: locate -> measure -> decide -> explain.

- locate: a keypoint network finds the bodies T12-L5 and their corners on a downscaled,
  letterboxed copy of the film; a second keypoint network re-finds each body's corners on a crop
  aligned to it (twice), giving each corner's position and confidence. Corners are mapped back to
  source pixels.
- decide (validity): every body found with confidence and inside the film; outlines not inverted,
  body sizes and the gaps between bodies plausible (mm when the pixel spacing is known, relative to
  the film's own bodies otherwise); curvature within limits; no metal (saturated, sharply bounded
  objects) over L1-L4. A film with any of L2-L4 not evaluable is not evaluable as a whole (the
  study's exclusion rule), with the reasons.
- measure: the BMD regressor on a crop aligned to each evaluable vertebra of L1-L4 at a fixed
  physical resolution and on its mirror image, averaged (the model card's calibration scale),
  then the configured cross-calibration to the site's manufacturer, T-scores against the
  configured reference and the ISCD rules of :func:`osteonode.bone.combine_lumbar`.
- explain: Grad-CAM of the regressor on each measured vertebra, pasted back into the film.

Coordinates inside this module are pixel centres ``(x = column, y = row)`` with the centre of the
top-left pixel at (0, 0), the phantoms' convention; :class:`~osteonode.pipelines.base.Region`
outlines follow DICOM SCOORD, where (0, 0) is that pixel's top-left corner, so they are shifted by
half a pixel on the way out. The preprocessing helpers are public because the trainer
(:mod:`osteonode.train.lumbar`) must prepare its inputs exactly as the pipeline does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from osteonode.bone import (
    DxaManufacturer,
    MeasurementSite,
    Sex,
    Vertebra,
    VertebraMeasure,
    combine_lumbar,
    reported_t_score,
    t_score,
    who_applicability,
    who_category,
)
from osteonode.config import IntendedUsePolicy, PipelineSettings
from osteonode.explain import Evidence, grad_cam
from osteonode.imaging.pixels import Radiograph
from osteonode.nets.vertebrae import CROP_SIZE, VertebraCropNet, VertebraKeypointNet
from osteonode.pipelines.base import (
    Finding,
    FindingSite,
    Method,
    OutsideIntendedUse,
    Region,
    Result,
    SourceImage,
    Truth,
)
from osteonode.reference import ReferenceData
from osteonode.zoo import LoadedModel, ModelError

__all__ = [
    "BODIES",
    "DETECTOR_CHANNELS",
    "DETECTOR_SIZE",
    "Detection",
    "LumbarPipeline",
    "PreparedFilm",
    "crop_theta",
    "crop_to_working",
    "decode_bodies",
    "decode_heatmaps",
    "detector_input",
    "prepare_film",
    "sample_crops",
    "working_to_crop",
]

log = structlog.get_logger(__name__)

#: The bodies the detector finds, cranio-caudal; four corners each (TL, TR, BR, BL).
BODIES: tuple[str, ...] = ("T12", "L1", "L2", "L3", "L4", "L5")
#: The vertebrae whose BMD is estimated (ISCD L1-L4).
MEASURED: tuple[Vertebra, ...] = (Vertebra.L1, Vertebra.L2, Vertebra.L3, Vertebra.L4)
#: The study excluded a film whose estimate for any of these was invalid (Inamori et al.).
REQUIRED_FOR_FILM: tuple[str, ...] = ("L2", "L3", "L4")
#: Long side of the working copy every crop is sampled from (pixels); ~0.8 mm at a 43 cm field.
WORKING_LONG_SIDE = 512
#: Side of the detector's square, letterboxed input (pixels).
DETECTOR_SIZE = 128
#: Physical resolution of the aligned crops (mm per crop pixel): 64 pixels cover 70 mm.
CROP_MM_PER_PIXEL = 1.1
#: Typical adult body widths (mm) used to estimate the scale of a film without pixel spacing.
TYPICAL_BODY_WIDTH_MM: Mapping[str, float] = {
    "T12": 38.0,
    "L1": 42.0,
    "L2": 45.0,
    "L3": 48.0,
    "L4": 50.0,
    "L5": 52.0,
}
#: Corner refinement passes on crops (the second starts from the first's result).
REFINEMENT_PASSES = 2

# --- validity limits (why each number: see the check that uses it) ---------------------------
#: Default lowest heat-map peak accepted for a corner when the model card gives none.
DEFAULT_MIN_CORNER_CONFIDENCE = 0.3
#: A corner must lie this far inside the film (mm, or fraction of the median body width).
EDGE_MARGIN_MM = 2.0
#: Plausible body width and height (mm) on an adult AP film at the detector (magnified 1.05-1.3).
BODY_WIDTH_MM = (25.0, 80.0)
BODY_HEIGHT_MM = (12.0, 45.0)
#: Without spacing: body width and height relative to the film's median body.
RELATIVE_SIZE = (0.65, 1.5)
#: Gap between adjacent bodies (endplate to endplate, mm): overlap beyond -1 mm is an inversion or
#: a false detection, more than 25 mm is a missed body or a non-vertebral structure.
GAP_MM = (-1.0, 25.0)
#: Without spacing: the same limits relative to the median body height.
RELATIVE_GAP = (-0.05, 1.0)
#: Largest difference of endplate angles over T12-L5 (degrees). Scoliotic curves distort the
#: projected bodies (rotation, wedging) so the estimator's outlines and areas are unreliable; the
#: limit sits above the variation of straight spines (up to ~15 degrees with lordosis and tilt).
MAX_ENDPLATE_ANGLE_RANGE_DEG = 25.0
#: Metal: pixels brighter than the bone level by more than this multiple of bone-to-soft contrast.
METAL_CONTRAST = 1.0
#: What the film's heat-map shows (:meth:`LumbarPipeline.explain`).
HEATMAP_MEANING = "evidence of lower bone density (Grad-CAM of the BMD estimate, L1-L4)"

#: A vertebra is not evaluable when metal covers more than this share of its (enlarged) outline.
MAX_METAL_FRACTION = 0.12


@dataclass(frozen=True)
class PreparedFilm:
    """A film ready for the networks.

    Attributes
    ----------
    working
        Normalised float32 image (about 0 = dark 1st percentile, 1 = bright 99th), long side at
        most :data:`WORKING_LONG_SIDE`.
    source_shape
        (rows, columns) of the source image.
    spacing_mm
        Working-copy pixel size (mm), None when the film gives no spacing.
    """

    working: np.ndarray
    source_shape: tuple[int, int]
    spacing_mm: float | None

    @property
    def factor(self) -> tuple[float, float]:
        """Working pixels per source pixel, (x, y)."""
        return (
            self.working.shape[1] / self.source_shape[1],
            self.working.shape[0] / self.source_shape[0],
        )

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Working pixel-centre points (..., 2) as source pixel-centre points."""
        return (np.asarray(points, np.float64) + 0.5) / np.asarray(self.factor) - 0.5

    def to_working(self, points: np.ndarray) -> np.ndarray:
        """Source pixel-centre points (..., 2) as working pixel-centre points."""
        return (np.asarray(points, np.float64) + 0.5) * np.asarray(self.factor) - 0.5


def prepare_film(pixels: np.ndarray, spacing_mm: tuple[float, float] | None) -> PreparedFilm:
    """Downscale (anti-aliased) to the working size and normalise by the film's percentiles.

    Parameters
    ----------
    pixels
        Source pixels, bone bright (``Radiograph.pixels``).
    spacing_mm
        (row, column) pixel spacing of the source, or None.

    Returns
    -------
    PreparedFilm
    """
    if pixels.ndim != 2 or min(pixels.shape) < 16:
        raise ValueError(f"expected a 2-D image of at least 16 x 16 pixels, got {pixels.shape}")
    rows, columns = pixels.shape
    scale = min(1.0, WORKING_LONG_SIDE / max(rows, columns))
    shape = (max(1, round(rows * scale)), max(1, round(columns * scale)))
    tensor = torch.from_numpy(np.require(pixels, np.float32, ["C", "W"]))[None, None]
    if shape != (rows, columns):
        tensor = F.interpolate(
            tensor, size=shape, mode="bilinear", align_corners=False, antialias=True
        )
    working = tensor[0, 0].numpy()
    low, high = np.percentile(working[::2, ::2], (1.0, 99.0))
    working = ((working - low) / max(float(high - low), 1e-6)).astype(np.float32)
    spacing = None
    if spacing_mm is not None:
        spacing = float(
            np.mean([spacing_mm[0] * rows / shape[0], spacing_mm[1] * columns / shape[1]])
        )
    return PreparedFilm(working=working, source_shape=(rows, columns), spacing_mm=spacing)


def detector_input(working: np.ndarray, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, float]:
    """The detector's letterboxed input: the working image scaled into the top-left of a square.

    Returns
    -------
    (image, scale)
        float32 (size, size) image, and detector pixels per working pixel.
    """
    rows, columns = working.shape
    scale = size / max(rows, columns)
    shape = (min(size, max(1, round(rows * scale))), min(size, max(1, round(columns * scale))))
    tensor = torch.from_numpy(np.ascontiguousarray(working))[None, None]
    resized = F.interpolate(
        tensor, size=shape, mode="bilinear", align_corners=False, antialias=True
    )
    canvas = np.zeros((size, size), np.float32)
    canvas[: shape[0], : shape[1]] = resized[0, 0].numpy()
    return canvas, scale


#: Detector heat-map channels: body centres, then the four corner types.
CENTRE_CHANNEL = 0
CORNER_CHANNELS = (1, 2, 3, 4)
DETECTOR_CHANNELS = 5
#: Corner directions (along the endplates, caudal) of TL, TR, BR, BL.
_CORNER_SIGNS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
#: Body height and width relative to the distance between adjacent body centres (a body and its
#: disc make one step; the disc is about a quarter of it), for the corner search prior.
_HEIGHT_PER_STEP, _WIDTH_PER_HEIGHT = 0.72, 1.65
#: Centre peaks below this are not even candidates.
_CANDIDATE_LEVEL = 0.05


def _subcell_peak(probabilities: torch.Tensor, row: int, column: int) -> tuple[float, float]:
    """(x, y) in cells of the peak at (row, column), refined by its 3 x 3 centroid.

    The centroid of the probabilities above the neighbourhood's minimum recovers the centre of a
    Gaussian blob to a fraction of a cell.
    """
    height, width = probabilities.shape
    rows = slice(max(row - 1, 0), min(row + 2, height))
    columns = slice(max(column - 1, 0), min(column + 2, width))
    window = probabilities[rows, columns]
    weights = (window - window.min()).clamp_min(0).double()
    total = float(weights.sum())
    if total <= 0:
        return float(column), float(row)
    ys = torch.arange(rows.start, rows.stop, dtype=torch.float64)
    xs = torch.arange(columns.start, columns.stop, dtype=torch.float64)
    return float((weights.sum(0) * xs).sum()) / total, float((weights.sum(1) * ys).sum()) / total


def decode_heatmaps(logits: torch.Tensor, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest peak of each heat-map, sub-cell refined, in input pixel centres.

    Parameters
    ----------
    logits
        (K, h, w) heat-map logits.
    stride
        Input pixels per heat-map cell.

    Returns
    -------
    (points, confidence)
        (K, 2) points ``(x, y)`` and (K,) peak probabilities.
    """
    probabilities = torch.sigmoid(logits.float())
    keypoints, _, width = probabilities.shape
    confidence, index = probabilities.reshape(keypoints, -1).max(dim=1)
    points = np.array(
        [
            _subcell_peak(probabilities[k], int(index[k]) // width, int(index[k]) % width)
            for k in range(keypoints)
        ]
    )
    return (points + 0.5) * stride - 0.5, confidence.numpy()


def decode_bodies(
    logits: torch.Tensor, stride: int, min_confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bodies T12-L5 and their corners from the detector's centre and corner-type heat-maps.

    Levels are counted up from the lowest body (L5, the body above the sacrum): the confident
    centre peaks, in cranio-caudal order, are labelled from the bottom, so a body above T12 that
    looks like one (T11) is not taken for it, and a film cut off at the top misses T12. Each
    corner is the corner-type peak nearest to where the body's centre, the spine's direction and
    the distance between neighbouring bodies put it.

    Parameters
    ----------
    logits
        (5, h, w): body centres, then TL, TR, BR, BL corners.
    stride
        Input pixels per heat-map cell.
    min_confidence
        Lowest centre peak that counts as a body.

    Returns
    -------
    (corners, confidence, found)
        (6, 4, 2) corners in input pixel centres (zeros for a body not found), (6, 4) corner
        heat-map peaks (zeros when not found), and (6,) whether each body was found.
    """
    probabilities = torch.sigmoid(logits.float())
    centres_map = probabilities[CENTRE_CHANNEL]
    is_peak = F.max_pool2d(centres_map[None, None], 3, stride=1, padding=1)[0, 0] == centres_map
    candidates = torch.nonzero(is_peak & (centres_map >= max(min_confidence, _CANDIDATE_LEVEL)))
    peaks = sorted(
        (_subcell_peak(centres_map, int(r), int(c)) for r, c in candidates),
        key=lambda point: point[1],
    )[-len(BODIES) :]
    count = len(peaks)
    corners = np.zeros((len(BODIES), 4, 2))
    confidence = np.zeros((len(BODIES), 4))
    found = np.zeros(len(BODIES), bool)
    if count == 0:
        return corners, confidence, found
    centres = np.array(peaks)
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1) if count > 1 else np.array([4.0])
    for k, centre in enumerate(centres):
        body = len(BODIES) - count + k
        before, after = centres[max(k - 1, 0)], centres[min(k + 1, count - 1)]
        down = after - before if count > 1 else np.array([0.0, 1.0])
        down = down / max(np.linalg.norm(down), 1e-9)
        along = np.array([down[1], -down[0]])
        step = float(np.median(steps[max(k - 1, 0) : k + 1])) if count > 1 else float(steps[0])
        height = _HEIGHT_PER_STEP * step
        width = _WIDTH_PER_HEIGHT * height
        sigma = max(1.0, 0.25 * height)
        rows, columns = probabilities.shape[1:]
        ys = torch.arange(rows, dtype=torch.float64)[:, None]
        xs = torch.arange(columns, dtype=torch.float64)[None, :]
        for corner, (sign_x, sign_y) in enumerate(_CORNER_SIGNS):
            expected = centre + sign_x * width / 2 * along + sign_y * height / 2 * down
            prior = torch.exp(-((xs - expected[0]) ** 2 + (ys - expected[1]) ** 2) / (2 * sigma**2))
            channel = probabilities[CORNER_CHANNELS[corner]].double()
            index = int(torch.argmax(channel * prior))
            row, column = index // columns, index % columns
            corners[body, corner] = _subcell_peak(channel, row, column)
            confidence[body, corner] = float(channel[row, column])
        found[body] = True
    return (corners + 0.5) * stride - 0.5, confidence, found


def _body_axes(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, unit x-axis (along the endplates) and unit y-axis (caudal) of bodies (..., 4, 2)."""
    centre = corners.mean(axis=-2)
    along = (corners[..., 1, :] - corners[..., 0, :]) + (corners[..., 2, :] - corners[..., 3, :])
    along = along / np.maximum(np.linalg.norm(along, axis=-1, keepdims=True), 1e-9)
    down = np.stack([-along[..., 1], along[..., 0]], axis=-1)
    return centre, along, down


def crop_theta(
    corners: np.ndarray, working_spacing_mm: np.ndarray | float, working_shape: tuple[int, int]
) -> torch.Tensor:
    """``affine_grid`` matrices sampling aligned crops from the working image.

    Each crop is centred on a body, rotated so its endplates are horizontal, at
    :data:`CROP_MM_PER_PIXEL`.

    Parameters
    ----------
    corners
        (B, 4, 2) body corners in working pixel centres.
    working_spacing_mm
        Working pixel size (mm), scalar or (B,).
    working_shape
        (rows, columns) of the working image.

    Returns
    -------
    torch.Tensor
        (B, 2, 3) float32.
    """
    centre, along, down = _body_axes(np.asarray(corners, np.float64))
    half = CROP_SIZE / 2 * CROP_MM_PER_PIXEL / np.broadcast_to(working_spacing_mm, centre.shape[:1])
    rows, columns = working_shape
    theta = np.zeros((centre.shape[0], 2, 3))
    theta[:, 0, 0] = 2 * half * along[:, 0] / columns
    theta[:, 0, 1] = 2 * half * down[:, 0] / columns
    theta[:, 0, 2] = (2 * centre[:, 0] + 1) / columns - 1
    theta[:, 1, 0] = 2 * half * along[:, 1] / rows
    theta[:, 1, 1] = 2 * half * down[:, 1] / rows
    theta[:, 1, 2] = (2 * centre[:, 1] + 1) / rows - 1
    return torch.from_numpy(theta.astype(np.float32))


def crop_to_working(
    points: np.ndarray, theta: torch.Tensor, working_shape: tuple[int, int]
) -> np.ndarray:
    """Crop-normalised points (B, P, 2) in [-1, 1] as working pixel centres."""
    matrix = theta.double().numpy()
    homogeneous = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
    grid = np.einsum("bij,bpj->bpi", matrix, homogeneous)
    rows, columns = working_shape
    return np.stack(
        [((grid[..., 0] + 1) * columns - 1) / 2, ((grid[..., 1] + 1) * rows - 1) / 2], -1
    )


def working_to_crop(
    points: np.ndarray, theta: torch.Tensor, working_shape: tuple[int, int]
) -> np.ndarray:
    """Working pixel centres (B, P, 2) as crop-normalised points."""
    rows, columns = working_shape
    grid = np.stack(
        [(2 * points[..., 0] + 1) / columns - 1, (2 * points[..., 1] + 1) / rows - 1], -1
    )
    matrix = theta.double().numpy()
    linear, offset = matrix[:, :, :2], matrix[:, :, 2]
    return np.einsum("bij,bpj->bpi", np.linalg.inv(linear), grid - offset[:, None, :])


def sample_crops(working: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Aligned crops (B, 1, CROP_SIZE, CROP_SIZE) from one (1, 1, H, W) or B working images."""
    if working.shape[0] == 1 and theta.shape[0] > 1:
        working = working.expand(theta.shape[0], -1, -1, -1)
    grid = F.affine_grid(theta, [theta.shape[0], 1, CROP_SIZE, CROP_SIZE], align_corners=False)
    return F.grid_sample(working, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class Detection:
    """Located bodies in working pixel centres.

    Attributes
    ----------
    corners
        Body name -> (4, 2) corners TL, TR, BR, BL.
    confidence
        Body name -> (4,) heat-map peaks of its corners.
    """

    corners: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]


# --- the pipeline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Measured:
    bmd_model: float
    theta: torch.Tensor


class LumbarPipeline:
    """BMD of L1-L4 and the WHO category from one frontal lumbar spine radiograph.

    Build it with :meth:`from_model`; :meth:`run` analyses one film.

    Parameters
    ----------
    model
        The loaded model: networks ``detector``, ``refiner``, ``regressor``; its card names the
        calibration and the confidence limit.
    settings
        ``[pipelines.<name>]``.
    reference
        T-score references and cross-calibrations.
    name
        The configured pipeline's name, written on every result.
    """

    truth: ClassVar[Truth] = Truth.FILM
    site: ClassVar[FindingSite] = FindingSite.LUMBAR_SPINE
    views: ClassVar[tuple[str, ...]] = ("AP", "PA")

    def __init__(
        self,
        model: LoadedModel,
        settings: PipelineSettings,
        reference: ReferenceData,
        name: str = Method.LUMBAR.value,
    ) -> None:
        if not isinstance(model, LoadedModel):
            raise TypeError(f"model must be a LoadedModel, got {type(model).__name__}")
        if not isinstance(settings, PipelineSettings):
            raise TypeError(f"settings must be PipelineSettings, got {type(settings).__name__}")
        if settings.thresholds:
            raise ModelError(
                "the lumbar BMD method decides by T-score (WHO categories), it takes no thresholds"
            )
        if not isinstance(reference, ReferenceData):
            raise TypeError(f"reference must be ReferenceData, got {type(reference).__name__}")
        card = model.card
        if card.pipeline is not Method.LUMBAR:
            raise ModelError(f"model {card.name!r} is for the {card.pipeline} pipeline, not lumbar")
        if card.calibration is None:
            raise ModelError(
                f"model {card.name!r} does not say which DXA calibration its BMD is on"
            )
        self.detector = model["detector"]
        self.refiner = model["refiner"]
        self.regressor = model["regressor"]
        for role, network, kind in (
            ("detector", self.detector, VertebraKeypointNet),
            ("refiner", self.refiner, VertebraKeypointNet),
            ("regressor", self.regressor, VertebraCropNet),
        ):
            if not isinstance(network, kind):
                raise ModelError(f"model {card.name!r}: the {role} is not a {kind.__name__}")
        self.device = model.device
        self.card = card
        self.settings = settings
        self.reference = reference
        self.min_confidence = float(
            card.parameters.get("min_corner_confidence", DEFAULT_MIN_CORNER_CONFIDENCE)
        )
        self.model_calibration = DxaManufacturer(card.calibration)
        self.site_manufacturer = reference.lumbar.site_manufacturer
        self.calibration = reference.lumbar_calibration(self.model_calibration)
        self.identity = card.identity()
        self.name = name

    @classmethod
    def from_model(
        cls,
        model: LoadedModel,
        settings: PipelineSettings,
        reference: ReferenceData,
        *,
        name: str = Method.LUMBAR.value,
    ) -> Self:
        """Build the pipeline from its loaded model, settings and reference data."""
        return cls(model, settings, reference, name)

    # -- run -----------------------------------------------------------------------------------

    def run(self, radiograph: Radiograph) -> Result:
        """Analyse one frontal lumbar spine film.

        Returns
        -------
        Result
            Evaluable with per-vertebra and L1-L4 findings, or not evaluable with the reason.

        Raises
        ------
        OutsideIntendedUse
            When the film is outside the intended use and the policy is ``skip``.
        """
        notes = self._intended_use_notes(radiograph)
        film = prepare_film(radiograph.pixels, radiograph.spacing_mm)
        # The detection and measuring passes need no gradient; only explain's Grad-CAM does.
        with torch.inference_mode():
            detection = self.locate(film)
        problems, film_problems = self.decide(film, detection)
        source = SourceImage.from_radiograph(radiograph)
        failing = [body for body in REQUIRED_FOR_FILM if body in problems]
        if film_problems or failing:
            reasons = list(film_problems) + [f"{body}: {problems[body]}" for body in failing]
            reason = "; ".join(reasons)
            log.info(
                "lumbar_not_evaluable", sop_instance_uid=source.sop_instance_uid, reason=reason
            )
            findings = tuple(
                self._unmeasured_finding(film, detection, body, problems.get(body) or reason)
                for body in (v.value for v in MEASURED)
            )
            return Result(
                pipeline=self.name,
                site=FindingSite.LUMBAR_SPINE,
                source=source,
                model=self.identity,
                evaluable=False,
                reason=reason,
                findings=findings,
                notes=notes,
            )
        with torch.inference_mode():
            measured = self.measure(
                film, detection, [v.value for v in MEASURED if v.value not in problems]
            )
        return self._result(radiograph, film, detection, problems, measured, source, notes)

    # -- locate --------------------------------------------------------------------------------

    def locate(self, film: PreparedFilm) -> Detection:
        """Find and refine the corners of T12-L5 (working pixel centres)."""
        image, scale = detector_input(film.working)
        # float(): under bfloat16 autocast the networks answer in bfloat16, which numpy lacks.
        logits = self.detector(torch.from_numpy(image)[None, None].to(self.device))[0].float().cpu()
        points, confidence, found = decode_bodies(logits, self.detector.stride, self.min_confidence)
        corners = (points + 0.5) / scale - 0.5
        if found.any():
            # The refiner's peaks replace the detector's: they say whether each corner is really
            # there at the finer scale (a corner off the film or under the collimator has none).
            corners[found], confidence[found] = self._refine(
                film, corners[found], [b for b, f in zip(BODIES, found) if f]
            )
        return Detection(
            corners={body: corners[i] for i, body in enumerate(BODIES)},
            confidence={body: confidence[i] for i, body in enumerate(BODIES)},
        )

    def _film_spacing(self, film: PreparedFilm, corners: Mapping[str, np.ndarray]) -> float:
        """Working pixel size (mm): the film's own, else estimated from typical body widths."""
        if film.spacing_mm is not None:
            return film.spacing_mm
        ratios = [
            TYPICAL_BODY_WIDTH_MM[b] / max(float(np.linalg.norm(c[1] - c[0])), 1e-6)
            for b, c in corners.items()
        ]
        return float(np.median(ratios))

    def _refine(
        self, film: PreparedFilm, corners: np.ndarray, bodies: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corners re-found on crops aligned to the current ones, and their heat-map peaks."""
        working = torch.from_numpy(film.working)[None, None].to(self.device)
        spacing = self._film_spacing(film, dict(zip(bodies, corners)))
        for _ in range(REFINEMENT_PASSES):
            theta = crop_theta(corners, spacing, film.working.shape)
            logits = self.refiner(sample_crops(working, theta.to(self.device))).float().cpu()
            decoded = [decode_heatmaps(maps, self.refiner.stride) for maps in logits]
            points = np.stack([p for p, _ in decoded])
            corners = crop_to_working((2 * points + 1) / CROP_SIZE - 1, theta, film.working.shape)
        return corners, np.stack([c for _, c in decoded])

    # -- decide --------------------------------------------------------------------------------

    def decide(self, film: PreparedFilm, detection: Detection) -> tuple[dict[str, str], list[str]]:
        """Validity checks.

        Returns
        -------
        (problems, film_problems)
            Body name -> why it is not evaluable, and reasons that make the whole film not
            evaluable (bodies missing, implausible order or curvature).
        """
        problems: dict[str, str] = {}
        film_problems: list[str] = []
        rows, columns = film.working.shape
        widths = {
            b: float(np.linalg.norm(c[1] - c[0]) + np.linalg.norm(c[2] - c[3])) / 2
            for b, c in detection.corners.items()
        }
        heights = {
            b: float(np.linalg.norm(c[3] - c[0]) + np.linalg.norm(c[2] - c[1])) / 2
            for b, c in detection.corners.items()
        }
        median_width = float(np.median(list(widths.values())))
        margin = EDGE_MARGIN_MM / film.spacing_mm if film.spacing_mm else 0.05 * median_width
        for body in BODIES:
            low = float(detection.confidence[body].min())
            corners = detection.corners[body]
            if not detection.confidence[body].any():
                problems[body] = "not found"
            elif low < self.min_confidence:
                problems[body] = (
                    f"not found with confidence (lowest corner {low:.2f}, needs {self.min_confidence:.2f})"
                )
            elif (
                (corners.min(0) < margin).any()
                or corners[:, 0].max() > columns - 1 - margin
                or corners[:, 1].max() > rows - 1 - margin
            ):
                problems[body] = "extends beyond the edge of the image"
        missing = [b for b in BODIES if b in problems]
        if missing:
            film_problems.append(
                f"not all of T12-L5 found on the film ({', '.join(f'{b} {problems[b]}' for b in missing)});"
                " the vertebral levels cannot be confirmed"
            )
            return problems, film_problems
        problems.update(self._shape_problems(film, widths, heights, detection))
        film_problems.extend(self._alignment_problems(film, detection, heights))
        for body in (v.value for v in MEASURED):
            if body not in problems:
                fraction = metal_fraction(film.working, detection.corners, body)
                if fraction > MAX_METAL_FRACTION:
                    problems[body] = (
                        f"metal or another saturated, sharply bounded object over the vertebral body"
                        f" ({fraction:.0%} of its outline)"
                    )
        return problems, film_problems

    def _shape_problems(
        self,
        film: PreparedFilm,
        widths: dict[str, float],
        heights: dict[str, float],
        detection: Detection,
    ) -> dict[str, str]:
        problems: dict[str, str] = {}
        median_width = float(np.median(list(widths.values())))
        median_height = float(np.median(list(heights.values())))
        for body, c in detection.corners.items():
            tl, tr, br, bl = c
            edges = np.roll(c, -1, axis=0) - c
            turns = (
                edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1]
                - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
            )
            if (
                not (tl[0] < tr[0] and bl[0] < br[0] and tl[1] < bl[1] and tr[1] < br[1])
                or not (turns > 0).all()
            ):
                problems[body] = "outline inverted or not convex (detection failed)"
                continue
            if film.spacing_mm is not None:
                width_mm, height_mm = (
                    widths[body] * film.spacing_mm,
                    heights[body] * film.spacing_mm,
                )
                if not BODY_WIDTH_MM[0] <= width_mm <= BODY_WIDTH_MM[1]:
                    problems[body] = (
                        f"implausible body width {width_mm:.0f} mm (expected {BODY_WIDTH_MM[0]:.0f}-{BODY_WIDTH_MM[1]:.0f} mm)"
                    )
                elif not BODY_HEIGHT_MM[0] <= height_mm <= BODY_HEIGHT_MM[1]:
                    problems[body] = (
                        f"implausible body height {height_mm:.0f} mm (expected {BODY_HEIGHT_MM[0]:.0f}-{BODY_HEIGHT_MM[1]:.0f} mm)"
                    )
            else:
                for label, value, median in (
                    ("width", widths[body], median_width),
                    ("height", heights[body], median_height),
                ):
                    ratio = value / max(median, 1e-9)
                    if not RELATIVE_SIZE[0] <= ratio <= RELATIVE_SIZE[1]:
                        problems[body] = (
                            f"body {label} {ratio:.2f} times the film's median (expected {RELATIVE_SIZE[0]}-{RELATIVE_SIZE[1]})"
                        )
                        break
        return problems

    def _alignment_problems(
        self, film: PreparedFilm, detection: Detection, heights: dict[str, float]
    ) -> list[str]:
        problems = []
        median_height = float(np.median(list(heights.values())))
        for upper, lower in itertools.pairwise(BODIES):
            a, b = detection.corners[upper], detection.corners[lower]
            _, _, down = _body_axes(np.stack([a, b]))
            axis = down.mean(0) / np.linalg.norm(down.mean(0))
            gap = float((b[[0, 1]].mean(0) - a[[3, 2]].mean(0)) @ axis)
            if film.spacing_mm is not None:
                value, limits, unit = gap * film.spacing_mm, GAP_MM, "mm"
            else:
                value, limits, unit = gap / max(median_height, 1e-9), RELATIVE_GAP, "body heights"
            if value < limits[0]:
                problems.append(
                    f"{upper} and {lower} overlap or are out of order (gap {value:.1f} {unit})"
                )
            elif value > limits[1]:
                problems.append(
                    f"gap between {upper} and {lower} too large ({value:.1f} {unit}, limit {limits[1]:g})"
                )
        angles = [endplate_angle(detection.corners[b]) for b in BODIES]
        spread = max(angles) - min(angles)
        if spread > MAX_ENDPLATE_ANGLE_RANGE_DEG:
            problems.append(
                f"spinal curvature too strong for reliable outlines (endplate angles differ by {spread:.0f} degrees"
                f" over T12-L5, limit {MAX_ENDPLATE_ANGLE_RANGE_DEG:.0f})"
            )
        return problems

    # -- measure -------------------------------------------------------------------------------

    def measure(
        self, film: PreparedFilm, detection: Detection, bodies: Sequence[str]
    ) -> dict[str, _Measured]:
        """BMD (model calibration, g/cm2) of each named body from its aligned crop.

        The estimate is the mean of the regressor on the crop and on its mirror image: it trains
        on both orientations, and the mean of the two is steadier than either (on held-out
        phantoms it raised the correlation with the truth by about 0.003 and the WHO agreement
        by about 0.015 in quadratic-weighted kappa).
        """
        if not bodies:
            return {}
        corners = np.stack([detection.corners[b] for b in bodies])
        spacing = self._film_spacing(film, detection.corners)
        theta = crop_theta(corners, spacing, film.working.shape)
        working = torch.from_numpy(film.working)[None, None].to(self.device)
        crops = sample_crops(working, theta.to(self.device))
        values = self.regressor(torch.cat([crops, crops.flip(-1)]))[:, 0].float().cpu().numpy()
        values = values.reshape(2, len(bodies)).mean(axis=0)
        return {b: _Measured(float(values[i]), theta[i : i + 1]) for i, b in enumerate(bodies)}

    # -- explain -------------------------------------------------------------------------------

    def explain(self, film: PreparedFilm, measured: Mapping[str, _Measured]) -> np.ndarray:
        """Grad-CAM of what lowers the regressor's BMD on each measured vertebra, in the source frame.

        The map shows evidence of *low* density, so an osteoporotic film shows where the model
        found it (the map of what raises BMD is nearly empty on such a film).
        """
        rows, columns = film.working.shape
        working = torch.from_numpy(film.working)[None, None].to(self.device)
        theta = torch.cat([m.theta for m in measured.values()])
        crops = sample_crops(working, theta.to(self.device))
        cams = grad_cam(self.regressor, crops, self.regressor.gradcam_layer, 0, Evidence.LOWERING)
        cams = torch.from_numpy(cams)
        ys, xs = np.mgrid[0:rows, 0:columns]
        pixels = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
        local = working_to_crop(
            np.broadcast_to(pixels, (len(cams),) + pixels.shape), theta, (rows, columns)
        )
        grid = torch.from_numpy(local.astype(np.float32)).reshape(len(cams), rows, columns, 2)
        pasted = F.grid_sample(
            cams[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        combined = pasted.amax(dim=0, keepdim=True)
        full = F.interpolate(combined, size=film.source_shape, mode="bilinear", align_corners=False)
        return full[0, 0].clamp(0.0, 1.0).numpy().astype(np.float32)

    # -- result --------------------------------------------------------------------------------

    def _result(
        self,
        radiograph: Radiograph,
        film: PreparedFilm,
        detection: Detection,
        problems: Mapping[str, str],
        measured: Mapping[str, _Measured],
        source: SourceImage,
        notes: tuple[str, ...],
    ) -> Result:
        sex, sex_note = self._reference_sex(radiograph)
        reference = self.reference.young_adult(
            self.site_manufacturer, MeasurementSite.LUMBAR_L1_L4, sex
        )
        site_bmd = {b: self.calibration.apply(m.bmd_model) for b, m in measured.items()}
        measures = []
        for vertebra in MEASURED:
            body = vertebra.value
            if body in site_bmd and site_bmd[body] > 0:
                measures.append(
                    VertebraMeasure(vertebra, site_bmd[body], t_score(site_bmd[body], reference))
                )
            else:
                reason = problems.get(
                    body, f"estimated BMD {site_bmd.get(body, 0.0):.3f} g/cm2 is not positive"
                )
                measures.append(
                    VertebraMeasure(vertebra, None, None, evaluable=False, reason=reason)
                )
        summary = combine_lumbar(measures, reference)
        excluded = {e.label.value: e.reason for e in summary.excluded}
        findings = []
        for measure in measures:
            body = measure.label.value
            region = self._region(film, detection.corners[body])
            if not measure.evaluable:
                findings.append(
                    Finding(
                        body,
                        FindingSite(body),
                        evaluable=False,
                        included=False,
                        reason=measure.reason,
                        region=region,
                    )
                )
                continue
            findings.append(
                Finding(
                    body,
                    FindingSite(body),
                    included=body not in excluded,
                    reason=excluded.get(body),
                    bmd_g_cm2=round(measure.bmd, 3),
                    t_score=reported_t_score(measure.t_score),
                    category=(who_category(measure.t_score)),
                    region=region,
                )
            )
        calibration_note = (
            f"BMD estimated on the {self.model_calibration} scale and converted to {self.site_manufacturer}:"
            f" {self.calibration.slope:g} x BMD {self.calibration.intercept:+g} ({self.calibration.source})"
            if not self.calibration.is_identity
            else f"BMD on the {self.model_calibration} scale (the site's manufacturer); no conversion"
        )
        reference_note = (
            f"T-scores against the {reference.manufacturer} L1-L4 young-adult reference for sex {reference.sex}"
            f" (mean {reference.mean:g}, SD {reference.sd:g} g/cm2; {reference.source})"
        )
        notes = (
            *notes,
            *((sex_note,) if sex_note else ()),
            calibration_note,
            reference_note,
            *summary.notes,
        )
        if not summary.evaluable:
            return Result(
                pipeline=self.name,
                site=FindingSite.LUMBAR_SPINE,
                source=source,
                model=self.identity,
                evaluable=False,
                reason=summary.reason,
                findings=tuple(findings),
                notes=notes,
            )
        assert summary.category is not None  # an evaluable summary always has one
        category = (summary.category)
        centres = [
            tuple(float(v) for v in film.to_source(detection.corners[v.value].mean(0)) + 0.5)
            for v in summary.included
        ]
        findings.append(
            Finding(
                "L1-L4",
                FindingSite.LUMBAR_SPINE,
                bmd_g_cm2=round(summary.bmd, 3),
                t_score=summary.reported_t_score,
                category=category,
                region=Region(tuple(centres), closed=False),
            )
        )
        heatmap = self.explain(
            film, {b: m for b, m in measured.items() if b in {v.value for v in summary.included}}
        )
        return Result(
            pipeline=self.name,
            site=FindingSite.LUMBAR_SPINE,
            source=source,
            model=self.identity,
            evaluable=True,
            category=category,
            t_score=summary.reported_t_score,
            findings=tuple(findings),
            notes=notes,
            heatmap=heatmap,
            heatmap_meaning=HEATMAP_MEANING,
        )

    def _unmeasured_finding(
        self, film: PreparedFilm, detection: Detection, body: str, reason: str
    ) -> Finding:
        corners = detection.corners[body]
        inside = float(detection.confidence[body].min()) >= self.min_confidence
        region = self._region(film, corners) if inside else None
        return Finding(
            body, FindingSite(body), evaluable=False, included=False, reason=reason, region=region
        )

    def _region(self, film: PreparedFilm, corners: np.ndarray) -> Region | None:
        source = film.to_source(corners) + 0.5  # pixel centres -> SCOORD (pixel corner origin)
        rows, columns = film.source_shape
        source[:, 0] = source[:, 0].clip(0.0, columns)
        source[:, 1] = source[:, 1].clip(0.0, rows)
        points = tuple((float(x), float(y)) for x, y in source)
        try:
            return Region(points)
        except ValueError:
            return None

    def _reference_sex(self, radiograph: Radiograph) -> tuple[Sex, str | None]:
        sex = radiograph.facts.patient_sex
        if sex in (Sex.FEMALE, Sex.MALE):
            return sex, None
        described = "unknown" if sex is Sex.UNKNOWN else "recorded as other"
        return Sex.FEMALE, f"sex {described}: the female young-adult reference was assumed"

    def _intended_use_notes(self, radiograph: Radiograph) -> tuple[str, ...]:
        facts = radiograph.facts
        outside = []
        if facts.view == "LATERAL":
            outside.append("the view is lateral; the method is for frontal (AP/PA) lumbar films")
        if facts.patient_age_years is not None and facts.patient_age_years < 50:
            outside.append(
                f"patient aged {facts.patient_age_years}; the WHO categories apply to postmenopausal women"
                " and men aged 50 or over"
            )
        if outside and self.settings.outside_intended_use is IntendedUsePolicy.SKIP:
            raise OutsideIntendedUse("; ".join(outside))
        sex = facts.patient_sex
        applicability = [
            n
            for n in who_applicability(facts.patient_age_years, sex)
            if facts.patient_age_years is None
            or facts.patient_age_years >= 50
            or "under 50" not in n
        ]
        return tuple(
            dict.fromkeys([*(f"outside intended use: {o}" for o in outside), *applicability])
        )




def endplate_angle(corners: np.ndarray) -> float:
    """Angle of a body's endplates to the image rows (degrees, clockwise positive)."""
    _, along, _ = _body_axes(np.asarray(corners, np.float64))
    return math.degrees(math.atan2(along[1], along[0]))


def metal_fraction(working: np.ndarray, corners: Mapping[str, np.ndarray], body: str) -> float:
    """Share of a body's outline (enlarged by 15%) covered by metal-bright pixels.

    Metal (screws, rods, clips) attenuates far more than bone: on the film it is brighter than
    any vertebral bone. The bone level is the median over T12-L5 of each body's 75th percentile
    (robust to metal over a few of them), the soft-tissue level the 20th percentile around the
    spine; a pixel brighter than the bone level by :data:`METAL_CONTRAST` times the bone-to-soft
    contrast counts as metal.

    Parameters
    ----------
    working
        Normalised working image.
    corners
        Corners of every body (working pixel centres).
    body
        The body to check.

    Returns
    -------
    float
        Fraction in [0, 1].
    """
    rows, columns = working.shape

    def mask(points: np.ndarray, enlarge: float) -> np.ndarray:
        centre = points.mean(0)
        polygon = centre + (points - centre) * enlarge + 0.5
        canvas = Image.new("1", (columns, rows), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon], fill=1)
        return np.asarray(canvas, dtype=bool)

    bone_levels = []
    around = np.zeros(working.shape, bool)
    for points in corners.values():
        inner = mask(points, 0.8)
        if inner.sum() >= 5:
            bone_levels.append(float(np.percentile(working[inner], 75)))
        around |= mask(points, 1.8)
    region = mask(corners[body], 1.15)
    if not bone_levels or not region.any():
        return 0.0
    bone = float(np.median(bone_levels))
    soft = float(np.percentile(working[around], 20))
    threshold = bone + METAL_CONTRAST * max(bone - soft, 1e-6)
    return float((working[region] > threshold).mean())
