"""The distillation loss and the proxy-label rule, against hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osteonode.bone import Category
from osteonode.train.distillation import DistillationSettings, distillation_loss
from osteonode.train.proxy import ProxyThresholds, category_probabilities, proxy_labels


def test_with_weight_zero_the_loss_is_the_cross_entropy() -> None:
    student = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    targets = torch.tensor([0, 1])
    loss = distillation_loss(student, targets, torch.zeros(2, 2), DistillationSettings(weight=0.0))
    assert float(loss) == pytest.approx(float(F.cross_entropy(student, targets)))


def test_a_student_that_matches_its_teacher_pays_only_the_label_term() -> None:
    logits = torch.tensor([[1.0, 3.0]])
    targets = torch.tensor([[0.0, 1.0]])
    settings = DistillationSettings(temperature=3.0, weight=0.25)
    expected = 0.75 * float(F.cross_entropy(logits, targets))
    assert float(distillation_loss(logits, targets, logits, settings)) == pytest.approx(expected)


def test_the_soft_term_is_the_tempered_kl_divergence_times_t_squared() -> None:
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0 * math.log(3.0)]])
    # At T = 2 the teacher's tempered distribution is (1/4, 3/4) and the student's (1/2, 1/2).
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    settings = DistillationSettings(temperature=2.0, weight=1.0)
    loss = distillation_loss(student, torch.tensor([0]), teacher, settings)
    assert float(loss) == pytest.approx(4.0 * kl)


def test_only_the_student_receives_gradients() -> None:
    student = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0]], requires_grad=True)
    distillation_loss(student, torch.tensor([1]), teacher, DistillationSettings()).backward()
    assert student.grad is not None and teacher.grad is None


@pytest.mark.parametrize(
    ("temperature", "weight"), [(0.0, 0.5), (-1.0, 0.5), (math.inf, 0.5), (2.0, 1.5)]
)
def test_bad_distillation_settings_are_refused(temperature: float, weight: float) -> None:
    with pytest.raises(ValueError):
        DistillationSettings(temperature=temperature, weight=weight)


def test_the_two_stages_give_three_class_probabilities() -> None:
    probabilities = category_probabilities(np.array([0.2]), np.array([0.25]))
    assert probabilities[0] == pytest.approx([0.8 * 0.75, 0.8 * 0.25, 0.2])


def test_the_papers_thresholds_keep_only_confident_films() -> None:
    stage1 = np.array([0.001, 0.001, 0.01, 0.1, 0.9])
    stage2 = np.array([0.005, 0.80, 0.60, 0.001, 0.5])
    # P(normal) 0.994 kept; P(low bone mass) 0.799 kept; 0.594 too low; P(normal) 0.899 below
    # 0.99; osteoporosis 0.9 has no paper threshold.
    assert proxy_labels(stage1, stage2, ProxyThresholds()) == [
        Category.NORMAL, Category.LOW_BONE_MASS, None, None, None,
    ]
    with_osteoporosis = ProxyThresholds(osteoporosis=0.85)
    assert proxy_labels(stage1[4:], stage2[4:], with_osteoporosis) == [Category.OSTEOPOROSIS]


@pytest.mark.parametrize("value", [0.5, 1.2, math.nan])
def test_a_threshold_that_could_label_against_the_model_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="low_bone_mass proxy threshold"):
        ProxyThresholds(low_bone_mass=value)
