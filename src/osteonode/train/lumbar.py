"""Train the lumbar pipeline's three networks from a cohort (DICOM files + ground-truth table).

The cohort table has the phantom format (:func:`osteonode.phantoms.read_cohort`): per film the
corners of T12-L5 in source pixels and the BMD of L1-L4, on the DXA scale its ``bmd_manufacturer``
column names; that scale becomes the model card's ``calibration``. Every
film is decoded once and prepared exactly as :class:`~osteonode.pipelines.lumbar.LumbarPipeline`
prepares it; then, with the shared loop :func:`osteonode.train.loop.fit`:

1. the detector learns Gaussian heat-maps of the body centres and the four corner types on
   augmented, letterboxed copies (points off the film get no peak, so a low peak says "not
   there");
2. the refiner learns heat-maps of a body's four corners on crops aligned to deliberately
   misplaced corners (the detector's typical error and more), bodies partly off the film
   included;
3. the BMD regressor learns L1-L4 BMD on crops aligned to nearly true corners (the refiner's
   typical error), from films without implants, curvature or cropping, with a learning rate
   stepped down in phases (:data:`REGRESSOR_PHASES`).

The finished model is written with :func:`osteonode.zoo.save_model`, then loaded back and run as
the pipeline on the validation films; those end-to-end figures go into the model card.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from torch import nn

from osteonode.bone import (
    DxaManufacturer,
    MeasurementSite,
    Vertebra,
    VertebraMeasure,
    combine_lumbar,
    t_score,
)
from osteonode.config import PipelineSettings
from osteonode.evaluate.metrics import (
    cohen_kappa,
    normalized_root_mean_squared_error,
    pearson_correlation,
)
from osteonode.imaging import load_radiograph
from osteonode.nets.vertebrae import CROP_SIZE, vertebra_crop_net, vertebra_keypoint_net
from osteonode.phantoms import read_cohort
from osteonode.phantoms.cohort import PhantomRecord
from osteonode.pipelines.base import Method
from osteonode.pipelines.lumbar import (
    BODIES,
    CROP_MM_PER_PIXEL,
    DETECTOR_CHANNELS,
    DETECTOR_SIZE,
    LumbarPipeline,
    crop_theta,
    decode_bodies,
    decode_heatmaps,
    detector_input,
    prepare_film,
    sample_crops,
    working_to_crop,
)
from osteonode.reference import ReferenceData, load_reference
from osteonode.train import DemoRecipe
from osteonode.train.loop import FitOutcome, TrainingSettings, fit, split_indices
from osteonode.zoo import ModelCard, NetworkEntry, load_model, read_model_card, save_model

__all__ = ["DEMO_RECIPE", "LumbarCohortError", "train"]

log = structlog.get_logger(__name__)

#: 1200 phantoms rather than 640: the BMD regressor's error is mostly each film's exposure and
#: processing, which scale the bone contrast of all its vertebrae alike, so it needs many films;
#: on held-out phantoms 640 gave r 0.967 and WHO kappa 0.88, 1200 give r 0.98 and kappa 0.94.
DEMO_RECIPE = DemoRecipe(
    phantoms=1200,
    size=640,
    seed=1201,
    hard_fraction=0.25,
    settings=TrainingSettings(
        epochs=14,
        batch_size=16,
        learning_rate=2e-3,
        weight_decay=1e-4,
        patience=5,
        seed=0,
        validation_fraction=0.15,
    ),
    name="lumbar-demo",
    version="0.1.0",
)

#: Keypoint heat-map Gaussian (heat-map cells).
HEATMAP_SIGMA = 1.0
#: Heat-map loss weight on the peaks: corners are a tiny share of the pixels.
PEAK_WEIGHT = 20.0
#: Detector augmentation: scale, rotation (degrees), shift (detector pixels), intensity gain/offset.
DETECTOR_JITTER = {"scale": 0.1, "rotation": 6.0, "shift": 10.0, "gain": 0.1, "offset": 0.05}
#: Refiner training: misplacement of the starting corners (SDs): shift mm, rotation deg, scale,
#: per-corner mm.
REFINER_JITTER = (3.0, 3.0, 0.06, 1.0)
#: Regressor training: the refiner's typical residual error (same order as above).
REGRESSOR_JITTER = (0.8, 1.5, 0.02, 0.4)
#: The regressor's learning-rate schedule: per phase (epochs as a multiple of the settings'
#: epochs, factor on the learning rate); one resumable fit per phase, each starting from the
#: previous phase's best weights. At a constant rate its validation RMSE kept jumping between
#: epochs (0.10-0.26 g/cm2) and the best epoch stayed near r 0.8 on held-out phantoms; stepping
#: the rate down over about three times the epochs lets it settle (r 0.97 on the same films).
REGRESSOR_PHASES = ((0.75, 1.0), (0.75, 0.4), (0.75, 0.15), (0.75, 0.04))
#: Software Versions written by the phantom generator (how a synthetic cohort is recognised).
PHANTOM_SOFTWARE = "osteonode-phantoms"
#: The keypoint network's widths and the crop networks' shape, recorded in the card.
DETECTOR_OPTIONS = {"keypoints": DETECTOR_CHANNELS, "widths": [16, 24, 32, 48]}
CROP_OPTIONS = {"widths": [12, 24, 32, 48], "hidden": 96}
REFINER_OPTIONS = {"keypoints": 4, "widths": [16, 24, 32]}
MEASURED = ("L1", "L2", "L3", "L4")


class LumbarCohortError(ValueError):
    """A cohort that cannot train the lumbar networks (wrong part, too few usable films)."""


@dataclass
class _Film:
    """One decoded, prepared film of the cohort with its truth in working pixel centres."""

    stack: torch.Tensor  # (N, 1, H, W): the working images of all films of this shape
    row: int  # this film's index in ``stack``
    spacing_mm: float
    detector: torch.Tensor  # (1, S, S)
    detector_scale: float
    corners: np.ndarray  # (6, 4, 2) working pixel centres
    visible: np.ndarray  # (6, 4) corner inside the film
    bmd: np.ndarray  # (4,) L1-L4, model calibration
    clean: bool  # no hard case: usable for BMD
    synthetic: bool

    @property
    def working(self) -> torch.Tensor:
        """The working image, (1, 1, H, W)."""
        return self.stack[self.row : self.row + 1]


def _load_film(record: PhantomRecord) -> _Film:
    radiograph = load_radiograph(record.file)
    spacing = radiograph.spacing_mm or (record.spacing_mm, record.spacing_mm)
    film = prepare_film(radiograph.pixels, spacing)
    corners = film.to_working(np.stack([record.corners[b] for b in BODIES]))
    rows, columns = film.working.shape
    visible = (
        (corners[..., 0] >= 0)
        & (corners[..., 0] <= columns - 1)
        & (corners[..., 1] >= 0)
        & (corners[..., 1] <= rows - 1)
    )
    image, scale = detector_input(film.working)
    software = str(getattr(radiograph.header, "SoftwareVersions", "") or "")
    return _Film(
        stack=torch.from_numpy(film.working)[None, None],
        row=0,
        spacing_mm=float(film.spacing_mm),
        detector=torch.from_numpy(image)[None],
        detector_scale=scale,
        corners=corners,
        visible=visible,
        bmd=np.array([record.bmd[f"bmd_{v}"] for v in MEASURED]),
        clean=record.evaluable,
        synthetic=PHANTOM_SOFTWARE in software,
    )


def load_films(records: list[PhantomRecord], show_progress: bool = False) -> list[_Film]:
    """Decode and prepare every film once (the in-memory training cache)."""
    from rich.progress import track

    items: Iterable[PhantomRecord] = records
    if show_progress:
        items = track(records, description="decoding cohort")
    films = [_load_film(record) for record in items]
    # One tensor per image shape: crop batches then gather rows instead of concatenating copies.
    for shape in {tuple(f.stack.shape) for f in films}:
        members = [f for f in films if tuple(f.stack.shape) == shape]
        stack = torch.cat([f.stack for f in members])
        for row, member in enumerate(members):
            member.stack, member.row = stack, row
    return films


def _batches(
    indices: np.ndarray, size: int, rng: np.random.Generator | None
) -> Iterator[np.ndarray]:
    order = rng.permutation(indices) if rng is not None else indices
    for start in range(0, len(order), size):
        yield order[start : start + size]


# --- detector ------------------------------------------------------------------------------------


def _gaussians(points: np.ndarray, present: np.ndarray, size: int, stride: int) -> np.ndarray:
    """One Gaussian heat-map per point (K, size/stride, size/stride); absent points get none."""
    cells = size // stride
    axis = np.arange(cells)
    centre = (np.asarray(points, np.float64) + 0.5) / stride - 0.5
    gx = np.exp(-0.5 * ((axis[None, :] - centre[:, 0:1]) / HEATMAP_SIGMA) ** 2)
    gy = np.exp(-0.5 * ((axis[None, :] - centre[:, 1:2]) / HEATMAP_SIGMA) ** 2)
    return (
        gy[:, :, None] * gx[:, None, :] * np.asarray(present, np.float64)[:, None, None]
    ).astype(np.float32)


def _heatmap_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against Gaussian targets, the peaks weighted up (they are rare)."""
    weights = 1.0 + PEAK_WEIGHT * targets
    return (F.binary_cross_entropy_with_logits(outputs, targets, reduction="none") * weights).mean()


