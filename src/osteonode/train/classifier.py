"""Training of two-class film classifiers for the generic classifier pipeline (``pipeline =
"classifier"`` in the model card), and the lumbar AP and lateral methods of Boonrod et al. 2025.

A :class:`ClassifierConfiguration` holds everything about such a model that is not learnt: the
network, the paper's preprocessing (:class:`~osteonode.imaging.transforms.ClassifierTransform`)
and input size, the per-channel normalisation, the films the method reads and where its finding
is. :func:`train` learns osteoporosis (DXA T-score <= -2.5) against not from a cohort table and
writes a model folder whose card carries that configuration as its ``[classifier]`` section, so
the pipeline prepares a film exactly as the trainer did: every film goes through
:func:`~osteonode.imaging.transforms.classifier_input` once, is kept in memory, and each batch is
augmented (horizontal flip, the hip paper's choice of blur / sharpen / shear / small rotation,
a random gamma) before ``(x - mean) / std``.

The targets are soft (:data:`~osteonode.train.chest.LABEL_SOFTNESS`, as for the chest stages): a
film whose T-score lies within DXA's precision of -2.5 is not pushed as hard to one side as a film
far from it. Validation reports the AUC and the sensitivity and specificity at the card's cut-off.

Two configurations are shipped, one per pipeline (:data:`CONFIGURATIONS`):

- ``lumbar_ap``: Boonrod et al.'s AP lumbar ResNet-18 (published AUC 0.79, sensitivity 79.7 %,
  specificity 66.5 %);
- ``lumbar_lateral``: their lateral lumbar DarkNet-19 (AUC 0.82, sensitivity 87.5 %,
  specificity 79.4 %).

Their demo recipes (:data:`DEMO_RECIPES`) train quarter-width networks at 192 x 192 from scratch
on synthetic phantoms (frontal lumbar films, :mod:`osteonode.phantoms.lumbar`; lateral ones,
:mod:`osteonode.phantoms.lumbar_lateral`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from rich.progress import track

from osteonode.bone import OSTEOPOROSIS_T_SCORE, Category
from osteonode.evaluate.metrics import classification_report, roc_auc
from osteonode.imaging.pixels import load_radiograph
from osteonode.imaging.transforms import ClassifierTransform, classifier_input
from osteonode.nets import build_network, load_pretrained
from osteonode.phantoms import read_cohort
from osteonode.phantoms.enum import Part
from osteonode.pipelines.base import FindingSite, Method
from osteonode.train import DemoRecipe
from osteonode.train.augment import CHEST_WEAK, AugmentationSpec, Combine, Step, TransformName
from osteonode.train.chest import LABEL_SOFTNESS, PHANTOM_SOFTWARE
from osteonode.train.loop import (
    LearningRateSchedule,
    TrainingSettings,
    fit,
    positive_probabilities,
    split_indices,
)
from osteonode.zoo import ClassifierSpec, ClassifierStage, ModelCard, NetworkEntry, save_model

__all__ = [
    "CONFIGURATIONS",
    "DEMO_RECIPES",
    "LUMBAR_AP",
    "LUMBAR_LATERAL",
    "TRAINERS",
    "ClassifierConfiguration",
    "ClassifierTrainer",
    "ScreeningFigures",
    "screening_figures",
    "train",
]

log = structlog.get_logger(__name__)

#: Role of the network in the card, and the stage that reads it.
NETWORK_ROLE = "classifier"
#: The cut-off written into the card and used for the validation figures (the papers' 0.5).
DEFAULT_THRESHOLD = 0.5
#: Each film flipped or not and its exposure varied (the chest paper's weak augmentation), then one
#: of original, blurred, sharpened, sheared or slightly rotated: gentler than the hip paper's ranges,
#: for a whole film whose density signal is in the grey levels a strong blur would change.
AUGMENTATION = (
    CHEST_WEAK,
    AugmentationSpec(
        (
            Step(TransformName.NO_OP, 1.0),
            Step(TransformName.GAUSSIAN_BLUR, 1.0, {"sigma_limit": (0.3, 1.0), "blur_limit": 0}),
            Step(TransformName.SHARPEN, 1.0, {"alpha": (0.1, 0.3), "lightness": (1.0, 1.0)}),
            Step(TransformName.AFFINE, 1.0, {"shear": (-5.0, 5.0), "border_mode": 1}),
            Step(TransformName.AFFINE, 1.0, {"rotate": (-7.0, 7.0), "border_mode": 1}),
        ),
        Combine.ONE_OF,
    ),
)
#: Fewest evaluable films a cohort must have, and of each class.
MIN_FILMS = 10
MIN_PER_CLASS = 2


@dataclass(frozen=True)
class ClassifierConfiguration:
    """A two-class screening method apart from its weights.

    Parameters
    ----------
    architecture
        A name of :data:`osteonode.nets.ARCHITECTURES`.
    paper_architecture
        The network the paper used (the same name when the model is the paper's).
    input_size
        (rows, columns) the network sees.
    transform
        The paper's preprocessing of the whole film.
    mean, std
        Per-channel normalisation after the transform; as many values as ``in_chans`` or one.
    in_chans
        Input channels of the network (the image is repeated into them).
    finding_site
        Where the finding is.
    views
        Canonical views the method reads (:func:`osteonode.header.canonical_view`: LL and RL are
        LATERAL); a film with another recorded view is refused.
    min_age_years, population
        The population the method is meant for.
    method
        One sentence naming the method and its source, for the card's description.
    published
        The paper's figures, for the card.
    films
        What the method reads, in a reader's words ("AP lumbar spine radiographs").

    Raises
    ------
    ValueError
        If a value is out of range.
    """

    architecture: str
    paper_architecture: str
    input_size: tuple[int, int]
    transform: ClassifierTransform
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    finding_site: FindingSite
    views: tuple[str, ...]
    min_age_years: int | None
    population: str
    method: str
    published: str
    films: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "transform", ClassifierTransform(self.transform))
        object.__setattr__(self, "finding_site", FindingSite(self.finding_site))
        if len(self.input_size) != 2 or min(self.input_size) < 32:
            raise ValueError(f"input_size must be (rows, columns) of at least 32, got {self.input_size}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans!r}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.in_chans):
                raise ValueError(f"{name} needs 1 or {self.in_chans} values, got {getattr(self, name)}")
        if any(value <= 0 for value in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` of (N, rows, columns) transformed films, as (N, in_chans, rows, cols).

        Parameters
        ----------
        images
            Output of :func:`classifier_input`, batched.

        Returns
        -------
        torch.Tensor
            The network input.
        """
        channels = images[:, None].expand(-1, self.in_chans, -1, -1)
        mean = torch.tensor(self.mean, dtype=images.dtype).reshape(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).reshape(1, -1, 1, 1)
        return (channels - mean) / std

    def specification(self, threshold: float = DEFAULT_THRESHOLD) -> ClassifierSpec:
        """The card's ``[classifier]`` section: this method with one osteoporosis stage."""
        return ClassifierSpec(
            finding_site=self.finding_site,
            transform=self.transform,
            mean=list(self.mean),
            std=list(self.std),
            views=list(self.views),
            min_age_years=self.min_age_years,
            population=self.population,
            stages=[
                ClassifierStage(
                    network=NETWORK_ROLE,
                    finding="Osteoporosis",
                    positive=Category.OSTEOPOROSIS,
                    negative=Category.NOT_OSTEOPOROSIS,
                    threshold=threshold,
                )
            ],
        )


_ADULTS = "adults aged 50 or over"
_LUMBAR_NORMALISATION = {
    "transform": ClassifierTransform.GRAYSCALE_TRUNCATION,
    "mean": (0.5,),
    "std": (0.25,),
    "in_chans": 1,
    "finding_site": FindingSite.LUMBAR_SPINE,
    "min_age_years": 50,
    "population": _ADULTS,
    "input_size": (192, 192),
}
#: Boonrod et al. 2025, AP lumbar film: the demo network is a quarter-width ResNet-18.
LUMBAR_AP = ClassifierConfiguration(
    architecture="resnet18_demo",
    paper_architecture="resnet18",
    views=("AP", "PA"),
    method="Osteoporosis (T-score <= -2.5) or not from an AP lumbar spine radiograph, after"
    " Boonrod et al. 2025 (J Bone Miner Metab), ResNet-18.",
    published="Published (ResNet-18, AP films): AUC 0.79, sensitivity 79.7 %, specificity 66.5 %.",
    films="AP lumbar spine radiographs",
    **_LUMBAR_NORMALISATION,
)
#: Boonrod et al. 2025, lateral lumbar film: the demo network is a quarter-width DarkNet-19.
LUMBAR_LATERAL = ClassifierConfiguration(
    architecture="darknet19_demo",
    paper_architecture="darknet19",
    views=("LATERAL",),
    method="Osteoporosis (T-score <= -2.5) or not from a lateral lumbar spine radiograph, after"
    " Boonrod et al. 2025 (J Bone Miner Metab), DarkNet-19.",
    published="Published (DarkNet-19, lateral films): AUC 0.82, sensitivity 87.5 %,"
    " specificity 79.4 %.",
    films="lateral lumbar spine radiographs",
    **_LUMBAR_NORMALISATION,
)
#: The classifier pipelines this version can train, by pipeline name.
CONFIGURATIONS: Mapping[str, ClassifierConfiguration] = MappingProxyType(
    {"lumbar_ap": LUMBAR_AP, "lumbar_lateral": LUMBAR_LATERAL}
)

#: Short enough for 2 shared CPU cores (some 10-15 minutes per model): trial runs on 1500
#: phantoms reached a held-out AUC above 0.9 within two epochs for both views.
_DEMO_SETTINGS = TrainingSettings(
    epochs=8,
    batch_size=32,
    learning_rate=2e-3,
    weight_decay=0.05,
    patience=0,
    seed=0,
    validation_fraction=0.15,
    schedule=LearningRateSchedule.COSINE,
    warmup_epochs=1,
)
#: How the shipped demo weights are made (``osteonode train <pipeline> --demo``).
DEMO_RECIPES: Mapping[str, DemoRecipe] = MappingProxyType(
    {
        "lumbar_ap": DemoRecipe(
            phantoms=1600,
            size=256,
            seed=1501,
            hard_fraction=0.0,
            settings=_DEMO_SETTINGS,
            name="lumbar-ap-demo",
            version="0.1.0",
            part=Part.LUMBAR.value,
        ),
        "lumbar_lateral": DemoRecipe(
            phantoms=1600,
            size=256,
            seed=1502,
            hard_fraction=0.0,
            settings=_DEMO_SETTINGS,
            name="lumbar-lateral-demo",
            version="0.1.0",
            part=Part.LUMBAR_LATERAL.value,
        ),
    }
)


# --- figures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreeningFigures:
    """A two-class method's figures on a set of films.

    Parameters
    ----------
    films, positives
        Films scored and how many of them are osteoporotic.
    auc
        Area under the ROC curve (NaN with one class only).
    sensitivity, specificity
        At ``threshold`` (NaN without positives or negatives).
    threshold
        The cut-off on the probability of osteoporosis.
    """

    films: int
    positives: int
    auc: float
    sensitivity: float
    specificity: float
    threshold: float


def screening_figures(
    osteoporotic: np.ndarray, probability: np.ndarray, threshold: float
) -> ScreeningFigures:
    """AUC, and sensitivity and specificity at a cut-off, with the project's metrics.

    Parameters
    ----------
    osteoporotic
        Truth per film (bool).
    probability
        The method's probability of osteoporosis per film.
    threshold
        Films at or above it are called osteoporotic.

    Returns
    -------
    ScreeningFigures

    Raises
    ------
    ValueError
        If the arrays are empty or of different lengths.
    """
    truth = np.asarray(osteoporotic, dtype=bool)
    scores = np.asarray(probability, dtype=np.float64)
    if truth.ndim != 1 or truth.shape != scores.shape or truth.size == 0:
        raise ValueError(
            f"need one truth and one probability per film, got {truth.shape} and {scores.shape}"
        )
    positives = int(truth.sum())
    auc = roc_auc(truth, scores) if 0 < positives < truth.size else float("nan")
    called = classification_report(
        truth.astype(int), (scores >= threshold).astype(int), [0, 1]
    ).for_label(1)
    return ScreeningFigures(
        films=int(truth.size),
        positives=positives,
        auc=auc,
        sensitivity=called.sensitivity.estimate,
        specificity=called.specificity.estimate,
        threshold=threshold,
    )


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Films:
    """Transformed films (N, rows, columns), their T-scores and whether all are phantoms."""

    images: torch.Tensor
    t_scores: torch.Tensor
    synthetic: bool

    @property
    def osteoporotic(self) -> torch.Tensor:
        return (self.t_scores <= OSTEOPOROSIS_T_SCORE).long()

    @property
    def soft_targets(self) -> torch.Tensor:
        """(N, 2): each film's chance of being osteoporotic given DXA's precision, and not."""
        positive = torch.sigmoid((OSTEOPOROSIS_T_SCORE - self.t_scores) / LABEL_SOFTNESS)
        return torch.stack([1.0 - positive, positive], dim=1)


def _read_films(
    cohort: Path, configuration: ClassifierConfiguration, show_progress: bool
) -> _Films:
    records = [record for record in read_cohort(cohort) if record.evaluable]
    if len(records) < MIN_FILMS:
        raise ValueError(
            f"cohort {cohort} has {len(records)} evaluable films; at least {MIN_FILMS} are needed"
        )
    images = np.empty((len(records), *configuration.input_size), dtype=np.float32)
    synthetic = True
    wrong_view: list[str] = []
    items = (
        track(enumerate(records), total=len(records), description="decoding films")
        if show_progress
        else enumerate(records)
    )
    for index, record in items:
        radiograph = load_radiograph(record.file)
        view = radiograph.facts.view  # canonical, as the classifier pipeline reads it
        if view and configuration.views and view not in configuration.views:
            wrong_view.append(f"{record.file.name} ({view})")
        images[index] = classifier_input(
            radiograph.pixels, configuration.transform, configuration.input_size
        )
        synthetic &= str(radiograph.header.get("SoftwareVersions", "")) == PHANTOM_SOFTWARE
    if wrong_view:
        shown = ", ".join(wrong_view[:5]) + (f" and {len(wrong_view) - 5} more" if len(wrong_view) > 5 else "")
        raise ValueError(
            f"cohort {cohort} holds {len(wrong_view)} films whose View Position is not one the"
            f" method reads ({', '.join(configuration.views)}): {shown}"
        )
    t_scores = torch.tensor([record.t_score for record in records], dtype=torch.float32)
    positives = int((t_scores <= OSTEOPOROSIS_T_SCORE).sum())
    if min(positives, len(records) - positives) < MIN_PER_CLASS:
        raise ValueError(
            f"cohort {cohort} has {positives} osteoporotic and {len(records) - positives} other"
            f" evaluable films; at least {MIN_PER_CLASS} of each are needed"
        )
    log.info("classifier_cohort_read", films=len(records), osteoporotic=positives)
    return _Films(torch.from_numpy(images), t_scores, synthetic)


# --- the task fit() runs ------------------------------------------------------------------------


@dataclass
class _ClassifierTask:
    """Batches, loss and metric (validation AUC) of one two-class classifier."""

    films: _Films
    configuration: ClassifierConfiguration
    train_index: np.ndarray
    validation_index: np.ndarray
    batch_size: int
    metric_name: str = "auc"

    def __post_init__(self) -> None:
        self._augmenters = tuple(spec.augmenter(value_range=(0.0, 1.0)) for spec in AUGMENTATION)

    def train_batches(
        self, epoch: int, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng.permutation(self.train_index)
        targets = self.films.soft_targets
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield self._augment(self.films.images[chosen], rng), targets[chosen]

    def validation_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        truth = self.films.osteoporotic
        for start in range(0, len(self.validation_index), self.batch_size):
            chosen = self.validation_index[start : start + self.batch_size]
            yield self.configuration.normalise(self.films.images[chosen]), truth[chosen]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against soft (training, (N, 2) float) or hard (validation) targets."""
        return F.cross_entropy(outputs, targets)

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        truth = targets.numpy()
        if truth.min() == truth.max():
            # AUC is undefined with one class; agreement still ranks the epochs.
            return float((outputs.argmax(dim=1) == targets).float().mean())
        return roc_auc(truth, torch.softmax(outputs.float(), dim=1)[:, 1].numpy())

    def _augment(self, images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """:data:`AUGMENTATION` on films in [0, 1], then the network's normalisation."""
        augmented = images.numpy()
        for augmenter in self._augmenters:
            augmented = augmenter(augmented, rng)
        return self.configuration.normalise(torch.from_numpy(augmented))


# --- training -----------------------------------------------------------------------------------


def train(
    cohort: Path,
    out: Path,
    settings: TrainingSettings,
    *,
    configuration: ClassifierConfiguration,
    device: torch.device,
    resume: bool = True,
    name: str,
    version: str,
    init: Path | None = None,
    show_progress: bool = True,
) -> ModelCard:
    """Train a two-class osteoporosis classifier on a cohort and write the model folder.

    Parameters
    ----------
    cohort
        Cohort table (phantom format: ``file``, ``t_score``, ``evaluable``); films whose View
        Position is recorded must be ones the method reads.
    out
        Model folder; checkpoints go to ``out/checkpoints/`` and are resumed from.
    settings
        Epochs, batch size, optimiser, early stopping, seed, validation share.
    configuration
        Network, preprocessing and method (:data:`CONFIGURATIONS`).
    device
        Where to train.
    resume
        Continue from the checkpoints in ``out/checkpoints``.
    name, version
        The model card's name and version.
    init
        A pretrained checkpoint to start from (:func:`osteonode.nets.load_pretrained`: e.g. a
        torchvision ImageNet ResNet-18 for the paper's network).
    show_progress
        Progress bars on the terminal.

    Returns
    -------
    ModelCard
        The card as written.

    Raises
    ------
    ValueError
        The cohort is too small, has too few films of a class, or holds films of another view.
    osteonode.nets.CheckpointError
        ``init`` does not fit the network.
    """
    if not isinstance(configuration, ClassifierConfiguration):
        raise TypeError(
            f"configuration must be a ClassifierConfiguration, got {type(configuration).__name__}"
        )
    films = _read_films(Path(cohort), configuration, show_progress)
    train_index, validation_index = split_indices(
        len(films.t_scores), settings.validation_fraction, settings.seed
    )
    options = {"num_classes": 2, "in_chans": configuration.in_chans}
    torch.manual_seed(settings.seed)
    network = build_network(configuration.architecture, **options)
    if init is not None:
        report = load_pretrained(network, init)
        log.info("classifier_init_loaded", checkpoint=str(init), layout=report.layout.value,
                 loaded=len(report.loaded_keys), stem_adapted=report.stem_adapted)
    task = _ClassifierTask(
        films=films,
        configuration=configuration,
        train_index=train_index,
        validation_index=validation_index,
        batch_size=settings.batch_size,
    )
    outcome = fit(
        network,
        task,
        settings,
        Path(out) / "checkpoints" / f"{NETWORK_ROLE}.pt",
        device=device,
        resume=resume,
        show_progress=show_progress,
    )
    network.eval()
    probability = positive_probabilities(
        network, films.images, validation_index, configuration.normalise, device, settings.batch_size
    )
    figures = screening_figures(
        films.osteoporotic[validation_index].numpy().astype(bool), probability, DEFAULT_THRESHOLD
    )
    metrics = {
        "best_epoch": float(outcome.best_epoch),
        "validation_films": float(figures.films),
        "validation_osteoporotic": float(figures.positives),
        "validation_auc": figures.auc,
        "validation_sensitivity": figures.sensitivity,
        "validation_specificity": figures.specificity,
    }
    metrics = {key: round(value, 4) for key, value in metrics.items() if np.isfinite(value)}
    card = ModelCard(
        name=name,
        version=version,
        pipeline=Method.CLASSIFIER,
        description=_description(configuration, films.synthetic),
        intended_use=(
            f"Opportunistic screening for osteoporosis on {configuration.films} of"
            f" {configuration.population}."
            + (" Demonstration only: trained on synthetic phantoms." if films.synthetic else "")
        ),
        training_data=(
            f"{len(films.t_scores)} evaluable {'synthetic phantom ' if films.synthetic else ''}"
            f"{configuration.films} from {Path(cohort).name}; {len(train_index)} for training,"
            f" {len(validation_index)} for validation (split seed {settings.seed}); best epoch"
            f" {outcome.best_epoch} of {len(outcome.history)}; labels: DXA T-score <= -2.5, as"
            f" soft targets within about {LABEL_SOFTNESS:g} T-score units of the cut-off."
            + (f" Initialised from {Path(init).name}." if init is not None else "")
        ),
        synthetic=films.synthetic,
        diagnostic_use=False,
        input_size=configuration.input_size,
        normalisation=(
            f"{configuration.transform.value} to {configuration.input_size[0]} x"
            f" {configuration.input_size[1]} in [0, 1], then (x - {list(configuration.mean)})"
            f" / {list(configuration.std)}"
        ),
        metrics=metrics,
        training={"augmentation": " then ".join(spec.describe() for spec in AUGMENTATION)},
        networks=[
            NetworkEntry(
                role=NETWORK_ROLE,
                architecture=configuration.architecture,
                options=options,
                weights=f"{NETWORK_ROLE}.safetensors",
            )
        ],
        classifier=configuration.specification(DEFAULT_THRESHOLD),
    )
    written = save_model(out, card, {NETWORK_ROLE: network})
    log.info("classifier_model_written", out=str(out), **metrics)
    return written


def _description(configuration: ClassifierConfiguration, synthetic: bool) -> str:
    rows, columns = configuration.input_size
    text = (
        f"{configuration.method} {configuration.architecture} at {rows} x {columns} after"
        f" {configuration.transform.value.replace('_', ' ')}. {configuration.published}"
    )
    if configuration.architecture != configuration.paper_architecture:
        text += (
            f" The network is narrower than the paper's {configuration.paper_architecture}"
            " (a quarter of its widths), trained from scratch."
        )
    if synthetic:
        text += " Synthetic, for demonstration, not for diagnostic use."
    return text


@dataclass(frozen=True)
class ClassifierTrainer:
    """The trainer of one classifier pipeline, in the shape of a per-pipeline training module.

    :func:`osteonode.train.trainer` hands it out where it hands out ``osteonode.train.chest`` for
    the chest pipeline: ``DEMO_RECIPE`` and ``train`` mean the same on both.

    Parameters
    ----------
    configuration
        The pipeline's method.
    DEMO_RECIPE
        How its demo weights are made.
    """

    configuration: ClassifierConfiguration
    DEMO_RECIPE: DemoRecipe  # the name the training modules give their recipe

    def train(self, cohort: Path, out: Path, settings: TrainingSettings, **options: object) -> ModelCard:
        """:func:`train` with this pipeline's configuration; same keyword arguments."""
        return train(cohort, out, settings, configuration=self.configuration, **options)


#: The trainer of each classifier pipeline this version ships, by pipeline name.
TRAINERS: Mapping[str, ClassifierTrainer] = MappingProxyType(
    {name: ClassifierTrainer(CONFIGURATIONS[name], DEMO_RECIPES[name]) for name in CONFIGURATIONS}
)
