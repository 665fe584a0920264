"""Training of the chest pipeline's two stages (METHODS.md section 2, Park et al. 2025).

Stage 1 (osteoporosis vs not) learns from every film of the training split; stage 2 (low bone mass
vs normal) from the films that are not osteoporotic, starting from stage 1's trained weights (the
two tasks read the same skeletal density). Each film is decoded and grayscale-truncated once, with
exactly the pipeline's preprocessing (:class:`~osteonode.pipelines.chest.ChestPreprocessing`), and
kept in memory. Augmentation is the paper's weak one (horizontal flip) plus a random gamma; the
paper's proxy labels and knowledge distillation are not part of this trainer. The stage targets are
soft (:data:`LABEL_SOFTNESS`): a film whose DXA T-score lies within DXA's precision of a stage's
cut-off is not pushed as hard to one side as a film far from it.

Two configurations:

- default: the paper's network, ConvNeXt-S at 512 x 512 on the grey film repeated into three
  channels with the ImageNet normalisation, meant to start from an ImageNet checkpoint (``init``);
- demo (:data:`DEMO_RECIPE`, the shipped ``models/chest-demo``): the small ``convnext_demo`` at
  128 x 128 (grey repeated into three channels with staggered means), trained from scratch on
  6000 phantoms with a cosine learning-rate decay in about 30 minutes on 2 CPU cores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import nn

from osteonode.bone import NORMAL_T_SCORE, OSTEOPOROSIS_T_SCORE, Category
from osteonode.evaluate.metrics import KappaWeighting, cohen_kappa, roc_auc
from osteonode.imaging.pixels import load_radiograph
from osteonode.nets import build_network, load_pretrained
from osteonode.phantoms import read_cohort
from osteonode.phantoms.chest import CHEST_QUALITY_EXPONENT
from osteonode.phantoms.enum import Part
from osteonode.pipelines.base import Method
from osteonode.pipelines.chest import ChestPreprocessing, Stage, final_category
from osteonode.train import DemoRecipe
from osteonode.train.loop import LearningRateSchedule, TrainingSettings, fit, split_indices
from osteonode.zoo import ModelCard, NetworkEntry, save_model

__all__ = [
    "DEMO_CONFIGURATION",
    "DEMO_RECIPE",
    "PAPER_CONFIGURATION",
    "ChestConfiguration",
    "train",
]

log = structlog.get_logger(__name__)

#: Software Versions (0018,1020) of files written by :mod:`osteonode.phantoms`.
PHANTOM_SOFTWARE = "osteonode-phantoms"
#: Range of the random gamma applied to the [0, 1] image during training.
GAMMA_RANGE = (0.8, 1.25)
#: Stage decision threshold used for the validation figures of the card (the paper's cut-off).
VALIDATION_THRESHOLD = 0.5
#: Softness of the stage targets, in T-score units: a film's target for a stage is
#: sigmoid((cut-off - T) / LABEL_SOFTNESS), the chance that its T-score lies at or below the stage's
#: cut-off (-2.5 for stage 1, -1.0 for stage 2) given DXA's precision (a least significant change
#: of about 0.03 g/cm2, some 0.3 T-score units). On held-out phantoms it raised the stage 2 AUC by
#: about 0.01 and the three-class kappa by 0.01-0.02 over hard targets.
LABEL_SOFTNESS = 0.3
#: The three categories in ordinal order, for the quadratic-weighted kappa.
CATEGORY_ORDER = (Category.NORMAL, Category.LOW_BONE_MASS, Category.OSTEOPOROSIS)


@dataclass(frozen=True)
class ChestConfiguration:
    """Network and input of a chest model.

    Parameters
    ----------
    architecture
        A name of :data:`osteonode.nets.ARCHITECTURES` (a ConvNeXt).
    preprocessing
        Input size, channels and normalisation.
    """

    architecture: str
    preprocessing: ChestPreprocessing


#: The paper's network: ConvNeXt-S at 512 x 512, three channels, ImageNet normalisation.
PAPER_CONFIGURATION = ChestConfiguration(
    "convnext_small",
    ChestPreprocessing(size=512, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
)
#: The demo network: convnext_demo at 128 x 128, trained from scratch on a CPU. The grey image goes
#: into three channels with staggered means: the stem's channel LayerNorm cannot tell a 4 x 4
#: patch from a brighter copy of it when every channel is the same affine map of the grey values,
#: and bone density on a film is exactly such a difference in brightness; with staggered offsets
#: a patch's grey level changes the direction of its embedding, not only its length.
DEMO_CONFIGURATION = ChestConfiguration(
    "convnext_demo",
    ChestPreprocessing(size=128, channels=3, mean=(0.25, 0.5, 0.75), std=(0.25, 0.25, 0.25)),
)

#: The demo recipe. With 2000 phantoms and a constant rate the held-out three-class kappa stayed
#: near 0.77; three times the phantoms and a cosine decay of the rate bring it above 0.80.
DEMO_RECIPE = DemoRecipe(
    phantoms=6000,
    size=192,
    seed=2101,
    hard_fraction=0.0,
    settings=TrainingSettings(
        epochs=24,
        batch_size=16,
        learning_rate=1e-3,
        weight_decay=0.05,
        patience=0,
        seed=0,
        validation_fraction=0.2,
        schedule=LearningRateSchedule.COSINE,
        warmup_epochs=1,
    ),
    name="chest-demo",
    version="0.2.0",
)


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Films:
    """Preprocessed films: truncated images (N, S, S) in [0, 255], categories and T-scores."""

    images: torch.Tensor
    categories: tuple[Category, ...]
    t_scores: torch.Tensor
    synthetic: bool

    def targets(self, stage: Stage) -> torch.Tensor:
        positive = (
            Category.OSTEOPOROSIS if stage is Stage.OSTEOPOROSIS else Category.LOW_BONE_MASS
        )
        return torch.tensor(
            [category is positive for category in self.categories], dtype=torch.long
        )

    def soft_targets(self, stage: Stage) -> torch.Tensor:
        """Each film's probability of the stage's positive class (:data:`LABEL_SOFTNESS`).

        Stage 2 never trains on osteoporotic films: their values (near 1) go unused.
        """
        cut_off = OSTEOPOROSIS_T_SCORE if stage is Stage.OSTEOPOROSIS else NORMAL_T_SCORE
        return torch.sigmoid((cut_off - self.t_scores) / LABEL_SOFTNESS)

    def stage_indices(self, stage: Stage, indices: np.ndarray) -> np.ndarray:
        """The films among ``indices`` a stage learns from (stage 2: the non-osteoporotic)."""
        if stage is Stage.OSTEOPOROSIS:
            return indices
        return np.array(
            [i for i in indices if self.categories[i] is not Category.OSTEOPOROSIS],
            dtype=np.int64,
        )


def _read_films(cohort: Path, preprocessing: ChestPreprocessing, show_progress: bool) -> _Films:
    records = read_cohort(cohort)
    others = sorted({record.part.value for record in records if record.part is not Part.CHEST})
    if others:
        raise ValueError(
            f"cohort {cohort} holds {', '.join(others)} films; the chest trainer needs chest films"
        )
    usable = [record for record in records if record.evaluable]
    if len(usable) < 10:
        raise ValueError(
            f"cohort {cohort} has {len(usable)} evaluable chest films; at least 10 are needed"
        )
    log.info("chest_cohort_read", films=len(records), evaluable=len(usable))
    images = np.empty((len(usable), preprocessing.size, preprocessing.size), dtype=np.float32)
    synthetic = True
    items = (
        track(enumerate(usable), total=len(usable), description="decoding films")
        if show_progress
        else enumerate(usable)
    )
    for index, record in items:
        radiograph = load_radiograph(record.file)
        images[index] = preprocessing.truncate(radiograph.pixels)
        synthetic &= str(radiograph.header.get("SoftwareVersions", "")) == PHANTOM_SOFTWARE
    categories = tuple(Category(Category(record.category).value) for record in usable)
    return _Films(
        images=torch.from_numpy(images),
        categories=categories,
        t_scores=torch.tensor([record.t_score for record in usable], dtype=torch.float32),
        synthetic=synthetic,
    )


# --- the task fit() runs ---------------------------------------------------------------------


@dataclass
class _StageTask:
    """One stage's batches, loss and metric (validation AUC)."""

    films: _Films
    stage: Stage
    preprocessing: ChestPreprocessing
    train_index: np.ndarray
    validation_index: np.ndarray
    batch_size: int
    metric_name: str = "auc"

    def __post_init__(self) -> None:
        self.targets = self.films.targets(self.stage)
        positive = self.films.soft_targets(self.stage)
        self.soft_targets = torch.stack([1.0 - positive, positive], dim=1)

    def train_batches(
        self, epoch: int, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(self.train_index)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield self._augment(self.films.images[chosen], rng), self.soft_targets[chosen]

    def validation_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.validation_index), self.batch_size):
            chosen = self.validation_index[start : start + self.batch_size]
            yield self.preprocessing.normalise(self.films.images[chosen]), self.targets[chosen]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against soft (training, (N, 2) float) or hard (validation) targets."""
        return F.cross_entropy(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        truth = targets.numpy()
        if truth.min() == truth.max():
            # AUC is undefined with one class; fall back to agreement so training still ranks epochs.
            return float((outputs.argmax(dim=1) == targets).float().mean())
        return roc_auc(truth, torch.softmax(outputs.float(), dim=1)[:, 1].numpy())

    def _augment(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Horizontal flip (the paper's weak augmentation) and a random gamma, per film."""
        count = images.shape[0]
        flip = torch.from_numpy(rng.random(count) < 0.5)
        gamma = torch.from_numpy(np.exp(rng.uniform(*np.log(GAMMA_RANGE), size=count))).float()
        images = torch.where(flip[:, None, None], images.flip(-1), images)
        unit = (images / 255.0).clamp(0.0, 1.0) ** gamma[:, None, None]
        return self.preprocessing.normalise(unit * 255.0)


