"""Training and fine-tuning of the pipelines' networks on a cohort (DICOM files + ground truth).

Each pipeline has a module here (``lumbar``, ``chest``, ``hip``) with a ``train`` function and the
:class:`DemoRecipe` that makes the shipped demo weights from synthetic phantoms; :mod:`.loop` is the
training loop they share.
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
    """

    phantoms: int
    size: int
    seed: int
    hard_fraction: float
    settings: TrainingSettings
    name: str
    version: str

    def __post_init__(self) -> None:
        if self.phantoms < 2 or self.size < 64:
            raise ValueError("a demo recipe needs at least 2 phantoms of at least 64 pixels")
        if not 0.0 <= self.hard_fraction < 1.0:
            raise ValueError("hard_fraction must lie in [0, 1)")


def trainer(part: str) -> ModuleType:
    """The training module of a pipeline (``osteonode.train.<part>``).

    Raises
    ------
    ValueError
        When this version of osteonode has no trainer for ``part``.
    """
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
    ``models_dir/<recipe name>``; an interrupted run resumes from its checkpoints.
    """
    from osteonode.phantoms import make_cohort

    module = trainer(part)
    recipe: DemoRecipe = module.DEMO_RECIPE
    cohort_dir = workdir / part
    cohort = make_cohort(
        part,
        recipe.phantoms,
        cohort_dir,
        seed=recipe.seed,
        size=recipe.size,
        hard_fraction=recipe.hard_fraction,
        progress=show_progress,
        workers=max(1, min(4, os.cpu_count() or 1)),
    )
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
