"""The shared training loop: learns, keeps the best weights, stops early, resumes exactly."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from torch import nn

from osteonode.train.loop import LearningRateSchedule, TrainingSettings, fit, split_indices


class LineTask:
    """Fit y = 3x - 1 from noisy samples; the metric is minus the validation MSE."""

    metric_name = "neg_mse"

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.rand(64, 1, generator=generator)
        self.y = 3 * self.x - 1 + 0.01 * torch.randn(64, 1, generator=generator)
        self.train, self.validation = split_indices(64, 0.25, seed=0)

    def train_batches(self, epoch, rng):
        order = rng.permutation(self.train)
        return [(self.x[order[i : i + 8]], self.y[order[i : i + 8]]) for i in range(0, len(order), 8)]

    def validation_batches(self):
        return [(self.x[self.validation], self.y[self.validation])]

    def loss(self, outputs, targets):
        return nn.functional.mse_loss(outputs, targets)

    def metric(self, outputs, targets):
        return -float(nn.functional.mse_loss(outputs, targets))


def test_fit_learns_and_keeps_the_best_validation_weights(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    outcome = fit(model, LineTask(), TrainingSettings(epochs=40, learning_rate=0.1, patience=0),
                  tmp_path / "ckpt.pt", show_progress=False)
    assert outcome.best_metric > -0.01
    assert model.weight.item() == pytest.approx(3, abs=0.2)
    assert outcome.best_metric == max(record.validation_metric for record in outcome.history)


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path):
    settings = TrainingSettings(epochs=12, learning_rate=0.05, patience=0, seed=3)
    torch.manual_seed(1)
    straight = nn.Linear(1, 1)
    fit(straight, LineTask(), settings, tmp_path / "a.pt", show_progress=False)

    torch.manual_seed(1)
    interrupted = nn.Linear(1, 1)
    first_half = TrainingSettings(epochs=5, learning_rate=0.05, patience=0, seed=3)
    fit(interrupted, LineTask(), first_half, tmp_path / "b.pt", show_progress=False)
    resumed = nn.Linear(1, 1)
    outcome = fit(resumed, LineTask(), settings, tmp_path / "b.pt", show_progress=False)
    assert [record.epoch for record in outcome.history] == list(range(1, 13))
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)


def test_training_stops_when_the_metric_stops_improving(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    # A learning rate of zero never improves on the first epoch's metric.
    outcome = fit(model, LineTask(), TrainingSettings(epochs=50, learning_rate=1e-12, patience=3),
                  tmp_path / "c.pt", show_progress=False)
    assert outcome.stopped_early
    assert len(outcome.history) < 50


def test_split_is_reproducible_and_disjoint():
    train, validation = split_indices(10, 0.3, seed=7)
    again = split_indices(10, 0.3, seed=7)
    assert np.array_equal(train, again[0]) and np.array_equal(validation, again[1])
    assert len(validation) == 3 and not set(train) & set(validation)
    with pytest.raises(ValueError):
        split_indices(1, 0.5, seed=0)
    with pytest.raises(ValueError):
        TrainingSettings(validation_fraction=1.0)


def test_cosine_schedule_warms_up_then_decays_towards_zero():
    settings = TrainingSettings(
        epochs=10, learning_rate=1e-3, schedule=LearningRateSchedule.COSINE, warmup_epochs=2
    )
    rates = [settings.learning_rate_at(epoch) for epoch in range(1, 11)]
    assert rates[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert all(later < earlier for earlier, later in pairwise(rates[2:]))
    assert rates[-1] < 0.05 * 1e-3
    constant = TrainingSettings(epochs=10, learning_rate=1e-3)
    assert {constant.learning_rate_at(epoch) for epoch in range(1, 11)} == {1e-3}


def test_schedule_settings_are_checked():
    assert TrainingSettings(schedule="cosine").schedule is LearningRateSchedule.COSINE
    with pytest.raises(ValueError):
        TrainingSettings(schedule="triangular")
    with pytest.raises(ValueError, match="leave none after the 3 warm-up epoch.*at least 4 epochs"):
        TrainingSettings(epochs=3, schedule="cosine", warmup_epochs=3)
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        TrainingSettings(epochs=3, schedule="cosine", warmup_epochs=-1)
    with pytest.raises(ValueError, match="epoch must lie"):
        TrainingSettings(epochs=3).learning_rate_at(4)


class InterruptingTask(LineTask):
    """LineTask whose training stops with KeyboardInterrupt when epoch ``stop_at`` begins."""

    def __init__(self, stop_at: int) -> None:
        super().__init__()
        self.stop_at = stop_at

    def train_batches(self, epoch, rng):
        if epoch == self.stop_at:
            raise KeyboardInterrupt
        return super().train_batches(epoch, rng)


def test_a_cosine_run_records_its_rates_and_resumes_to_the_same_result(tmp_path):
    settings = TrainingSettings(
        epochs=8, learning_rate=0.05, patience=0, seed=3, schedule="cosine", warmup_epochs=1
    )
    torch.manual_seed(1)
    straight = nn.Linear(1, 1)
    outcome = fit(straight, LineTask(), settings, tmp_path / "a.pt", show_progress=False)
    assert [record.learning_rate for record in outcome.history] == [
        settings.learning_rate_at(epoch) for epoch in range(1, 9)
    ]

    torch.manual_seed(1)
    interrupted = nn.Linear(1, 1)
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, InterruptingTask(stop_at=4), settings, tmp_path / "b.pt", show_progress=False)
    resumed = nn.Linear(1, 1)
    fit(resumed, LineTask(), settings, tmp_path / "b.pt", show_progress=False)
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)
