"""Training of the chest pipeline's two stages (METHODS.md section 2, Park et al. 2025).

Stage 1 (osteoporosis vs not) learns from every film of the training split; stage 2 (low bone mass
vs normal) from the films that are not osteoporotic, starting from stage 1's trained weights (the
two tasks read the same skeletal density). Each film is decoded and grayscale-truncated once, with
exactly the pipeline's preprocessing (:class:`~osteonode.pipelines.chest.ChestPreprocessing`), and
kept in memory. The stage targets are soft (:data:`LABEL_SOFTNESS`): a film whose DXA T-score lies
within DXA's precision of a stage's cut-off is not pushed as hard to one side as a film far from it.

The paper's training regime, each part optional:

- augmentation: a declarative :class:`~osteonode.train.augment.AugmentationSpec`, the paper's weak
  one (:data:`~osteonode.train.augment.CHEST_WEAK`, the default) or its strong one
  (:data:`~osteonode.train.augment.CHEST_STRONG`);
- proxy labels (``unlabeled``): the films of a folder without DXA truth are run through a model
  (the teacher if one is given, else the model a first, supervised pass trains from the labelled
  films) and those it is confident about join the training split with its answer as their label
  (:mod:`osteonode.train.proxy`); they never enter the validation split;
- knowledge distillation (``teacher``): a chest model folder whose stage logits, on each training
  film as the teacher's own preprocessing prepares it, are the soft targets of the
  :mod:`~osteonode.train.distillation` loss; the student sees the augmented film, the teacher the
  clean one.

The model card records the augmentation, the teacher with the temperature and weight, and the
proxy-label thresholds and counts (``[training]``).

Two configurations:

- default: the paper's network, ConvNeXt-S at 512 x 512 on the grey film repeated into three
  channels with the ImageNet normalisation, meant to start from an ImageNet checkpoint (``init``);
- demo (:data:`DEMO_RECIPE`, the shipped ``models/chest-demo``): the small ``convnext_demo`` at
  128 x 128 (grey repeated into three channels with staggered means), trained from scratch on
  6000 phantoms with a cosine learning-rate decay in about 30 minutes on 2 CPU cores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from rich.progress import track
from torch import nn

from osteonode.bone import NORMAL_T_SCORE, OSTEOPOROSIS_T_SCORE, Category
from osteonode.config import PipelineSettings
from osteonode.evaluate.metrics import KappaWeighting, cohen_kappa, roc_auc
from osteonode.imaging.pixels import ImageError, load_radiograph
from osteonode.nets import build_network, load_pretrained
from osteonode.phantoms import PhantomRecord, read_cohort
from osteonode.phantoms.chest import CHEST_QUALITY_EXPONENT
from osteonode.phantoms.enum import Part
from osteonode.pipelines.base import Method
from osteonode.pipelines.chest import ChestPipeline, ChestPreprocessing, Stage, final_category
from osteonode.train import DemoRecipe
from osteonode.train.augment import CHEST_WEAK, AugmentationSpec, Augmenter
from osteonode.train.distillation import DistillationSettings, distillation_loss
from osteonode.train.loop import (
    LearningRateSchedule,
    TrainingSettings,
    fit,
    positive_probabilities,
    split_indices,
)
from osteonode.train.proxy import ProxyCounts, ProxyThresholds, proxy_labels, unlabeled_files
from osteonode.zoo import ModelCard, NetworkEntry, load_model, save_model

__all__ = [
    "DEFAULT_DISTILLATION",
    "DEMO_CONFIGURATION",
    "DEMO_RECIPE",
    "PAPER_CONFIGURATION",
    "PAPER_PROXY_THRESHOLDS",
    "ChestConfiguration",
    "train",
    "validate",
]

log = structlog.get_logger(__name__)

#: Software Versions (0018,1020) of files written by :mod:`osteonode.phantoms`.
PHANTOM_SOFTWARE = "osteonode-phantoms"
#: Value range of grayscale-truncated films, the range the augmentation works in.
TRUNCATED_RANGE = (0.0, 255.0)
#: Stage decision threshold used for the validation figures of the card (the paper's cut-off).
VALIDATION_THRESHOLD = 0.5
#: Softness of the stage targets, in T-score units: a film's target for a stage is
#: sigmoid((cut-off - T) / LABEL_SOFTNESS), the chance that its T-score lies at or below the stage's
#: cut-off (-2.5 for stage 1, -1.0 for stage 2) given DXA's precision (a least significant change
#: of about 0.03 g/cm2, some 0.3 T-score units). On held-out phantoms it raised the stage 2 AUC by
#: about 0.01 and the three-class kappa by 0.01-0.02 over hard targets.
LABEL_SOFTNESS = 0.3
#: Distillation temperature and weight unless the caller sets them.
DEFAULT_DISTILLATION = DistillationSettings()
#: The paper's proxy-label thresholds (0.99 normal, 0.75 low bone mass).
PAPER_PROXY_THRESHOLDS = ProxyThresholds()
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
#: near 0.77; three times the phantoms and a cosine decay of the rate bring it above 0.80. 0.3.0 is
#: the same recipe with the albumentations weak augmentation (0.2.0 had hand-written flips and
#: gamma); on 10 held-out seeds x 80 phantoms its lowest three-class kappa was 0.824 (0.2.0: 0.802).
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
    version="0.3.0",
)


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Films:
    """Preprocessed films: truncated images (N, S, S) in [0, 255], categories and T-scores.

    A proxy-labelled film has no T-score (NaN): its targets are its proxy class, hard.
    """

    images: torch.Tensor
    categories: tuple[Category, ...]
    t_scores: torch.Tensor
    synthetic: bool
    files: tuple[Path, ...] = ()

    def __add__(self, other: _Films) -> _Films:
        return _Films(
            images=torch.cat([self.images, other.images]),
            categories=self.categories + other.categories,
            t_scores=torch.cat([self.t_scores, other.t_scores]),
            # A model that saw any phantom is a synthetic model.
            synthetic=self.synthetic or other.synthetic,
            files=self.files + other.files,
        )

    def targets(self, stage: Stage) -> torch.Tensor:
        positive = (
            Category.OSTEOPOROSIS if stage is Stage.OSTEOPOROSIS else Category.LOW_BONE_MASS
        )
        return torch.tensor(
            [category is positive for category in self.categories], dtype=torch.long
        )

    def soft_targets(self, stage: Stage) -> torch.Tensor:
        """Each film's probability of the stage's positive class (:data:`LABEL_SOFTNESS`).

        Stage 2 never trains on osteoporotic films: their values (near 1) go unused. Films
        without a T-score (proxy labels) get their class's hard target.
        """
        cut_off = OSTEOPOROSIS_T_SCORE if stage is Stage.OSTEOPOROSIS else NORMAL_T_SCORE
        soft = torch.sigmoid((cut_off - self.t_scores) / LABEL_SOFTNESS)
        return torch.where(torch.isnan(self.t_scores), self.targets(stage).float(), soft)

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
    return _decode_films(usable, preprocessing, show_progress)


def _decode_films(
    usable: Sequence[PhantomRecord], preprocessing: ChestPreprocessing, show_progress: bool
) -> _Films:
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
        files=tuple(Path(record.file) for record in usable),
    )


# --- teachers and proxy labels ----------------------------------------------------------------


@dataclass(frozen=True)
class _TwoStageModel:
    """A trained chest model used as a teacher or to make proxy labels."""

    networks: dict[Stage, nn.Module]
    preprocessing: ChestPreprocessing
    device: torch.device
    name: str

    @classmethod
    def load(cls, folder: Path, device: torch.device) -> _TwoStageModel:
        """Load a chest model folder.

        Raises
        ------
        osteonode.zoo.ModelError
            Not a chest model, or a folder that does not load.
        """
        model = load_model(folder, device=str(device))
        pipeline = ChestPipeline.from_model(model, PipelineSettings())
        return cls(
            pipeline.networks, pipeline.preprocessing, device, f"{model.card.name} {model.card.version}"
        )

    @torch.no_grad()
    def logits(self, truncated: np.ndarray) -> dict[Stage, torch.Tensor]:
        """Each stage's (N, 2) logits on films truncated with :attr:`preprocessing`."""
        inputs = self.preprocessing.normalise(torch.from_numpy(truncated)).to(self.device)
        return {
            stage: network.eval()(inputs).float().cpu() for stage, network in self.networks.items()
        }


