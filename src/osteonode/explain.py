"""Grad-CAM heat-maps: where in the input the model found evidence for a class or a value."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Evidence(enum.Enum):
    """Which way of an output a Grad-CAM map explains."""

    RAISING = 1
    """What raises the output: for a class logit, the evidence for that class."""
    LOWERING = -1
    """What lowers the output: for a regression (BMD), the evidence of a lower value."""


def grad_cam(
    model: nn.Module,
    input: torch.Tensor,
    target_layer: nn.Module,
    class_index: int,
    evidence: Evidence = Evidence.RAISING,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of one output at one layer.

    One forward pass and one backward pass that stops at `target_layer`: everything
    before the layer runs without autograd, and the layer's output enters the rest of
    the network as a leaf tensor, so the backward pass never reaches the layers below.
    The model runs in eval mode; its modes are restored afterwards and no hook is
    left behind, also when an exception is raised.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits of shape (N, classes).
    input : torch.Tensor
        Batch of images, shape (N, C, H, W).
    target_layer : torch.nn.Module
        A sub-module of `model`, called exactly once per forward pass, whose output
        has shape (N, K, h, w).
    class_index : int
        The output (class logit or regression value) whose evidence is shown; negative
        counts from the last, as in Python.
    evidence : Evidence
        Show what raises the output (default) or what lowers it; the map of a regressor's
        low values is the gradient of the negated output.

    Returns
    -------
    numpy.ndarray
        float32 (N, H, W) in [0, 1]: each map is ReLU'd, bilinearly resized to the
        input's size and divided by its maximum (an all-zero map stays zero).

    Raises
    ------
    TypeError
        When an argument has the wrong type or the layer's output is not a tensor.
    ValueError
        When the input is not 4-D, the layer is not part of the model or not called
        exactly once, the output is not (N, classes), or `class_index` is out of range.
    """
    _check_arguments(model, input, target_layer, class_index)
    if not isinstance(evidence, Evidence):
        raise TypeError(f"evidence must be an Evidence, not {type(evidence).__name__}")
    activations: list[torch.Tensor] = []

    def replace_with_leaf(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise TypeError("the target layer must output one (N, K, h, w) tensor")
        leaf = output.detach().requires_grad_(True)
        activations.append(leaf)
        # The layers after the target record a graph; the ones before did not.
        torch.set_grad_enabled(True)
        return leaf

    training_modes = {module: module.training for module in model.modules()}
    handle = target_layer.register_forward_hook(replace_with_leaf)
    try:
        model.eval()
        # enable_grad: the caller may be inside no_grad; no_grad: nothing before the
        # target layer records a graph (the hook switches recording on at the layer).
        with torch.enable_grad():
            with torch.no_grad():
                logits = model(input)
            if len(activations) != 1:
                raise ValueError(
                    f"the target layer ran {len(activations)} times; Grad-CAM needs 1"
                )
            if logits.ndim != 2 or logits.shape[0] != input.shape[0]:
                raise ValueError(
                    f"the model must return (N, classes) logits, got {tuple(logits.shape)}"
                )
            if not -logits.shape[1] <= class_index < logits.shape[1]:
                raise ValueError(
                    f"class_index {class_index} is outside -{logits.shape[1]}..{logits.shape[1] - 1}"
                )
            activation = activations[0]
            target = evidence.value * logits[:, class_index].sum()
            (gradient,) = torch.autograd.grad(target, activation)
    finally:
        handle.remove()
        for module, mode in training_modes.items():
            module.training = mode
    return _weighted_maps(activation.detach(), gradient, tuple(input.shape[-2:]))


def _check_arguments(
    model: nn.Module, input: torch.Tensor, target_layer: nn.Module, class_index: int
) -> None:
    if not isinstance(model, nn.Module) or not isinstance(target_layer, nn.Module):
        raise TypeError("model and target_layer must be torch.nn.Module instances")
    if not isinstance(input, torch.Tensor) or input.ndim != 4:
        raise ValueError("input must be a (N, C, H, W) tensor")
    if not isinstance(class_index, int) or isinstance(class_index, bool):
        raise TypeError(f"class_index must be an int, not {type(class_index).__name__}")
    if not any(module is target_layer for module in model.modules()):
        raise ValueError("target_layer is not a sub-module of model")


def _weighted_maps(
    activation: torch.Tensor, gradient: torch.Tensor, size: tuple[int, int]
) -> np.ndarray:
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cams = F.interpolate(cams.float(), size=size, mode="bilinear", align_corners=False)
    cams = torch.nan_to_num(F.relu(cams[:, 0]), nan=0.0, posinf=0.0, neginf=0.0)
    peaks = cams.amax(dim=(1, 2), keepdim=True)
    cams = torch.where(peaks > 0, cams / peaks.clamp_min(torch.finfo(cams.dtype).tiny), 0.0)
    return cams.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)