# --- training ---------------------------------------------------------------------------------


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
    configuration: ChestConfiguration | None = None,
) -> ModelCard:
    """Train both chest stages on a cohort and write the model folder.

    Parameters
    ----------
    cohort
        Cohort table (phantom format: ``file``, ``part`` = chest, ``category``, ``evaluable``).
    out
        Model folder; checkpoints go to ``out/checkpoints/`` and are resumed from.
    settings
        Epochs, batch size, optimiser, early stopping, seed, validation share.
    device
        Where to train.
    resume
        Continue from the checkpoints in ``out/checkpoints``.
    name, version
        The model card's name and version.
    init
        A pretrained checkpoint (ImageNet ConvNeXt) both stages start from
        (:func:`osteonode.nets.load_pretrained`).
    show_progress
        Progress bars on the terminal.
    configuration
        Network and input; default :data:`PAPER_CONFIGURATION` with ``init``, else
        :data:`DEMO_CONFIGURATION`.

    Returns
    -------
    ModelCard
        The card as written.

    Raises
    ------
    ValueError
        The cohort is not a chest cohort or too small.
    osteonode.nets.CheckpointError
        ``init`` does not fit the network (missing and unexpected keys listed).
    """
    if configuration is None:
        configuration = PAPER_CONFIGURATION if init is not None else DEMO_CONFIGURATION
    preprocessing = configuration.preprocessing
    films = _read_films(Path(cohort), preprocessing, show_progress)
    train_index, validation_index = split_indices(
        len(films.categories), settings.validation_fraction, settings.seed
    )
    options = {"num_classes": 2, "in_chans": preprocessing.channels}
    checkpoints = Path(out) / "checkpoints"
    networks: dict[Stage, nn.Module] = {}
    history: dict[Stage, int] = {}
    previous: nn.Module | None = None
    for stage in Stage:
        torch.manual_seed(settings.seed)
        network = build_network(configuration.architecture, **options)
        if previous is not None:
            network.load_state_dict(previous.state_dict())
        elif init is not None:
            report = load_pretrained(network, init)
            log.info(
                "chest_init_loaded",
                checkpoint=str(init),
                layout=report.layout.value,
                loaded=len(report.loaded_keys),
                stem_adapted=report.stem_adapted,
            )
        task = _StageTask(
            films=films,
            stage=stage,
            preprocessing=preprocessing,
            train_index=films.stage_indices(stage, train_index),
            validation_index=films.stage_indices(stage, validation_index),
            batch_size=settings.batch_size,
        )
        outcome = fit(
            network,
            task,
            settings,
            checkpoints / f"{stage.value}.pt",
            device=device,
            resume=resume,
            show_progress=show_progress,
        )
        log.info(
            "chest_stage_trained",
            stage=stage.value,
            best_auc=outcome.best_metric,
            best_epoch=outcome.best_epoch,
            epochs=len(outcome.history),
        )
        networks[stage] = network.eval()
        history[stage] = outcome.best_epoch
        previous = network
    metrics = _validation_metrics(
        networks, films, validation_index, preprocessing, device, settings.batch_size
    )
    card = ModelCard(
        name=name,
        version=version,
        pipeline=Method.CHEST,
        description=_description(configuration, films.synthetic),
        intended_use=(
            "Opportunistic screening for low bone mass on PA chest radiographs of adults aged 50 and"
            " over: stage 1 osteoporosis vs not, stage 2 low bone mass vs normal."
            + (" Demonstration only: trained on synthetic phantoms." if films.synthetic else "")
        ),
        training_data=(
            f"{len(films.categories)} evaluable {'synthetic phantom ' if films.synthetic else ''}chest films"
            f" from {Path(cohort).name}; {len(train_index)} for training, {len(validation_index)} for"
            f" validation (split seed {settings.seed}); stage 1 on all films, stage 2 on the"
            f" non-osteoporotic ones starting from stage 1; best epochs {history[Stage.OSTEOPOROSIS]}"
            f" and {history[Stage.LOW_BONE_MASS]}; labels: WHO category of the lowest-site T-score,"
            f" as soft targets within about {LABEL_SOFTNESS:g} T-score units of each cut-off."
            + (f" Initialised from {Path(init).name}." if init is not None else "")
            + (
                " The chest phantoms exaggerate how bone density changes the film (skeletal quality"
                f" to the power {CHEST_QUALITY_EXPONENT:g}): figures on phantoms say nothing about"
                " real films."
                if films.synthetic
                else ""
            )
        ),
        synthetic=films.synthetic,
        diagnostic_use=False,
        input_size=(preprocessing.size, preprocessing.size),
        normalisation=preprocessing.describe(),
        metrics=metrics,
        networks=[
            NetworkEntry(
                role=stage.value,
                architecture=configuration.architecture,
                options=options,
                weights=f"{stage.value}.safetensors",
            )
            for stage in Stage
        ],
    )
    written = save_model(out, card, {stage.value: network for stage, network in networks.items()})
    log.info("chest_model_written", out=str(out), **metrics)
    return written


