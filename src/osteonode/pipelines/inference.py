"""What the classifier pipelines share: one forward pass gives a class probability and its Grad-CAM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from osteonode.explain import grad_cam

__all__ = ["captured_output", "probability_and_cam"]


@contextlib.contextmanager
def captured_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the module's outputs while in the block (Grad-CAM's pass gives the logits too)."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: outputs.append(output.detach()))
    try:
        yield outputs
    finally:
        handle.remove()


def probability_and_cam(
    network: nn.Module, inputs: torch.Tensor, class_index: int
) -> tuple[float, np.ndarray]:
    """Softmax probability of a class and its Grad-CAM, from one forward pass.

    Parameters
    ----------
    network
        A classifier returning (N, classes) logits, with a ``gradcam_layer`` sub-module.
    inputs
        One image, (1, C, H, W), on the network's device.
    class_index
        The class whose probability and evidence are wanted.

    Returns
    -------
    (probability, cam)
        The class's softmax probability and its Grad-CAM, float32 (H, W) in [0, 1].
    """
    with captured_output(network) as logits:
        cam = grad_cam(network, inputs, network.gradcam_layer, class_index)
    probability = float(torch.softmax(logits[0].float(), dim=1)[0, class_index])
    return probability, cam[0]
