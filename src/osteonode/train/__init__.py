"""Training and fine-tuning of the pipelines' networks on a cohort (DICOM files + ground truth).

Each pipeline has a module here (``lumbar``, ``chest``, ``hip``) with a ``train`` function, a
``validate`` function (a written model's end-to-end figures on films with truth) and the
:class:`DemoRecipe` that makes the shipped demo weights from synthetic phantoms; the classifier
pipelines (``lumbar_ap``, ``lumbar_lateral``) share :mod:`.classifier`, which gives each a trainer
of the same shape. Shared by them: :mod:`.loop` (the training loop), :mod:`.augment` (declarative
albumentations augmentation), :mod:`.distillation` (knowledge-distillation loss) and :mod:`.proxy`
(proxy labels from unlabelled films).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from osteonode.train.loop import TrainingSettings

if TYPE_CHECKING:
    from osteonode.train.classifier import ClassifierTrainer
    from osteonode.zoo import ModelCard

__all__ = ["DemoRecipe", "train_demo", "trainer"]


@dataclass(frozen=True)
class DemoRecipe:
    """How the shipped demo weights of one pipeline are made, so ``make demo-weights`` repeats it.

    Parameters
    ----------
    phantoms
        Number of phantoms in the training cohort (validation split included).
    size
        Long side of the phantoms in pixels.
    seed
        Phantom seed; acceptance tests use other seeds.
    hard_fraction
        Share of "hard" phantoms (implants, scoliosis, cropped field) in the cohort.
    settings
        Training settings.
    name, version
        Model name and version written into the card.
    part
        The phantom part of the cohort (:class:`osteonode.phantoms.Part` value); None: the
        pipeline's own name.
    threads
        torch's intra-op threads while training. A CPU kernel splits its sums by thread, so
        the same seeds give the same weight bytes only with the same number of threads; torch's
        default (the machine's cores, or ``OMP_NUM_THREADS``) would tie the weights to the
        machine.
    """

    phantoms: int
    size: int
    seed: int
    hard_fraction: float
    settings: TrainingSettings
    name: str
    version: str
    part: str | None = None
    threads: int = 2

    def __post_init__(self) -> None:
        if self.phantoms < 2 or self.size < 64:
            raise ValueError("a demo recipe needs at least 2 phantoms of at least 64 pixels")
        if not 0.0 <= self.hard_fraction < 1.0:
            raise ValueError("hard_fraction must lie in [0, 1)")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads must be a positive whole number, got {self.threads!r}")


def trainer(part: str) -> ModuleType | ClassifierTrainer:
    """The trainer of a pipeline: ``osteonode.train.<part>``, or a classifier pipeline's.

    Raises
    ------
    ValueError
        When this version of osteonode has no trainer for ``part``.
    """
    from osteonode.train.classifier import TRAINERS

    if part in TRAINERS:
        return TRAINERS[part]
    try:
        return importlib.import_module(f"osteonode.train.{part}")
    except ModuleNotFoundError as error:
        if error.name != f"osteonode.train.{part}":
            raise
        raise ValueError(f"no trainer for the {part} pipeline in this version of osteonode") from None


def train_demo(
    part: str, *, workdir: Path, models_dir: Path, device: torch.device, show_progress: bool = True
) -> ModelCard:
    """Make the demo weights of ``part`` exactly as its :class:`DemoRecipe` says.

    The phantom cohort is written under ``workdir/<part>`` and the model into
    ``models_dir/<recipe name>``; an interrupted run resumes from its checkpoints. torch trains
    on the recipe's :attr:`~DemoRecipe.threads` (restored afterwards), so that the same command
    gives the same weight bytes.
    """
    from osteonode.phantoms import make_cohort

    module = trainer(part)
    recipe: DemoRecipe = module.DEMO_RECIPE
    cohort_dir = workdir / part
    cohort = make_cohort(
        recipe.part or part,
        recipe.phantoms,
        cohort_dir,
        seed=recipe.seed,
        size=recipe.size,
        hard_fraction=recipe.hard_fraction,
        progress=show_progress,
        workers=max(1, min(4, os.cpu_count() or 1)),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return module.train(
            cohort,
            models_dir / recipe.name,
            recipe.settings,
            device=device,
            resume=True,
            name=recipe.name,
            version=recipe.version,
            show_progress=show_progress,
        )
    finally:
        torch.set_num_threads(threads)
