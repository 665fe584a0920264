"""Proxy labels: unlabelled films the current model is confident about join the training set.

The chest paper (Park et al. 2025, METHODS.md section 2) ran its supervised model over
unlabelled chest films with normal findings and kept a film with the model's answer as its label
where the confidence reached a per-class threshold: 0.99 for normal, 0.75 for low bone mass
(:class:`ProxyThresholds`). The paper makes no osteoporosis proxy labels; a site may set a
threshold for that class too.

The chest model answers in two stages, so its three-class distribution is
P(osteoporosis) = p1, P(low bone mass) = (1 - p1) p2, P(normal) = (1 - p1)(1 - p2), with p1 and p2
the stage probabilities; a film is kept with its most probable class when that class's
probability reaches the class's threshold (:func:`proxy_labels`). What happened to every offered
film is counted in :class:`ProxyCounts`, which the model card records.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osteonode.bone import Category

__all__ = [
    "PROXY_CATEGORY_ORDER",
    "ProxyCounts",
    "ProxyThresholds",
    "category_probabilities",
    "proxy_labels",
    "unlabeled_files",
]

#: Column order of :func:`category_probabilities`.
PROXY_CATEGORY_ORDER = (Category.NORMAL, Category.LOW_BONE_MASS, Category.OSTEOPOROSIS)


@dataclass(frozen=True)
class ProxyThresholds:
    """Confidence a film needs for a proxy label of each class.

    Parameters
    ----------
    normal, low_bone_mass : float
        Thresholds in (0, 1]; the paper's 0.99 and 0.75 by default.
    osteoporosis : float or None
        Threshold for osteoporosis proxy labels; None (the paper) makes none.

    Raises
    ------
    ValueError
        A threshold outside (0, 1]. A threshold of 0.5 or less could label a film with a class
        the model does not favour, so it is refused as well.
    """

    normal: float = 0.99
    low_bone_mass: float = 0.75
    osteoporosis: float | None = None

    def __post_init__(self) -> None:
        for category in PROXY_CATEGORY_ORDER:
            value = self.threshold(category)
            if value is not None and not (math.isfinite(value) and 0.5 < value <= 1.0):
                raise ValueError(
                    f"the {category.value} proxy threshold must lie in (0.5, 1], got {value!r}"
                )

    def threshold(self, category: Category) -> float | None:
        """The threshold of ``category`` (None: no proxy labels of that class)."""
        return getattr(self, Category(category).value)


def category_probabilities(stage1: np.ndarray, stage2: np.ndarray) -> np.ndarray:
    """The two-stage model's (N, 3) class probabilities in :data:`PROXY_CATEGORY_ORDER`.

    Parameters
    ----------
    stage1, stage2 : numpy.ndarray
        (N,) probabilities of osteoporosis (stage 1) and of low bone mass (stage 2), in [0, 1].

    Raises
    ------
    ValueError
        Arrays of different shapes or values outside [0, 1].
    """
    first, second = np.asarray(stage1, dtype=np.float64), np.asarray(stage2, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"stage probabilities must be two (N,) arrays, got {first.shape}, {second.shape}")
    if not (np.all((first >= 0) & (first <= 1)) and np.all((second >= 0) & (second <= 1))):
        raise ValueError("stage probabilities must lie in [0, 1]")
    return np.stack([(1 - first) * (1 - second), (1 - first) * second, first], axis=1)


def proxy_labels(
    stage1: np.ndarray, stage2: np.ndarray, thresholds: ProxyThresholds
) -> list[Category | None]:
    """Each film's proxy label, or None where the model is not confident enough.

    Parameters
    ----------
    stage1, stage2 : numpy.ndarray
        (N,) stage probabilities (see :func:`category_probabilities`).
    thresholds : ProxyThresholds
        Per-class confidence needed.

    Returns
    -------
    list of Category or None
    """
    probabilities = category_probabilities(stage1, stage2)
    labels: list[Category | None] = []
    for row in probabilities:
        best = int(np.argmax(row))
        category = PROXY_CATEGORY_ORDER[best]
        threshold = thresholds.threshold(category)
        labels.append(category if threshold is not None and row[best] >= threshold else None)
    return labels


@dataclass
class ProxyCounts:
    """What became of the films offered for proxy labels.

    Attributes
    ----------
    offered : int
        Files found in the unlabelled folder.
    unreadable : Counter
        Files that could not be used, by reason.
    accepted : Counter
        Films kept, by proxy class.
    """

    offered: int = 0
    unreadable: Counter[str] = field(default_factory=Counter)
    accepted: Counter[Category] = field(default_factory=Counter)

    @property
    def below_threshold(self) -> int:
        """Readable films the model was not confident enough about."""
        return self.offered - sum(self.unreadable.values()) - sum(self.accepted.values())

    def as_card(self, thresholds: ProxyThresholds) -> dict[str, int | float | str]:
        """The model card's record: thresholds and every count."""
        record: dict[str, int | float | str] = {
            "proxy_films_offered": self.offered,
            "proxy_films_unreadable": sum(self.unreadable.values()),
            "proxy_films_below_threshold": self.below_threshold,
        }
        for category in PROXY_CATEGORY_ORDER:
            threshold = thresholds.threshold(category)
            record[f"proxy_threshold_{category.value}"] = (
                "none" if threshold is None else threshold
            )
            record[f"proxy_labels_{category.value}"] = self.accepted[category]
        return record


def unlabeled_files(directory: Path) -> Iterator[Path]:
    """The files under ``directory`` (recursively, hidden ones left out), in a stable order.

    Raises
    ------
    NotADirectoryError
        ``directory`` is not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"unlabelled films folder {directory} is not a folder")
    paths: Iterable[Path] = sorted(directory.rglob("*"))
    for path in paths:
        relative = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            yield path