def _teacher_logits(
    teacher: _TwoStageModel, films: _Films, preprocessing: ChestPreprocessing, batch_size: int
) -> dict[Stage, torch.Tensor]:
    """The teacher's stage logits on every film, as the teacher's preprocessing prepares it.

    Films are truncated again from their files only when the teacher's input differs from the
    student's.
    """
    same_input = teacher.preprocessing.size == preprocessing.size
    chunks: dict[Stage, list[torch.Tensor]] = {stage: [] for stage in Stage}
    for start in range(0, len(films.categories), batch_size):
        if same_input:
            truncated = films.images[start : start + batch_size].numpy()
        else:
            truncated = np.stack(
                [
                    teacher.preprocessing.truncate(load_radiograph(file).pixels)
                    for file in films.files[start : start + batch_size]
                ]
            )
        for stage, logits in teacher.logits(truncated).items():
            chunks[stage].append(logits)
    return {stage: torch.cat(parts) for stage, parts in chunks.items()}


@dataclass(frozen=True)
class _ProxyFilms:
    """Films that earned a proxy label, with the labeller's logits, and the counts."""

    films: _Films
    logits: dict[Stage, torch.Tensor]
    counts: ProxyCounts


def _proxy_films(
    directory: Path,
    labeller: _TwoStageModel,
    preprocessing: ChestPreprocessing,
    thresholds: ProxyThresholds,
    batch_size: int,
) -> _ProxyFilms:
    """Run ``labeller`` over the films of ``directory`` and keep the confident ones.

    A file that cannot be read or truncated is counted with its reason and logged, never fatal.
    """
    counts = ProxyCounts()
    kept: list[tuple[Path, np.ndarray, Category, dict[Stage, torch.Tensor], bool]] = []
    pending: list[tuple[Path, np.ndarray, np.ndarray, bool]] = []

    def label_pending() -> None:
        logits = labeller.logits(np.stack([item[2] for item in pending]))
        probabilities = {s: torch.softmax(v, dim=1)[:, 1].numpy() for s, v in logits.items()}
        labels = proxy_labels(
            probabilities[Stage.OSTEOPOROSIS], probabilities[Stage.LOW_BONE_MASS], thresholds
        )
        for index, ((file, student, _, synthetic), label) in enumerate(zip(pending, labels, strict=True)):
            if label is not None:
                counts.accepted[label] += 1
                kept.append((file, student, label, {s: v[index] for s, v in logits.items()}, synthetic))
        pending.clear()

    for file in unlabeled_files(directory):
        counts.offered += 1
        try:
            radiograph = load_radiograph(file)
            student = preprocessing.truncate(radiograph.pixels)
            for_labeller = labeller.preprocessing.truncate(radiograph.pixels)
        except ImageError as error:
            counts.unreadable[error.reason.value] += 1
            log.warning("proxy_film_unreadable", file=str(file), reason=error.reason.value, detail=str(error))
            continue
        except ValueError as error:  # grayscale truncation of a film without contrast
            counts.unreadable["truncation_failed"] += 1
            log.warning("proxy_film_unreadable", file=str(file), reason="truncation_failed", detail=str(error))
            continue
        synthetic = str(radiograph.header.get("SoftwareVersions", "")) == PHANTOM_SOFTWARE
        pending.append((file, student, for_labeller, synthetic))
        if len(pending) == batch_size:
            label_pending()
    if pending:
        label_pending()
    log.info(
        "proxy_labels_made",
        offered=counts.offered,
        unreadable=sum(counts.unreadable.values()),
        **{f"accepted_{c.value}": n for c, n in counts.accepted.items()},
    )
    size = preprocessing.size
    films = _Films(
        images=torch.from_numpy(
            np.stack([item[1] for item in kept]) if kept else np.zeros((0, size, size), np.float32)
        ),
        categories=tuple(item[2] for item in kept),
        t_scores=torch.full((len(kept),), math.nan),
        synthetic=any(item[4] for item in kept),
        files=tuple(item[0] for item in kept),
    )
    logits = {
        stage: torch.stack([item[3][stage] for item in kept]) if kept else torch.zeros(0, 2)
        for stage in Stage
    }
    return _ProxyFilms(films, logits, counts)


