"""Knowledge distillation: a student learns from a teacher's softened outputs as well as the labels.

The chest paper (Park et al. 2025, METHODS.md section 2) trains its final model with
cross-entropy and Kullback-Leibler loss against a teacher. The loss here is Hinton's::

    loss = (1 - w) * CE(student, targets) + w * T**2 * KL(softmax(teacher / T) || softmax(student / T))

with temperature ``T`` and weight ``w`` (:class:`DistillationSettings`, recorded in the student's
model card). The factor ``T**2`` keeps the soft term's gradients on the scale of the hard term's
when ``T`` changes. The KL divergence runs from the teacher's distribution to the student's, the
direction in which the student is pulled towards every class the teacher gives weight to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DistillationSettings", "distillation_loss"]


@dataclass(frozen=True)
class DistillationSettings:
    """Temperature and weight of the distillation term.

    Parameters
    ----------
    temperature : float
        Softening of both distributions (> 0); 1 leaves them as they are.
    weight : float
        Share of the distillation term in the loss, in [0, 1]; 0 is plain cross-entropy.

    Raises
    ------
    ValueError
        A temperature that is not a positive finite number or a weight outside [0, 1].
    """

    temperature: float = 4.0
    weight: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1], got {self.weight!r}")


def distillation_loss(
    student: torch.Tensor,
    targets: torch.Tensor,
    teacher: torch.Tensor,
    settings: DistillationSettings,
) -> torch.Tensor:
    """Cross-entropy against the targets plus the tempered KL divergence from the teacher.

    Parameters
    ----------
    student : torch.Tensor
        (N, C) logits of the student.
    targets : torch.Tensor
        (N,) class indices or (N, C) class probabilities (soft labels).
    teacher : torch.Tensor
        (N, C) logits of the teacher on the same images (no gradient flows into them).
    settings : DistillationSettings
        Temperature and weight.

    Returns
    -------
    torch.Tensor
        Scalar loss, averaged over the batch.

    Raises
    ------
    ValueError
        Logits of different shapes, or not (N, C).
    """
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher logits must both be (N, C), got {tuple(student.shape)}"
            f" and {tuple(teacher.shape)}"
        )
    hard = F.cross_entropy(student, targets)
    temperature = settings.temperature
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher.detach() / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - settings.weight) * hard + settings.weight * temperature**2 * soft