def _heatmaps(points: np.ndarray, visible: np.ndarray, size: int, stride: int) -> torch.Tensor:
    """Detector targets for one film: body-centre and corner-type Gaussians.

    Parameters
    ----------
    points
        (6, 4, 2) body corners TL, TR, BR, BL in detector-input pixel centres.
    visible
        (6, 4) whether each corner is on the film.

    Returns
    -------
    torch.Tensor
        (5, size/stride, size/stride): centres (of bodies with at least half their corners on
        the film), then the TL, TR, BR, BL corners of all bodies.
    """
    channels = [_gaussians(points.mean(axis=1), visible.sum(axis=1) >= 2, size, stride).max(axis=0)]
    channels += [
        _gaussians(points[:, corner], visible[:, corner], size, stride).max(axis=0)
        for corner in range(4)
    ]
    return torch.from_numpy(np.stack(channels))


#: Corner order after a horizontal flip: TL <-> TR, BR <-> BL within every body.
_FLIP_ORDER = np.array([[4 * b + c for c in (1, 0, 3, 2)] for b in range(len(BODIES))]).ravel()
#: Missing or extra bodies count as this error (detector pixels) in the validation metric.
_MISSED_BODY_ERROR = 20.0


class DetectorTask:
    """Heat-map training of the keypoint network on letterboxed films."""

    metric_name = "negative mean corner error of decoded bodies (detector pixels)"

    def __init__(
        self, films: list[_Film], train: np.ndarray, validation: np.ndarray, batch_size: int
    ) -> None:
        self.films, self.train, self.validation, self.batch_size = (
            films,
            train,
            validation,
            batch_size,
        )
        self.stride = 2

    def _batch(
        self, indices: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = [], []
        for i in indices:
            film = self.films[i]
            points = (
                film.corners.reshape(-1, 2) * film.detector_scale + (film.detector_scale - 1) / 2
            )
            visible = film.visible.ravel().astype(np.float64)
            image = film.detector
            if rng is not None:
                image, points, visible = self._augment(image, points, visible, rng)
            inside = (points >= 0).all(1) & (points <= DETECTOR_SIZE - 1).all(1)
            images.append(image)
            shown = (visible * inside).reshape(len(BODIES), 4)
            targets.append(
                _heatmaps(points.reshape(len(BODIES), 4, 2), shown, DETECTOR_SIZE, self.stride)
            )
        return torch.stack(images), torch.stack(targets)

    def _augment(
        self, image: torch.Tensor, points: np.ndarray, visible: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        j = DETECTOR_JITTER
        scale = 1.0 + rng.uniform(-j["scale"], j["scale"])
        angle = math.radians(rng.uniform(-j["rotation"], j["rotation"]))
        shift = rng.uniform(-j["shift"], j["shift"], 2)
        flip = rng.random() < 0.5
        centre = (DETECTOR_SIZE - 1) / 2
        rotation = (
            np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
            * scale
        )
        if flip:
            rotation = rotation @ np.diag([-1.0, 1.0])
        # Output point = rotation @ (input - centre) + centre + shift; sample with the inverse.
        inverse = np.linalg.inv(rotation)
        offset = -inverse @ (np.array([centre, centre]) + shift) + centre
        # Pixel centre p and normalised g relate as p = half * g + centre.
        half = DETECTOR_SIZE / 2
        theta = np.zeros((2, 3))
        theta[:, :2] = inverse
        theta[:, 2] = (inverse @ np.array([centre, centre]) + offset - centre) / half
        grid = F.affine_grid(
            torch.from_numpy(theta[None].astype(np.float32)),
            [1, 1, DETECTOR_SIZE, DETECTOR_SIZE],
            align_corners=False,
        )
        warped = F.grid_sample(
            image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
        warped = warped * (1.0 + rng.uniform(-j["gain"], j["gain"])) + rng.uniform(
            -j["offset"], j["offset"]
        )
        moved = (points - centre) @ rotation.T + centre + shift
        if flip:
            moved, visible = moved[_FLIP_ORDER], visible[_FLIP_ORDER]
        return warped, moved, visible

    def train_batches(
        self, epoch: int, rng: np.random.Generator
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return [self._batch(b, rng) for b in _batches(self.train, self.batch_size, rng)]

    def validation_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return [self._batch(b, None) for b in _batches(self.validation, self.batch_size, None)]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _heatmap_loss(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        errors = []
        for output, target in zip(outputs, targets):
            found, _, found_mask = decode_bodies(output, self.stride, 0.3)
            truth, _, truth_mask = decode_bodies(
                torch.logit(target.clamp(1e-4, 1 - 1e-4)), self.stride, 0.3
            )
            for body in range(len(BODIES)):
                if found_mask[body] and truth_mask[body]:
                    errors.append(float(np.linalg.norm(found[body] - truth[body], axis=-1).mean()))
                elif found_mask[body] or truth_mask[body]:
                    errors.append(_MISSED_BODY_ERROR)
        return -float(np.mean(errors)) if errors else 0.0


# --- crop tasks ---------------------------------------------------------------------------------


def _jitter(
    corners: np.ndarray,
    spacing_mm: float,
    jitter: tuple[float, float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Misplace a body's corners (4, 2): shift, rotation and scale about its centre, per-corner noise."""
    shift_mm, rotation_deg, scale_sd, corner_mm = jitter
    centre = corners.mean(0)
    angle = math.radians(rng.normal(0.0, rotation_deg))
    scale = 1.0 + rng.normal(0.0, scale_sd)
    rotation = (
        np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    )
    moved = (corners - centre) @ rotation.T + centre + rng.normal(0.0, shift_mm, 2) / spacing_mm
    return moved + rng.normal(0.0, corner_mm, (4, 2)) / spacing_mm


class _CropTask(abc.ABC):
    """Crops of (film, body) samples aligned to jittered corners."""

    jitter: tuple[float, float, float, float]
    #: Share of the training samples drawn (afresh) for each epoch.
    share_per_epoch: float = 1.0

    def __init__(
        self,
        films: list[_Film],
        train: list[tuple[int, int]],
        validation: list[tuple[int, int]],
        batch_size: int,
    ) -> None:
        self.films, self.batch_size = films, batch_size
        self.train, self.validation = np.array(train), np.array(validation)
        self._validation_rng_seed = 12345

    def _crops(
        self, samples: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Crops aligned to jittered corners, sampled in one call per working-image shape."""
        thetas = []
        for film_index, body in samples:
            film = self.films[film_index]
            start = _jitter(film.corners[body], film.spacing_mm, self.jitter, rng)
            thetas.append(crop_theta(start[None], film.spacing_mm, tuple(film.working.shape[-2:])))
        crops = torch.zeros(len(samples), 1, CROP_SIZE, CROP_SIZE)
        stacks = {id(self.films[f].stack): self.films[f].stack for f, _ in samples}
        for key, stack in stacks.items():
            group = [k for k, (f, _) in enumerate(samples) if id(self.films[f].stack) == key]
            rows = torch.tensor([self.films[samples[k][0]].row for k in group])
            crops[group] = sample_crops(stack[rows], torch.cat([thetas[k] for k in group]))
        return crops, thetas

    def train_batches(
        self, epoch: int, rng: np.random.Generator
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        count = max(1, round(len(self.train) * self.share_per_epoch))
        order = rng.permutation(len(self.train))[:count]
        return [
            self._batch(self.train[order[s : s + self.batch_size]], rng, True)
            for s in range(0, count, self.batch_size)
        ]

    def validation_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self._validation_rng_seed)
        return [
            self._batch(self.validation[s : s + self.batch_size], rng, False)
            for s in range(0, len(self.validation), self.batch_size)
        ]

    @abc.abstractmethod
    def _batch(
        self, samples: np.ndarray, rng: np.random.Generator, augment: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of one batch of (film, body) samples."""


class RefinerTask(_CropTask):
    """Corner heat-maps of a body on a crop aligned to misplaced corners."""

    metric_name = "negative mean corner error (mm)"
    jitter = REFINER_JITTER
    # Six bodies of a film look alike to the refiner; a third of them per epoch is plenty.
    share_per_epoch = 1 / 3
    stride = 2

    def _batch(
        self, samples: np.ndarray, rng: np.random.Generator, augment: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crops, thetas = self._crops(samples, rng)
        targets = []
        for (film_index, body), theta in zip(samples, thetas):
            film = self.films[film_index]
            local = working_to_crop(
                film.corners[body][None], theta, tuple(film.working.shape[-2:])
            )[0]
            pixels = ((local + 1) * CROP_SIZE - 1) / 2
            inside = film.visible[body] & (pixels >= 0).all(1) & (pixels <= CROP_SIZE - 1).all(1)
            targets.append(_gaussians(pixels, inside, CROP_SIZE, self.stride))
        return crops, torch.from_numpy(np.stack(targets))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _heatmap_loss(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        errors = []
        for output, target in zip(outputs, targets):
            present = target.flatten(1).amax(1) > 0.5
            found, _ = decode_heatmaps(output, self.stride)
            truth, _ = decode_heatmaps(torch.logit(target.clamp(1e-4, 1 - 1e-4)), self.stride)
            errors.extend(np.linalg.norm(found - truth, axis=1)[present.numpy()])
        return -float(np.mean(errors)) * CROP_MM_PER_PIXEL if errors else 0.0


class RegressorTask(_CropTask):
    """BMD (model calibration) of L1-L4 from crops aligned to nearly true corners."""

    metric_name = "negative RMSE of BMD (g/cm2)"
    jitter = REGRESSOR_JITTER

    def __init__(
        self,
        films: list[_Film],
        train: list[tuple[int, int]],
        validation: list[tuple[int, int]],
        batch_size: int,
        *,
        scale: float,
    ) -> None:
        super().__init__(films, train, validation, batch_size)
        self.scale = scale

    def _batch(
        self, samples: np.ndarray, rng: np.random.Generator, augment: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crops, _ = self._crops(samples, rng)
        if augment:
            flips = torch.from_numpy(rng.random(len(crops)) < 0.5)
            crops = torch.where(flips[:, None, None, None], crops.flip(-1), crops)
        targets = [self.films[f].bmd[body - BODIES.index("L1")] for f, body in samples]
        return crops, torch.tensor(targets, dtype=torch.float32)[:, None]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs / self.scale, targets / self.scale)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return -float(torch.sqrt(F.mse_loss(outputs, targets)))


# --- the trainer -----------------------------------------------------------------------------------


def _initialise(networks: dict[str, nn.Module], init: Path | None) -> None:
    """Start from a previous lumbar model (its model.toml or folder) when ``init`` is given."""
    if init is None:
        return
    folder = init.parent if init.is_file() else init
    previous = load_model(folder, device="cpu")
    if previous.card.pipeline is not Method.LUMBAR:
        raise LumbarCohortError(f"--init {init}: not a lumbar model folder")
    for role, network in networks.items():
        network.load_state_dict(previous[role].state_dict())


def _cohort_calibration(cohort: Path, records: list[PhantomRecord]) -> DxaManufacturer:
    """The DXA scale of the cohort's BMD, which becomes the model's calibration.

    Raises
    ------
    LumbarCohortError
        When the cohort does not name one scale for all its films.
    """
    scales = {record.bmd_manufacturer for record in records}
    choices = ", ".join(m.value for m in DxaManufacturer)
    if len(scales) != 1 or None in scales:
        raise LumbarCohortError(
            f"cohort {cohort} must name the DXA scale of its BMD values in a bmd_manufacturer"
            f" column, one of {choices}, the same for every film (found {sorted(map(str, scales))})"
        )
    try:
        return DxaManufacturer(scales.pop())
    except ValueError as error:
        raise LumbarCohortError(
            f"cohort {cohort}: bmd_manufacturer must be one of {choices}: {error}"
        ) from None


def train(
    cohort: Path,
    out: Path,
    settings: TrainingSettings,
    *,
    device: torch.device,
    resume: bool = True,
    name: str,
    version: str,
    init: Path | None = None,
    show_progress: bool = True,
    reference: ReferenceData | None = None,
) -> ModelCard:
    """Train the detector, refiner and regressor on a cohort and write the model folder.

    Parameters
    ----------
    cohort
        The cohort table (``cohort.csv``, phantom format) or its folder.
    out
        Model folder to write; checkpoints go to ``out/checkpoints/``.
    settings
        Epochs, batch size (films for the detector, crops for the others), learning rate,
        patience, seed, validation share.
    device
        Where to train.
    resume
        Continue from the checkpoints in ``out/checkpoints``.
    name, version
        Written into the model card.
    init
        A previous lumbar model folder (or its ``model.toml``) to start from.
    show_progress
        Progress bars on the terminal.
    reference
        Reference data for the validation figures (shipped defaults when None).

    Returns
    -------
    ModelCard
        The card as written.

    Raises
    ------
    LumbarCohortError
        When the cohort is not lumbar or has too few usable films.
    """
    started = time.monotonic()
    records = read_cohort(cohort)
    if any(r.part.value != Method.LUMBAR.value for r in records):
        raise LumbarCohortError(f"cohort {cohort} holds films other than lumbar")
    if len(records) < 10:
        raise LumbarCohortError(
            f"cohort {cohort} has {len(records)} films; the lumbar trainer needs at least 10"
        )
    calibration = _cohort_calibration(cohort, records)
    films = load_films(records, show_progress)
    train_index, validation_index = split_indices(
        len(films), settings.validation_fraction, settings.seed
    )
    bmd = np.concatenate([films[i].bmd for i in train_index if films[i].clean])
    offset, scale = float(bmd.mean()), float(max(bmd.std(), 1e-3))
    regressor_options = {
        "outputs": 1,
        **CROP_OPTIONS,
        "output_offset": round(offset, 4),
        "output_scale": round(scale, 4),
    }
    networks: dict[str, nn.Module] = {
        "detector": vertebra_keypoint_net(**DETECTOR_OPTIONS),
        "refiner": vertebra_keypoint_net(**REFINER_OPTIONS),
        "regressor": vertebra_crop_net(**regressor_options),
    }
    _initialise(networks, init)
    checkpoints = out / "checkpoints"

    def body_samples(
        indices: np.ndarray, bodies: Iterable[str], clean_only: bool
    ) -> list[tuple[int, int]]:
        # The regressor sees whole bodies of normal films; the refiner also bodies partly off the
        # film, so that a corner it cannot see gets no peak.
        needed = 4 if clean_only else 2
        return [
            (int(i), BODIES.index(b))
            for i in indices
            for b in bodies
            if films[i].visible[BODIES.index(b)].sum() >= needed
            and (films[i].clean or not clean_only)
        ]

    crop_batch = settings.batch_size
    # Every film gives the refiner several samples: it converges in half the epochs.
    refiner_settings = dataclasses.replace(settings, epochs=max(1, settings.epochs // 2))
    outcomes = {}
    outcomes["detector"] = fit(
        networks["detector"],
        DetectorTask(films, train_index, validation_index, settings.batch_size),
        settings,
        checkpoints / "detector.pt",
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    outcomes["refiner"] = fit(
        networks["refiner"],
        RefinerTask(
            films,
            body_samples(train_index, BODIES, False),
            body_samples(validation_index, BODIES, False),
            crop_batch,
        ),
        refiner_settings,
        checkpoints / "refiner.pt",
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    outcomes["regressor"] = _fit_in_phases(
        networks["regressor"],
        RegressorTask(
            films,
            body_samples(train_index, MEASURED, True),
            body_samples(validation_index, MEASURED, True),
            crop_batch,
            scale=scale,
        ),
        settings,
        checkpoints,
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    synthetic = all(f.synthetic for f in films)
    card = _card(
        name,
        version,
        records,
        len(train_index),
        len(validation_index),
        synthetic,
        outcomes,
        regressor_options,
        calibration,
    )
    save_model(out, card, {role: n.cpu() for role, n in networks.items()})
    metrics = {**card.metrics, **validate(out, [records[i] for i in validation_index], reference)}
    written = save_model(out, card.model_copy(update={"metrics": metrics}), networks)
    log.info(
        "lumbar_model_written",
        out=str(out),
        minutes=round((time.monotonic() - started) / 60, 1),
        **metrics,
    )
    return written


def _fit_in_phases(
    network: nn.Module,
    task: RegressorTask,
    settings: TrainingSettings,
    checkpoints: Path,
    *,
    device: torch.device,
    resume: bool,
    show_progress: bool,
) -> FitOutcome:
    """Train the regressor over :data:`REGRESSOR_PHASES` (step-down learning rate).

    Phase ``k`` has its own checkpoint ``regressor-k.pt``, so an interrupted run resumes in the
    phase it was in and skips the finished ones.

    Returns
    -------
    FitOutcome
        The last phase's best metric; epochs counted over all phases.
    """
    done, history = 0, []
    outcome = None
    for phase, (multiple, factor) in enumerate(REGRESSOR_PHASES, start=1):
        phase_settings = dataclasses.replace(
            settings,
            epochs=max(1, round(settings.epochs * multiple)),
            learning_rate=settings.learning_rate * factor,
        )
        outcome = fit(
            network,
            task,
            phase_settings,
            checkpoints / f"regressor-{phase}.pt",
            device=device,
            resume=resume,
            show_progress=show_progress,
        )
        history += [dataclasses.replace(r, epoch=r.epoch + done) for r in outcome.history]
        best_epoch = done + outcome.best_epoch
        done += phase_settings.epochs
    assert outcome is not None  # REGRESSOR_PHASES is not empty
    return FitOutcome(outcome.best_metric, best_epoch, history, outcome.stopped_early)


def _card(
    name: str,
    version: str,
    records: list[PhantomRecord],
    n_train: int,
    n_validation: int,
    synthetic: bool,
    outcomes: dict,
    regressor_options: dict,
    calibration: DxaManufacturer,
) -> ModelCard:
    hard = sum(not r.evaluable for r in records)
    description = (
        "Lumbar spine BMD estimator: corner detector (T12-L5), corner refiner and L1-L4 BMD regressor."
        + (" Synthetic, for demonstration, not for diagnostic use." if synthetic else "")
    )
    data = (
        f"{len(records)} {'synthetic phantom ' if synthetic else ''}frontal lumbar spine films"
        f" ({hard} hard cases: implants, scoliosis, cropped field); {n_train} for training,"
        f" {n_validation} for validation (split seed recorded in the checkpoints)."
    )
    epochs = {f"{role}_best_epoch": float(o.best_epoch) for role, o in outcomes.items()}
    return ModelCard(
        name=name,
        version=version,
        pipeline=Method.LUMBAR,
        description=description,
        intended_use=(
            "Opportunistic estimate of L1-L4 areal BMD and WHO category from frontal (AP/PA) lumbar"
            " spine or KUB radiographs of adults aged 50 or over; a screening aid, not a DXA substitute."
            + (
                " Demonstration only: trained on synthetic phantoms, not for diagnostic use."
                if synthetic
                else ""
            )
        ),
        training_data=data,
        synthetic=synthetic,
        diagnostic_use=False,
        created=date.today(),
        input_size=(DETECTOR_SIZE, DETECTOR_SIZE),
        normalisation=(
            "working copy (long side <= 512, anti-aliased), scaled so the 1st/99th percentiles are 0/1;"
            f" detector: letterboxed {DETECTOR_SIZE} x {DETECTOR_SIZE}; crops: {CROP_SIZE} x {CROP_SIZE}"
            f" at {CROP_MM_PER_PIXEL} mm/pixel aligned to the body's endplates; BMD: mean of the"
            " regressor on the crop and its mirror image"
        ),
        calibration=calibration.value,
        parameters={"min_corner_confidence": 0.3, "crop_mm_per_pixel": CROP_MM_PER_PIXEL},
        metrics=epochs,
        networks=[
            NetworkEntry(
                role="detector",
                architecture="vertebra_keypoint_net",
                options=DETECTOR_OPTIONS,
                weights="detector.safetensors",
            ),
            NetworkEntry(
                role="refiner",
                architecture="vertebra_keypoint_net",
                options=REFINER_OPTIONS,
                weights="refiner.safetensors",
            ),
            NetworkEntry(
                role="regressor",
                architecture="vertebra_crop_net",
                options=regressor_options,
                weights="regressor.safetensors",
            ),
        ],
    )


@dataclass(frozen=True)
class FilmOutcome:
    """The pipeline's answer on one validation film, beside its truth."""

    record: PhantomRecord
    evaluable: bool
    corner_error_mm: float | None
    bmd: dict[str, float]


def run_on_records(
    model_dir: Path, records: list[PhantomRecord], reference: ReferenceData | None = None
) -> list[FilmOutcome]:
    """Run the pipeline of ``model_dir`` on films with ground truth (validation, acceptance tests).

    Corner errors are the largest distance of any of the 24 corners from the truth (mm), BMD the
    regressor's raw output (model calibration) for the measured vertebrae.
    """
    reference = load_reference() if reference is None else reference
    pipeline = LumbarPipeline.from_model(
        load_model(model_dir, device="cpu"), PipelineSettings(), reference
    )
    outcomes = []
    for record in records:
        radiograph = load_radiograph(record.file)
        film = prepare_film(radiograph.pixels, radiograph.spacing_mm)
        with torch.no_grad():
            detection = pipeline.locate(film)
        problems, film_problems = pipeline.decide(film, detection)
        evaluable = not film_problems and not any(b in problems for b in ("L2", "L3", "L4"))
        found = film.to_source(np.stack([detection.corners[b] for b in BODIES]))
        truth = np.stack([record.corners[b] for b in BODIES])
        error = float(np.linalg.norm(found - truth, axis=-1).max() * record.spacing_mm)
        with torch.no_grad():
            measured = pipeline.measure(film, detection, [b for b in MEASURED if b not in problems])
        outcomes.append(
            FilmOutcome(record, evaluable, error, {b: m.bmd_model for b, m in measured.items()})
        )
    return outcomes


def validate(
    model_dir: Path, records: list[PhantomRecord], reference: ReferenceData | None = None
) -> dict[str, float]:
    """End-to-end validation figures of a written model on films with ground truth."""
    reference = load_reference() if reference is None else reference
    calibration = DxaManufacturer(read_model_card(model_dir).calibration)
    outcomes = run_on_records(model_dir, records, reference)
    clean = [o for o in outcomes if o.record.evaluable]
    hard = [o for o in outcomes if not o.record.evaluable]
    predicted, truth = [], []
    for o in clean:
        for b, value in o.bmd.items():
            predicted.append(value)
            truth.append(o.record.bmd[f"bmd_{b}"])
    metrics: dict[str, float] = {
        "validation_films": float(len(outcomes)),
        "corners_within_3mm": float(np.mean([o.corner_error_mm <= 3.0 for o in clean]))
        if clean
        else math.nan,
        "normal_reported_not_evaluable": float(np.mean([not o.evaluable for o in clean]))
        if clean
        else math.nan,
        "hard_reported_not_evaluable": float(np.mean([not o.evaluable for o in hard]))
        if hard
        else math.nan,
    }
    # The card always lists the same figures; one that cannot be computed (too few evaluable
    # films, as after a very short training) is written as -1.
    metrics.update(bmd_pearson_r=math.nan, bmd_nrmse=math.nan, who_quadratic_kappa=math.nan)
    if len(predicted) >= 3:
        metrics["bmd_pearson_r"] = round(float(pearson_correlation(truth, predicted).r), 4)
        metrics["bmd_nrmse"] = round(float(normalized_root_mean_squared_error(truth, predicted)), 4)
        categories = [
            who_categories_pair(o, reference, calibration) for o in clean if o.evaluable
        ]
        if categories:
            truth_c, predicted_c = zip(*categories)
            metrics["who_quadratic_kappa"] = round(
                float(cohen_kappa(truth_c, predicted_c, (0, 1, 2), weighting="quadratic")), 4
            )
    return {k: (round(v, 4) if math.isfinite(v) else -1.0) for k, v in metrics.items()}


_CATEGORY_INDEX = {"normal": 0, "low_bone_mass": 1, "osteoporosis": 2}


def who_categories_pair(
    outcome: FilmOutcome, reference: ReferenceData, model_calibration: DxaManufacturer
) -> tuple[int, int]:
    """(truth, predicted) WHO category indices along the same calibration and reference path.

    Both the phantom's true L1-L4 BMD (on the model's calibration, the cohort's scale) and the
    pipeline's raw estimates go through the configured cross-calibration to the site's scale, the
    sex's reference and the ISCD combination, so the comparison isolates the estimator.
    """
    calibration = reference.lumbar_calibration(model_calibration)
    sex = outcome.record.sex if outcome.record.sex in ("F", "M") else "F"
    young = reference.young_adult(
        reference.lumbar.site_manufacturer, MeasurementSite.LUMBAR_L1_L4, sex
    )

    def category(values: dict[str, float]) -> int:
        measures = [
            VertebraMeasure(
                Vertebra(b),
                calibration.apply(values[b]),
                t_score(calibration.apply(values[b]), young),
            )
            for b in MEASURED
            if b in values
        ]
        summary = combine_lumbar(measures, young)
        return _CATEGORY_INDEX[summary.category.value] if summary.category else 1

    truth = {b: outcome.record.bmd[f"bmd_{b}"] for b in MEASURED}
    return category(truth), category(outcome.bmd)