# --- the task fit() runs ---------------------------------------------------------------------


@dataclass
class _StageTask:
    """One stage's batches, loss and metric (validation AUC).

    With a teacher, each training target row is the film's two soft-label probabilities followed
    by the teacher's two logits (the loop hands the task one target tensor per batch).
    """

    films: _Films
    stage: Stage
    preprocessing: ChestPreprocessing
    train_index: np.ndarray
    validation_index: np.ndarray
    batch_size: int
    augmenter: Augmenter
    teacher_logits: torch.Tensor | None = None
    distillation: DistillationSettings | None = None
    metric_name: str = "auc"

    def __post_init__(self) -> None:
        self.targets = self.films.targets(self.stage)
        positive = self.films.soft_targets(self.stage)
        self.soft_targets = torch.stack([1.0 - positive, positive], dim=1)
        if self.teacher_logits is not None:
            self.soft_targets = torch.cat([self.soft_targets, self.teacher_logits], dim=1)

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
        """Cross-entropy against soft (training, (N, 2) float) or hard (validation) targets;
        with a teacher, the distillation loss on training batches ((N, 4) targets)."""
        if targets.ndim == 2 and targets.shape[1] == 4:
            assert self.distillation is not None  # teacher logits come with their settings
            return distillation_loss(outputs, targets[:, :2], targets[:, 2:], self.distillation)
        return F.cross_entropy(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        truth = targets.numpy()
        if truth.min() == truth.max():
            # AUC is undefined with one class; fall back to agreement so training still ranks epochs.
            return float((outputs.argmax(dim=1) == targets).float().mean())
        return roc_auc(truth, torch.softmax(outputs.float(), dim=1)[:, 1].numpy())

    def _augment(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The augmentation spec on the truncated films, then the pipeline's normalisation."""
        return self.preprocessing.normalise(torch.from_numpy(self.augmenter(images.numpy(), rng)))


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
    augmentation: AugmentationSpec = CHEST_WEAK,
    teacher: Path | None = None,
    distillation: DistillationSettings = DEFAULT_DISTILLATION,
    unlabeled: Path | None = None,
    proxy_thresholds: ProxyThresholds = PAPER_PROXY_THRESHOLDS,
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
    augmentation
        What the training films go through; the paper's weak augmentation by default.
    teacher
        A chest model folder to distil from (knowledge distillation); None trains on the labels
        alone.
    distillation
        Temperature and weight of the distillation loss (with ``teacher``).
    unlabeled
        A folder of chest films without truth to draw proxy labels from; None makes none.
    proxy_thresholds
        Per-class confidence a proxy label needs (with ``unlabeled``).

    Returns
    -------
    ModelCard
        The card as written.

    Raises
    ------
    ValueError
        The cohort is not a chest cohort or too small.
    osteonode.zoo.ModelError
        ``teacher`` is not a loadable chest model.
    NotADirectoryError
        ``unlabeled`` is not a folder.
    osteonode.nets.CheckpointError
        ``init`` does not fit the network (missing and unexpected keys listed).
    """
    if configuration is None:
        configuration = PAPER_CONFIGURATION if init is not None else DEMO_CONFIGURATION
    if not isinstance(augmentation, AugmentationSpec):
        raise TypeError(f"augmentation must be an AugmentationSpec, got {type(augmentation).__name__}")
    preprocessing = configuration.preprocessing
    # The teacher is loaded first: a wrong folder fails before any film is decoded.
    teacher_model = None if teacher is None else _TwoStageModel.load(Path(teacher), device)
    if unlabeled is not None and not Path(unlabeled).is_dir():
        raise NotADirectoryError(f"unlabelled films folder {unlabeled} is not a folder")
    films = _read_films(Path(cohort), preprocessing, show_progress)
    train_index, validation_index = split_indices(
        len(films.categories), settings.validation_fraction, settings.seed
    )
    checkpoints = Path(out) / "checkpoints"
    stages = _StageTraining(
        configuration, settings, device, resume, show_progress, augmentation.augmenter(TRUNCATED_RANGE)
    )
    record: dict[str, str | int | float] = {"augmentation": augmentation.describe()}
    proxies: _ProxyFilms | None = None
    labeller: _TwoStageModel | None = None
    if unlabeled is not None:
        labeller = teacher_model
        if labeller is None:
            # The paper's order: a supervised model first, then its confident answers as labels.
            first = stages.run(films, train_index, validation_index, checkpoints / "supervised", init)
            labeller = _TwoStageModel(first.networks, preprocessing, device, "supervised first pass")
        proxies = _proxy_films(Path(unlabeled), labeller, preprocessing, proxy_thresholds, settings.batch_size)
        record |= {"proxy_labeller": labeller.name, **proxies.counts.as_card(proxy_thresholds)}
        train_index = np.concatenate(
            [train_index, len(films.categories) + np.arange(len(proxies.films.categories))]
        )
        films_with_proxies = films + proxies.films
    else:
        films_with_proxies = films
    teacher_logits = None
    if teacher_model is not None:
        teacher_logits = _teacher_logits(teacher_model, films, preprocessing, settings.batch_size)
        if proxies is not None:
            # The teacher labelled the proxies: their logits are already at hand.
            proxy_logits = (
                proxies.logits
                if labeller is teacher_model
                else _teacher_logits(teacher_model, proxies.films, preprocessing, settings.batch_size)
            )
            teacher_logits = {s: torch.cat([teacher_logits[s], proxy_logits[s]]) for s in Stage}
        record |= {
            "distillation_teacher": teacher_model.name,
            "distillation_temperature": distillation.temperature,
            "distillation_weight": distillation.weight,
        }
    final = stages.run(
        films_with_proxies,
        train_index,
        validation_index,
        checkpoints,
        init,
        teacher_logits=teacher_logits,
        distillation=distillation if teacher_model is not None else None,
    )
    networks = final.networks
    metrics = _validation_metrics(
        networks, films, validation_index, preprocessing, device, settings.batch_size
    )
    labelled_train = len(train_index) - (0 if proxies is None else len(proxies.films.categories))
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
            f" from {Path(cohort).name}; {labelled_train} for training, {len(validation_index)} for"
            f" validation (split seed {settings.seed}); stage 1 on all films, stage 2 on the"
            f" non-osteoporotic ones starting from stage 1; best epochs {final.best_epochs[Stage.OSTEOPOROSIS]}"
            f" and {final.best_epochs[Stage.LOW_BONE_MASS]}; labels: WHO category of the lowest-site T-score,"
            f" as soft targets within about {LABEL_SOFTNESS:g} T-score units of each cut-off."
            + (f" Initialised from {Path(init).name}." if init is not None else "")
            + (
                f" {len(proxies.films.categories)} proxy-labelled films from {Path(unlabeled).name}"  # type: ignore[arg-type]
                f" added to training (labelled by {record['proxy_labeller']})."
                if proxies is not None
                else ""
            )
            + (
                f" Distilled from {teacher_model.name} (temperature {distillation.temperature:g},"
                f" weight {distillation.weight:g})."
                if teacher_model is not None
                else ""
            )
            + (
                " The chest phantoms exaggerate how bone density changes the film (skeletal quality"
                f" to the power {CHEST_QUALITY_EXPONENT:g}): figures on phantoms say nothing about"
                " real films."
                if films.synthetic
                else ""
            )
        ),
        synthetic=films_with_proxies.synthetic,
        diagnostic_use=False,
        input_size=(preprocessing.size, preprocessing.size),
        normalisation=preprocessing.describe(),
        metrics=metrics,
        training=record,
        networks=[
            NetworkEntry(
                role=stage.value,
                architecture=configuration.architecture,
                options=stages.options,
                weights=f"{stage.value}.safetensors",
            )
            for stage in Stage
        ],
    )
    written = save_model(out, card, {stage.value: network for stage, network in networks.items()})
    log.info("chest_model_written", out=str(out), **metrics)
    return written


@dataclass(frozen=True)
class _TrainedStages:
    networks: dict[Stage, nn.Module]
    best_epochs: dict[Stage, int]


@dataclass(frozen=True)
class _StageTraining:
    """How both stages are trained; :meth:`run` trains them on one set of films."""

    configuration: ChestConfiguration
    settings: TrainingSettings
    device: torch.device
    resume: bool
    show_progress: bool
    augmenter: Augmenter

    @property
    def options(self) -> dict[str, int]:
        return {"num_classes": 2, "in_chans": self.configuration.preprocessing.channels}

    def run(
        self,
        films: _Films,
        train_index: np.ndarray,
        validation_index: np.ndarray,
        checkpoints: Path,
        init: Path | None,
        *,
        teacher_logits: dict[Stage, torch.Tensor] | None = None,
        distillation: DistillationSettings | None = None,
    ) -> _TrainedStages:
        """Stage 1 from ``init`` (or scratch), then stage 2 from stage 1's weights."""
        networks: dict[Stage, nn.Module] = {}
        best_epochs: dict[Stage, int] = {}
        previous: nn.Module | None = None
        for stage in Stage:
            torch.manual_seed(self.settings.seed)
            network = build_network(self.configuration.architecture, **self.options)
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
                preprocessing=self.configuration.preprocessing,
                train_index=films.stage_indices(stage, train_index),
                validation_index=films.stage_indices(stage, validation_index),
                batch_size=self.settings.batch_size,
                augmenter=self.augmenter,
                teacher_logits=None if teacher_logits is None else teacher_logits[stage],
                distillation=distillation,
            )
            outcome = fit(
                network,
                task,
                self.settings,
                checkpoints / f"{stage.value}.pt",
                device=self.device,
                resume=self.resume,
                show_progress=self.show_progress,
            )
            log.info(
                "chest_stage_trained",
                stage=stage.value,
                best_auc=outcome.best_metric,
                best_epoch=outcome.best_epoch,
                epochs=len(outcome.history),
            )
            networks[stage] = network.eval()
            best_epochs[stage] = outcome.best_epoch
            previous = network
        return _TrainedStages(networks, best_epochs)


def validate(
    model_dir: Path, records: Sequence[PhantomRecord], batch_size: int = 16
) -> dict[str, float]:
    """The card's validation figures of a written chest model on films with truth.

    Parameters
    ----------
    model_dir
        The model folder.
    records
        Films with ground truth (e.g. held-out phantoms); those not evaluable are left out.
    batch_size
        Films per forward pass.

    Returns
    -------
    dict
        ``validation_films``, ``stage1_auc`` (osteoporosis vs not, all films), ``stage2_auc``
        (low bone mass vs normal, films that are not osteoporotic), ``three_class_accuracy`` and
        ``three_class_kappa_quadratic`` of the two stages' final answer at the paper's cut-off.
    """
    device = torch.device("cpu")
    model = _TwoStageModel.load(Path(model_dir), device)
    films = _decode_films([r for r in records if r.evaluable], model.preprocessing, False)
    every = np.arange(len(films.categories))
    return _validation_metrics(model.networks, films, every, model.preprocessing, device, batch_size)


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


def _validation_metrics(
    networks: dict[Stage, nn.Module],
    films: _Films,
    validation_index: np.ndarray,
    preprocessing: ChestPreprocessing,
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    probabilities = {
        stage: positive_probabilities(
            network, films.images, validation_index, preprocessing.normalise, device, batch_size
        )
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
