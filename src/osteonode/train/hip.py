"""Train the hip pipeline's femur localiser and VGG16 non-local classifier from a cohort.

The cohort table has the phantom format (:func:`osteonode.phantoms.read_cohort`): per film and
patient side the crop box of METHODS.md section 3, whether the side is evaluable or carries a
prosthesis, and the side's T-score. Every film is decoded once and prepared as
:class:`~osteonode.pipelines.hip.HipPipeline` prepares it; then, with the shared loop
:func:`osteonode.train.loop.fit`:

1. the localiser learns, per image side, the crop box centre (spatial softmax), the distances to
   the box edges and the side's state, on whole films (randomly mirrored, sides swapped);
2. the classifier learns osteoporosis (T-score <= -2.5, WHO, from :mod:`osteonode.bone`) on the
   evaluable sides' crops, with binary cross-entropy and Adam (``weight_decay=0``), the crop box
   jittered by a few percent (the localiser's error), the paper's divisor jitter in the two-sigma
   z-transform, and the paper's augmentation (original, blur, sharpen, shear, small rotation).

Both keep the weights of their best validation epoch (localiser: mean IoU and state accuracy;
classifier: AUC, which unlike accuracy does not depend on a threshold). The model is written with
:func:`osteonode.zoo.save_model`, loaded back and run as the pipeline on the validation films;
those end-to-end figures go into the model card.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import nn

from osteonode.bone import Category, who_category
from osteonode.config import PipelineSettings
from osteonode.evaluate.metrics import roc_auc
from osteonode.imaging import load_radiograph
from osteonode.imaging.transforms import ztransform_2sigma
from osteonode.nets import build_network
from osteonode.nets.checkpoints import load_pretrained
from osteonode.nets.femur_locator import DISTANCE_UNIT, IMAGE_SIDES, STRIDE, FemurLocator, SideState
from osteonode.phantoms import read_cohort
from osteonode.phantoms.cohort import PhantomRecord, SideTruth
from osteonode.pipelines.base import Method
from osteonode.pipelines.hip import CLASSIFIER_ROLE, LOCATOR_ROLE, HipGeometry, HipPipeline
from osteonode.pipelines.regions import (
    crop_window,
    extract_crop,
    image_side_lateralities,
    locator_film,
)
from osteonode.reference import load_reference
from osteonode.train import DemoRecipe
from osteonode.train.augment import HIP_PAPER
from osteonode.train.loop import FitOutcome, TrainingSettings, fit, split_indices
from osteonode.zoo import ModelCard, NetworkEntry, load_model, save_model

__all__ = [
    "CLASSIFIER_ARCHITECTURE",
    "DEMO_GEOMETRY",
    "DEMO_RECIPE",
    "ClassifierTask",
    "HipCohortError",
    "LocatorTask",
    "box_iou",
    "is_osteoporotic",
    "side_state",
    "train",
    "validate",
]

log = structlog.get_logger(__name__)

DEMO_RECIPE = DemoRecipe(
    phantoms=720,
    size=512,
    seed=3301,
    hard_fraction=0.3,
    settings=TrainingSettings(
        epochs=10,
        batch_size=32,
        learning_rate=1e-3,
        weight_decay=0.0,
        patience=4,
        seed=0,
        validation_fraction=0.15,
    ),
    name="hip-demo",
    version="0.1.0",
)

#: Input sizes of the demo model: the localiser's film and the classifier's crop.
DEMO_GEOMETRY = HipGeometry(locator_shape=(192, 256), crop_size=128)
LOCATOR_ARCHITECTURE = "femur_locator"
LOCATOR_OPTIONS: dict[str, list[int] | int] = {"widths": [16, 24, 32, 48, 64], "head_width": 32}
#: The demo classifier: VGG16's layout at a quarter of its widths (the model card says so).
CLASSIFIER_ARCHITECTURE = "vgg16_nonlocal_demo"
CLASSIFIER_OPTIONS: dict[str, int | float] = {"in_chans": 1, "dropout": 0.5}
#: The paper's divisor jitter epsilon of the two-sigma z-transform (training only).
Z_JITTER = 0.1
#: Crops are cached with this share of the box added each side, so the box can be jittered.
CROP_CONTEXT = 0.15
#: Each crop box edge moves by up to this share of the box size in training (localiser error).
BOX_JITTER = 0.05
#: Sigma of the soft centre target, in grid cells.
CENTRE_SIGMA = 1.0
#: Weight of the box-distance loss against the centre and state losses.
DISTANCE_WEIGHT = 5.0
#: Step schedule: after the set epochs, train at this fraction of the learning rate ...
LR_DECAY = 0.1
#: ... for this share of the set epochs (the decay settles both networks' noisy late epochs).
FINE_TUNE_SHARE = 0.5
#: Largest weight of a rare side state in the localiser's state loss.
MAX_STATE_WEIGHT = 10.0
#: Software Versions written by the phantom generator (how a synthetic cohort is recognised).
PHANTOM_SOFTWARE = "osteonode-phantoms"
#: IoU at which a crop box counts as found (the acceptance bar).
IOU_HIT = 0.7
#: Localiser target columns: state, box (column0, row0, column1, row1), has_box.
_TARGET_WIDTH = 6


class HipCohortError(ValueError):
    """A cohort that cannot train the hip networks (wrong part, too few usable films)."""


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(column0, row0, column1, row1)`` boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def side_state(truth: SideTruth) -> SideState:
    """The localiser's state for a side's ground truth."""
    if truth.evaluable:
        return SideState.EVALUABLE
    return SideState.PROSTHESIS if truth.prosthesis else SideState.OUTSIDE_FIELD


def is_osteoporotic(truth: SideTruth) -> bool:
    """The classifier's label: the side's T-score is osteoporosis by the WHO rule."""
    return who_category(truth.t_score) is Category.OSTEOPOROSIS


@dataclass
class _Crop:
    """One evaluable side: its context crop (raw) and where the true box lies in it."""

    context: torch.Tensor  # (1, S, S) float32, before normalisation
    box: tuple[
        float, float, float, float
    ]  # true box in the context's normalised [-1, 1] coordinates
    label: float


@dataclass
class _Film:
    """One decoded, prepared film with its truth."""

    film: np.ndarray  # localiser film (rows, columns), before normalisation
    targets: torch.Tensor  # (2, _TARGET_WIDTH) per image side, localiser pixel coordinates
    crops: list[_Crop]
    synthetic: bool


def _load_film(record: PhantomRecord, geometry: HipGeometry) -> _Film:
    radiograph = load_radiograph(record.file)
    film, (row_scale, column_scale) = locator_film(radiograph.pixels, geometry.locator_shape)
    lateralities, _ = image_side_lateralities(radiograph.header)
    targets = torch.zeros(len(IMAGE_SIDES), _TARGET_WIDTH)
    crops = []
    context_size = round(geometry.crop_size * (1 + 2 * CROP_CONTEXT))
    for index, laterality in enumerate(lateralities):
        truth = record.sides["right" if laterality.value == "R" else "left"]
        state = side_state(truth)
        c0, r0, c1, r1 = truth.crop_box
        targets[index] = torch.tensor(
            [
                float(state),
                (c0 + 0.5) / column_scale - 0.5,
                (r0 + 0.5) / row_scale - 0.5,
                (c1 + 0.5) / column_scale - 0.5,
                (r1 + 0.5) / row_scale - 0.5,
                float(state is not SideState.OUTSIDE_FIELD),
            ]
        )
        window = crop_window(truth.crop_box, radiograph.shape, margin=CROP_CONTEXT)
        if state is not SideState.EVALUABLE or window is None:
            continue
        mirrored = index == 1
        context = extract_crop(radiograph.pixels, window, context_size, mirror=mirrored)

        # The true box in the window's normalised coordinates (-1 and 1 at the window's outer edges).
        def normalised(value: float, start: int, stop: int) -> float:
            return 2.0 * (value + 0.5 - start) / (stop - start) - 1.0

        u0, u1 = (
            normalised(c0, window.column0, window.column1),
            normalised(c1, window.column0, window.column1),
        )
        if mirrored:
            u0, u1 = -u1, -u0
        v0, v1 = normalised(r0, window.row0, window.row1), normalised(r1, window.row0, window.row1)
        crops.append(
            _Crop(torch.from_numpy(context)[None], (u0, v0, u1, v1), float(is_osteoporotic(truth)))
        )
    software = str(radiograph.header.get("SoftwareVersions", "") or "")
    return _Film(film=film, targets=targets, crops=crops, synthetic=PHANTOM_SOFTWARE in software)


def _batches(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


class LocatorTask:
    """Training task of the femur localiser: centre map, box distances and side states."""

    metric_name = "mean_iou_and_state_accuracy"

    def __init__(
        self, films: Sequence[_Film], train: np.ndarray, validation: np.ndarray, batch_size: int
    ) -> None:
        self.films = films
        self.train = train
        self.validation = validation
        self.batch_size = batch_size
        # Prostheses and cut-off sides are rare; inverse-frequency weights keep them from being
        # outvoted by the evaluable sides (capped so one odd film cannot dominate).
        states = torch.cat([films[i].targets[:, 0] for i in train]).long()
        counts = torch.bincount(states, minlength=len(SideState)).float()
        self.state_weights = (len(states) / (len(SideState) * counts.clamp_min(1.0))).clamp(
            max=MAX_STATE_WEIGHT
        )

    def _inputs(self, indices: Iterable[int], rng: np.random.Generator | None) -> torch.Tensor:
        jitter = Z_JITTER if rng is not None else 0.0
        return torch.stack(
            [
                torch.from_numpy(ztransform_2sigma(self.films[i].film, jitter=jitter, rng=rng))[
                    None
                ]
                for i in indices
            ]
        )

    def train_batches(
        self, epoch: int, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled films; each mirrored left-right with probability 1/2 (sides swapped)."""
        for batch in _batches(rng.permutation(self.train), self.batch_size):
            inputs = self._inputs(batch, rng)
            targets = torch.stack([self.films[i].targets for i in batch])
            flip = torch.from_numpy(rng.random(len(batch)) < 0.5)
            if bool(flip.any()):
                width = inputs.shape[-1]
                inputs[flip] = inputs[flip].flip(-1)
                mirrored = targets[flip].flip(1).clone()
                mirrored[..., 1], mirrored[..., 3] = (
                    width - 1 - mirrored[..., 3],
                    width - 1 - mirrored[..., 1],
                )
                targets[flip] = mirrored
            yield inputs, targets

    def validation_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Validation films in order, unaugmented."""
        for batch in _batches(self.validation, self.batch_size):
            yield self._inputs(batch, None), torch.stack([self.films[i].targets for i in batch])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """State cross-entropy + soft centre cross-entropy + weighted L1 of the edge distances."""
        centre_logits, distances, state_logits = FemurLocator.split(outputs)
        targets = targets.to(outputs.device)
        state_loss = F.cross_entropy(
            state_logits.reshape(-1, len(SideState)),
            targets[..., 0].long().reshape(-1),
            weight=self.state_weights.to(outputs.device),
        )
        has_box = targets[..., 5] > 0
        if not bool(has_box.any()):
            return state_loss
        n, sides, h, w = centre_logits.shape
        columns, rows = FemurLocator.cell_centres(h, w, outputs.device)
        boxes = targets[..., 1:5]
        centre_c = (boxes[..., 0] + boxes[..., 2]) / 2
        centre_r = (boxes[..., 1] + boxes[..., 3]) / 2
        squared = (
            (columns - centre_c[..., None, None]) ** 2 + (rows - centre_r[..., None, None]) ** 2
        ) / STRIDE**2
        soft = torch.exp(-squared / (2 * CENTRE_SIGMA**2))
        soft = soft / soft.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        log_p = torch.log_softmax(centre_logits.reshape(n, sides, h * w), dim=-1).reshape(
            n, sides, h, w
        )
        centre_loss = -(soft * log_p).sum(dim=(-2, -1))[has_box].mean()
        # Distances are learnt on the cells the decoder averages: near the true centre.
        near = (squared <= 2.0) & has_box[..., None, None]
        expected = (
            torch.stack(
                [
                    columns - boxes[..., 0, None, None],
                    rows - boxes[..., 1, None, None],
                    boxes[..., 2, None, None] - columns,
                    boxes[..., 3, None, None] - rows,
                ],
                dim=2,
            )
            / DISTANCE_UNIT
        )
        mask = near[:, :, None].expand_as(distances)
        distance_loss = F.smooth_l1_loss(distances[mask], expected[mask], beta=0.05)
        return state_loss + centre_loss + DISTANCE_WEIGHT * distance_loss

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Mean of (mean IoU on evaluable sides) and (state accuracy)."""
        located = FemurLocator.decode(outputs)
        states = located.state_probabilities.argmax(-1)
        accuracy = float((states == targets[..., 0].long()).float().mean())
        evaluable = targets[..., 0].long() == SideState.EVALUABLE
        ious = [
            box_iou(located.boxes[i, s].tolist(), targets[i, s, 1:5].tolist())
            for i, s in zip(*torch.nonzero(evaluable, as_tuple=True), strict=True)
        ]
        return 0.5 * (float(np.mean(ious)) if ious else 0.0) + 0.5 * accuracy