def _description(configuration: ChestConfiguration, synthetic: bool) -> str:
    size = configuration.preprocessing.size
    text = (
        f"Two-stage chest radiograph classifier after Park et al. 2025 (OsPenScreen):"
        f" {configuration.architecture} at {size} x {size} after grayscale truncation."
    )
    if (
        configuration.architecture != PAPER_CONFIGURATION.architecture
        or size != PAPER_CONFIGURATION.preprocessing.size
    ):
        text += " A smaller network and input than the paper's ConvNeXt-S at 512 x 512."
    if synthetic:
        text += " Synthetic, for demonstration, not for diagnostic use."
    return text


@torch.no_grad()
def _probabilities(
    network: nn.Module,
    films: _Films,
    indices: np.ndarray,
    preprocessing: ChestPreprocessing,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    network.to(device).eval()
    chunks = []
    for start in range(0, len(indices), batch_size):
        batch = preprocessing.normalise(films.images[indices[start : start + batch_size]]).to(
            device
        )
        chunks.append(torch.softmax(network(batch).float(), dim=1)[:, 1].cpu().numpy())
    return np.concatenate(chunks)


def _validation_metrics(
    networks: dict[Stage, nn.Module],
    films: _Films,
    validation_index: np.ndarray,
    preprocessing: ChestPreprocessing,
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    probabilities = {
        stage: _probabilities(network, films, validation_index, preprocessing, device, batch_size)
        for stage, network in networks.items()
    }
    truth = [films.categories[i] for i in validation_index]
    metrics: dict[str, float] = {"validation_films": float(len(validation_index))}
    for stage in Stage:
        chosen = films.stage_indices(stage, validation_index)
        positions = np.searchsorted(validation_index, chosen)
        targets = films.targets(stage)[chosen].numpy()
        if 0 < targets.sum() < len(targets):
            metrics[f"{stage.value}_auc"] = roc_auc(targets, probabilities[stage][positions])
    predicted = [
        final_category(first, second, VALIDATION_THRESHOLD, VALIDATION_THRESHOLD)
        for first, second in zip(
            probabilities[Stage.OSTEOPOROSIS], probabilities[Stage.LOW_BONE_MASS], strict=True
        )
    ]
    labels = [category.value for category in CATEGORY_ORDER]
    metrics["three_class_accuracy"] = float(np.mean([p is t for p, t in zip(predicted, truth)]))
    kappa = cohen_kappa(
        [t.value for t in truth],
        [p.value for p in predicted],
        labels,
        weighting=KappaWeighting.QUADRATIC,
    )
    if math.isfinite(kappa):
        metrics["three_class_kappa_quadratic"] = kappa
    return {key: round(value, 4) for key, value in metrics.items()}
