"""The training loop every pipeline's trainer shares.

A pipeline supplies a :class:`TrainingTask` (its batches, loss and validation metric); :func:`fit`
runs epochs with a progress bar, evaluates on the validation split after each, keeps the best
weights by the task's metric, stops early when the metric stops improving, and writes a checkpoint
after every epoch so an interrupted run resumes where it stopped (``resume=True``) with the same
random state, giving the same result as an uninterrupted run. The learning rate is either constant
or follows a cosine decay over the planned epochs after a linear warm-up
(:class:`LearningRateSchedule`); it is a function of the epoch alone, so resuming needs no
scheduler state.

Checkpoints hold tensors and plain values only and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

__all__ = [
    "EpochRecord",
    "FitOutcome",
    "LearningRateSchedule",
    "TrainingSettings",
    "TrainingTask",
    "fit",
    "positive_probabilities",
    "seed_everything",
    "split_indices",
]

log = structlog.get_logger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


class LearningRateSchedule(str, Enum):
    """How the learning rate changes from epoch to epoch."""

    #: The settings' learning rate throughout.
    CONSTANT = "constant"
    #: Linear warm-up, then half a cosine from the settings' rate towards zero at the last epoch.
    COSINE = "cosine"


@dataclass(frozen=True)
class TrainingSettings:
    """How long and how fast to train, and when to stop.

    Parameters
    ----------
    epochs
        Upper bound on epochs.
    batch_size
        Samples per optimisation step (the task builds batches of this size).
    learning_rate, weight_decay
        AdamW settings (``weight_decay=0`` gives Adam).
    patience
        Epochs without a better validation metric before stopping; 0 never stops early.
    seed
        Seeds torch and the task's numpy generator.
    validation_fraction
        Share of the cohort held out for validation.
    schedule
        Learning-rate schedule over ``epochs``.
    warmup_epochs
        Epochs of linear warm-up before a cosine decay (cosine schedule only).
    """

    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0
    validation_fraction: float = 0.2
    schedule: LearningRateSchedule = LearningRateSchedule.CONSTANT
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not (self.learning_rate > 0 and self.weight_decay >= 0):
            raise ValueError("learning_rate must be positive and weight_decay non-negative")
        if self.patience < 0:
            raise ValueError("patience must be >= 0")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must lie strictly between 0 and 1")
        object.__setattr__(self, "schedule", LearningRateSchedule(self.schedule))
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.warmup_epochs >= self.epochs:
            # The warm-up ends one step below the full rate: a run needs an epoch after it.
            raise ValueError(
                f"{self.epochs} epoch(s) leave none after the {self.warmup_epochs} warm-up"
                f" epoch(s): give at least {self.warmup_epochs + 1} epochs"
            )

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based).

        Parameters
        ----------
        epoch
            Epoch number, 1 to ``epochs``.

        Returns
        -------
        float
        """
        if not 1 <= epoch <= self.epochs:
            raise ValueError(f"epoch must lie in [1, {self.epochs}], got {epoch}")
        if self.schedule is LearningRateSchedule.CONSTANT:
            return self.learning_rate
        if epoch <= self.warmup_epochs:
            return self.learning_rate * epoch / (self.warmup_epochs + 1)
        progress = (epoch - self.warmup_epochs - 1) / (self.epochs - self.warmup_epochs)
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainingTask(Protocol):
    """What a pipeline's trainer gives :func:`fit`."""

    #: Name of the validation metric (higher is better), for logs and the model card.
    metric_name: str

    def train_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Batch]:
        """Augmented, shuffled training batches for one epoch (inputs, targets)."""
        ...

    def validation_batches(self) -> Iterable[Batch]:
        """Validation batches, unaugmented, in a fixed order."""
        ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss."""
        ...

    def metric(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Validation metric over the whole validation set (higher is better)."""
        ...


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's figures."""

    epoch: int
    train_loss: float
    validation_loss: float
    validation_metric: float
    learning_rate: float


@dataclass
class FitOutcome:
    """What :func:`fit` returns: the best weights (loaded into the model) and the history."""

    best_metric: float
    best_epoch: int
    history: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return a numpy generator for the task, both from ``seed``."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