class ClassifierTask:
    """Training task of the crop classifier: osteoporosis or not, binary cross-entropy."""

    metric_name = "auc"

    def __init__(
        self,
        crops: Sequence[_Crop],
        train: np.ndarray,
        validation: np.ndarray,
        batch_size: int,
        crop_size: int,
    ) -> None:
        self.crops = crops
        self.train = train
        self.validation = validation
        self.batch_size = batch_size
        self.crop_size = crop_size
        self._validation_inputs = self._windows(validation, None)
        # z-transformed crops are clipped to [-1, 1]; the augmenter works on that range.
        self._augment = HIP_PAPER.augmenter(value_range=(-1.0, 1.0))

    def _windows(self, indices: np.ndarray, rng: np.random.Generator | None) -> torch.Tensor:
        """Resample each crop's (jittered) box from its context and z-transform it."""
        if len(indices) == 0:
            return torch.zeros(0, 1, self.crop_size, self.crop_size)
        boxes = torch.tensor([self.crops[i].box for i in indices], dtype=torch.float32)
        if rng is not None:
            size = torch.stack(
                [boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1
            ).repeat(1, 2)
            boxes = (
                boxes
                + torch.from_numpy(rng.uniform(-BOX_JITTER, BOX_JITTER, boxes.shape)).float() * size
            )
        theta = torch.zeros(len(indices), 2, 3)
        theta[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / 2
        theta[:, 0, 2] = (boxes[:, 2] + boxes[:, 0]) / 2
        theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / 2
        theta[:, 1, 2] = (boxes[:, 3] + boxes[:, 1]) / 2
        contexts = torch.stack([self.crops[i].context for i in indices])
        grid = F.affine_grid(
            theta, [len(indices), 1, self.crop_size, self.crop_size], align_corners=False
        )
        windows = F.grid_sample(
            contexts, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        jitter = Z_JITTER if rng is not None else 0.0
        normalised = [ztransform_2sigma(w[0].numpy(), jitter=jitter, rng=rng) for w in windows]
        return torch.from_numpy(np.stack(normalised))[:, None]

    def _labels(self, indices: Iterable[int]) -> torch.Tensor:
        return torch.tensor([[self.crops[i].label] for i in indices])

    def train_batches(
        self, epoch: int, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled crops: jittered box, jittered z-transform, one of the paper's augmentations."""
        for batch in _batches(rng.permutation(self.train), self.batch_size):
            windows = self._windows(batch, rng)[:, 0].numpy()
            yield torch.from_numpy(self._augment(windows, rng))[:, None], self._labels(batch)

    def validation_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Validation crops at the true box, unaugmented."""
        for start in range(0, len(self.validation), self.batch_size):
            stop = start + self.batch_size
            yield self._validation_inputs[start:stop], self._labels(self.validation[start:stop])

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy on the logit."""
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.device))

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Area under the ROC curve (0.5 when the validation split has one class only)."""
        truth = targets[:, 0].numpy() > 0.5
        if truth.all() or not truth.any():
            return 0.5
        return roc_auc(truth, outputs[:, 0].numpy())


def _fit_with_step_decay(
    network: nn.Module,
    task: LocatorTask | ClassifierTask,
    settings: TrainingSettings,
    checkpoints: Path,
    role: str,
    *,
    device: torch.device,
    resume: bool,
    show_progress: bool,
) -> FitOutcome:
    """Train at the set learning rate, then at :data:`LR_DECAY` of it for a share of the epochs.

    The second phase starts from the first phase's best weights; the network ends with the
    better phase's best weights, and the returned outcome is that phase's (its epochs counted
    after the first phase's). Each phase has its own checkpoint, so either resumes.
    """
    first = fit(
        network,
        task,
        settings,
        checkpoints / f"{role}.pt",
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    fine = dataclasses.replace(
        settings,
        learning_rate=settings.learning_rate * LR_DECAY,
        epochs=max(1, math.ceil(settings.epochs * FINE_TUNE_SHARE)),
    )
    first_best = copy.deepcopy(network.state_dict())
    second = fit(
        network,
        task,
        fine,
        checkpoints / f"{role}_fine.pt",
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    if second.best_metric < first.best_metric:
        network.load_state_dict(first_best)
        return first
    return dataclasses.replace(
        second,
        best_epoch=len(first.history) + second.best_epoch,
        history=first.history + second.history,
    )


def _initialise(networks: dict[str, nn.Module], init: Path | None) -> None:
    """Start from a previous hip model folder, or a VGG16 checkpoint for the classifier."""
    if init is None:
        return
    folder = init.parent if init.name == "model.toml" else init
    if folder.is_dir():
        previous = load_model(folder, device="cpu")
        for role, network in networks.items():
            network.load_state_dict(previous[role].state_dict())
        log.info(
            "hip_initialised_from_model", model=previous.card.name, version=previous.card.version
        )
        return
    report = load_pretrained(networks[CLASSIFIER_ROLE], init)
    log.info("hip_classifier_initialised", checkpoint=str(init), layout=str(report.layout))


def _load_films(
    records: Sequence[PhantomRecord], geometry: HipGeometry, show_progress: bool
) -> list[_Film]:
    items: Iterable[PhantomRecord] = records
    if show_progress:
        items = track(records, description="decoding hip films")
    return [_load_film(record, geometry) for record in items]


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
) -> ModelCard:
    """Train the femur localiser and the classifier on a cohort and write the model folder.

    Parameters
    ----------
    cohort
        The cohort table (``cohort.csv``, phantom format) or its folder.
    out
        Model folder to write; checkpoints go to ``out/checkpoints/``.
    settings
        Epochs, batch size, learning rate (Adam when ``weight_decay`` is 0), patience, seed,
        validation share; both networks use them.
    device
        Where to train.
    resume
        Continue from the checkpoints in ``out/checkpoints``.
    name, version
        Written into the model card.
    init
        A previous hip model folder (or its ``model.toml``) to start both networks from, or a
        VGG16 checkpoint (ImageNet or the site's) for the classifier.
    show_progress
        Progress bars on the terminal.

    Returns
    -------
    ModelCard
        The card as written.

    Raises
    ------
    HipCohortError
        When the cohort is not hip or has too few usable films or crops of either class.
    """
    started = time.monotonic()
    records = read_cohort(cohort)
    if any(r.part.value != Method.HIP.value for r in records):
        raise HipCohortError(f"cohort {cohort} holds films other than hip")
    if len(records) < 10:
        raise HipCohortError(
            f"cohort {cohort} has {len(records)} films; the hip trainer needs at least 10"
        )
    geometry = DEMO_GEOMETRY
    films = _load_films(records, geometry, show_progress)
    train_index, validation_index = split_indices(
        len(films), settings.validation_fraction, settings.seed
    )
    networks: dict[str, nn.Module] = {
        LOCATOR_ROLE: build_network(LOCATOR_ARCHITECTURE, **LOCATOR_OPTIONS),
        CLASSIFIER_ROLE: build_network(CLASSIFIER_ARCHITECTURE, **CLASSIFIER_OPTIONS),
    }
    _initialise(networks, init)
    checkpoints = out / "checkpoints"
    outcomes: dict[str, FitOutcome] = {}
    outcomes[LOCATOR_ROLE] = _fit_with_step_decay(
        networks[LOCATOR_ROLE],
        LocatorTask(films, train_index, validation_index, settings.batch_size),
        settings,
        checkpoints,
        LOCATOR_ROLE,
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    crops: list[_Crop] = []
    crop_split: dict[str, list[int]] = {"train": [], "validation": []}
    for split, indices in (("train", train_index), ("validation", validation_index)):
        for i in indices:
            for crop in films[i].crops:
                crop_split[split].append(len(crops))
                crops.append(crop)
    labels = {split: {crops[i].label for i in indices} for split, indices in crop_split.items()}
    if labels["train"] != {0.0, 1.0}:
        raise HipCohortError(
            f"cohort {cohort}: the training split needs osteoporotic and other hips"
        )
    outcomes[CLASSIFIER_ROLE] = _fit_with_step_decay(
        networks[CLASSIFIER_ROLE],
        ClassifierTask(
            crops,
            np.array(crop_split["train"]),
            np.array(crop_split["validation"]),
            settings.batch_size,
            geometry.crop_size,
        ),
        settings,
        checkpoints,
        CLASSIFIER_ROLE,
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    synthetic = all(f.synthetic for f in films)
    counts = {
        "films": len(records),
        "train_films": len(train_index),
        "validation_films": len(validation_index),
        "train_crops": len(crop_split["train"]),
        "validation_crops": len(crop_split["validation"]),
    }
    card = _card(name, version, records, counts, synthetic, outcomes, geometry, settings)
    networks = {role: network.cpu() for role, network in networks.items()}
    save_model(out, card, networks)
    metrics = {**card.metrics, **validate(out, [records[i] for i in validation_index])}
    metrics["training_minutes"] = round((time.monotonic() - started) / 60, 1)
    written = save_model(out, card.model_copy(update={"metrics": metrics}), networks)
    log.info("hip_model_written", out=str(out), **metrics)
    return written


def validate(model_dir: Path, records: Sequence[PhantomRecord]) -> dict[str, float]:
    """Run the written model as the pipeline on films with truth; end-to-end figures.

    Returns
    -------
    dict
        ``validation_crop_iou_hit_rate`` (share of evaluable sides with IoU >= 0.7),
        ``validation_not_evaluable_found`` (share of not-evaluable sides reported so),
        ``validation_auc`` per side (when both classes occur), ``validation_sides``.
    """
    pipeline = HipPipeline.from_model(
        load_model(model_dir, device="cpu"), PipelineSettings(), load_reference()
    )
    hits, evaluable_sides, refused, not_evaluable_sides = 0, 0, 0, 0
    truth, scores = [], []
    for record in records:
        result = pipeline.run(load_radiograph(record.file))
        for finding in result.findings:
            side = record.sides[
                "right"
                if finding.laterality is not None and finding.laterality.value == "R"
                else "left"
            ]
            if not side.evaluable:
                not_evaluable_sides += 1
                refused += int(not finding.evaluable)
                continue
            evaluable_sides += 1
            if finding.region is not None:
                corners = np.array(finding.region.points) - 0.5
                box = (
                    corners[:, 0].min(),
                    corners[:, 1].min(),
                    corners[:, 0].max(),
                    corners[:, 1].max(),
                )
                hits += int(box_iou(box, side.crop_box) >= IOU_HIT)
            if finding.evaluable and finding.probability is not None:
                truth.append(is_osteoporotic(side))
                scores.append(finding.probability)
    metrics = {
        "validation_sides": float(evaluable_sides + not_evaluable_sides),
        "validation_crop_iou_hit_rate": round(hits / max(evaluable_sides, 1), 4),
        "validation_not_evaluable_found": round(refused / max(not_evaluable_sides, 1), 4),
    }
    if len(set(truth)) == 2:
        metrics["validation_auc"] = round(roc_auc(truth, scores), 4)
    return metrics


def _card(
    name: str,
    version: str,
    records: Sequence[PhantomRecord],
    counts: dict[str, int],
    synthetic: bool,
    outcomes: dict[str, FitOutcome],
    geometry: HipGeometry,
    settings: TrainingSettings,
) -> ModelCard:
    sides = [s for r in records for s in r.sides.values() if s.evaluable]
    osteoporotic = sum(is_osteoporotic(s) for s in sides)
    data = (
        f"{counts['films']} AP pelvis films ({counts['train_films']} training, {counts['validation_films']}"
        f" validation); {len(sides)} evaluable hips, {osteoporotic} osteoporotic (T-score <= -2.5);"
        f" {counts['train_crops']} training and {counts['validation_crops']} validation crops"
    )
    if synthetic:
        data = "Synthetic osteonode phantoms: " + data
    description = (
        "Femur localiser and VGG16 non-local classifier (Jang et al., Sci Rep 11:19997, 2021):"
        " probability of osteoporosis per hip. The classifier is vgg16_nonlocal_demo, VGG16's layout"
        " at a quarter of its channel widths, not the full-size network."
    )
    if synthetic:
        description += " Trained on synthetic phantoms, for demonstration, not for diagnostic use."
    metrics = {
        "locator_best_epoch": float(outcomes[LOCATOR_ROLE].best_epoch),
        "locator_validation_metric": round(outcomes[LOCATOR_ROLE].best_metric, 4),
        "classifier_best_epoch": float(outcomes[CLASSIFIER_ROLE].best_epoch),
        "classifier_validation_crop_auc": round(outcomes[CLASSIFIER_ROLE].best_metric, 4),
    }
    return ModelCard(
        name=name,
        version=version,
        pipeline=Method.HIP,
        description=description,
        intended_use=(
            "AP hip or pelvis radiographs of women aged 55 or over: probability of osteoporosis"
            " (T-score <= -2.5) for each hip, as a screening aid; both crops outlined with Grad-CAM"
        ),
        training_data=data,
        synthetic=synthetic,
        diagnostic_use=False,
        created=date.today(),
        input_size=(geometry.crop_size, geometry.crop_size),
        normalisation=(
            "z-transform with two sigma, (x - mean) / (2 sigma), clipped to [-1, 1]; per crop for the"
            f" classifier, per film for the localiser; training jitter of the divisor +-{Z_JITTER} sigma"
        ),
        parameters=geometry.as_parameters(),
        metrics=metrics,
        # How it was trained: the card's record, not algorithm parameters results carry.
        training={
            "optimiser": "Adam" if settings.weight_decay == 0 else "AdamW",
            "learning_rate": settings.learning_rate,
            "classifier_augmentation": HIP_PAPER.describe(),
            "crop_box_jitter": BOX_JITTER,
        },
        networks=[
            NetworkEntry(
                role=LOCATOR_ROLE,
                architecture=LOCATOR_ARCHITECTURE,
                options=dict(LOCATOR_OPTIONS),
                weights=f"{LOCATOR_ROLE}.safetensors",
            ),
            NetworkEntry(
                role=CLASSIFIER_ROLE,
                architecture=CLASSIFIER_ARCHITECTURE,
                options=dict(CLASSIFIER_OPTIONS),
                weights=f"{CLASSIFIER_ROLE}.safetensors",
            ),
        ],
    )
