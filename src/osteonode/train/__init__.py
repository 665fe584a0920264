"""Training and fine-tuning of the pipelines' networks on a cohort (DICOM files + ground truth).

Each pipeline has a module here (``lumbar``, ``chest``, ``hip``) with a ``train`` function and the
:class:`DemoRecipe` that makes the shipped demo weights from synthetic phantoms; :mod:`.loop` is the
training loop they share.
"""

from __future__ import annotations

from dataclasses import dataclass

from osteonode.train.loop import TrainingSettings

__all__ = ["DemoRecipe"]


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