@torch.no_grad()
def positive_probabilities(
    network: nn.Module,
    images: torch.Tensor,
    indices: np.ndarray,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """A two-class network's softmax probability of its positive class on chosen images.

    Parameters
    ----------
    network
        Returns (N, 2) logits.
    images
        The prepared films, (N, H, W), before normalisation.
    indices
        Which films, in this order.
    normalise
        Turns a batch of films into the network's input.
    device, batch_size
        Where and how many at a time.

    Returns
    -------
    numpy.ndarray
        float32 (len(indices),).
    """
    network.to(device).eval()
    chunks = []
    for start in range(0, len(indices), batch_size):
        batch = normalise(images[indices[start : start + batch_size]]).to(device)
        chunks.append(torch.softmax(network(batch).float(), dim=1)[:, 1].cpu().numpy())
    return np.concatenate(chunks)


def split_indices(count: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible train / validation split of ``count`` samples.

    Returns
    -------
    (train, validation)
        Sorted index arrays; validation has at least one sample and train at least one.
    """
    if count < 2:
        raise ValueError(f"need at least 2 samples to split, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    size = min(count - 1, max(1, round(count * validation_fraction)))
    return np.sort(order[size:]), np.sort(order[:size])


def _evaluate(model: nn.Module, task: TrainingTask, device: torch.device) -> tuple[float, float]:
    model.eval()
    outputs, targets = [], []
    with torch.no_grad():
        for inputs, target in task.validation_batches():
            outputs.append(model(inputs.to(device)).float().cpu())
            targets.append(target)
    output, target = torch.cat(outputs), torch.cat(targets)
    return float(task.loss(output, target)), float(task.metric(output, target))


def _batches_with_progress(
    batches: Iterable[Batch], progress: Progress | None, description: str
) -> Iterator[Batch]:
    items = list(batches) if progress is not None else batches
    task_id = progress.add_task(description, total=len(items)) if progress is not None else None
    for batch in items:
        yield batch
        if progress is not None:
            progress.advance(task_id)
    if progress is not None:
        progress.remove_task(task_id)


def fit(
    model: nn.Module,
    task: TrainingTask,
    settings: TrainingSettings,
    checkpoint: Path,
    *,
    device: torch.device | None = None,
    resume: bool = True,
    show_progress: bool = True,
) -> FitOutcome:
    """Train ``model`` on ``task``; on return the model holds the best validation weights.

    Parameters
    ----------
    model
        The network (its current weights are the starting point).
    task
        Batches, loss and metric.
    settings
        Epochs, optimiser, early stopping, seed.
    checkpoint
        File written after every epoch; read back when ``resume`` is set and it exists.
    device
        Where to train; CPU by default.
    resume
        Continue from ``checkpoint`` if present.
    show_progress
        Show a progress bar (rich) on the terminal.

    Returns
    -------
    FitOutcome
    """
    device = torch.device("cpu") if device is None else device
    rng = seed_everything(settings.seed)
    model.to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    outcome = FitOutcome(best_metric=-math.inf, best_epoch=0)
    best_state = copy.deepcopy(model.state_dict())
    start = 1
    if resume and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        best_state = saved["best_model"]
        outcome = FitOutcome(
            best_metric=saved["best_metric"],
            best_epoch=saved["best_epoch"],
            history=[EpochRecord(**record) for record in saved["history"]],
        )
        torch.set_rng_state(saved["torch_rng"])
        rng.bit_generator.state = saved["numpy_rng"]
        start = saved["epoch"] + 1
        log.info("training_resumed", checkpoint=str(checkpoint), epoch=start)
    progress = (
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            transient=True,
        )
        if show_progress
        else None
    )
    outcome.stopped_early = _patience_exhausted(outcome, start - 1, settings)
    with progress if progress is not None else contextlib.nullcontext():
        for epoch in range(start, settings.epochs + 1):
            if outcome.stopped_early:
                break
            model.train()
            learning_rate = settings.learning_rate_at(epoch)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate
            losses = []
            description = f"epoch {epoch}/{settings.epochs}"
            for inputs, targets in _batches_with_progress(task.train_batches(epoch, rng), progress, description):
                optimiser.zero_grad(set_to_none=True)
                loss = task.loss(model(inputs.to(device)), targets.to(device))
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            validation_loss, metric = _evaluate(model, task, device)
            record = EpochRecord(epoch, float(np.mean(losses)), validation_loss, metric, learning_rate)
            outcome.history.append(record)
            if metric > outcome.best_metric:
                outcome.best_metric, outcome.best_epoch = metric, epoch
                best_state = copy.deepcopy(model.state_dict())
            log.info("epoch_done", **asdict(record), metric_name=task.metric_name, best=outcome.best_metric)
            _write_checkpoint(checkpoint, model, optimiser, best_state, outcome, epoch, rng)
            outcome.stopped_early = _patience_exhausted(outcome, epoch, settings)
    model.load_state_dict(best_state)
    return outcome


def _patience_exhausted(outcome: FitOutcome, epoch: int, settings: TrainingSettings) -> bool:
    """After ``epoch``, whether ``patience`` epochs have passed without a better metric."""
    return settings.patience > 0 and bool(outcome.history) and epoch - outcome.best_epoch >= settings.patience


def _write_checkpoint(
    path: Path,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor],
    outcome: FitOutcome,
    epoch: int,
    rng: np.random.Generator,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "best_model": best_state,
            "best_metric": outcome.best_metric,
            "best_epoch": outcome.best_epoch,
            "history": [asdict(record) for record in outcome.history],
            "epoch": epoch,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": rng.bit_generator.state,
        },
        temporary,
    )
    os.replace(temporary, path)
