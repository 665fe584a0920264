"""What the classifier pipelines share: one forward pass gives a class probability and its Grad-CAM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from osteonode.explain import grad_cam

__all__ = ["captured_output", "probability_and_cam"]

#: The positive answer's output: the last of a classifier's one or two logits.
POSITIVE_INDEX = -1


@contextlib.contextmanager
def captured_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the module's outputs while in the block (Grad-CAM's pass gives the logits too)."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: outputs.append(output.detach()))
    try:
        yield outputs
    finally:
        handle.remove()


def probability_and_cam(network: nn.Module, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Probability of the positive answer and its Grad-CAM, from one forward pass.

    A network with two outputs gives (negative, positive) logits, read with a softmax; a network
    with one output gives the positive answer's logit, read with a sigmoid (binary cross-entropy
    training, as Jang et al. 2021's VGG16).

    Parameters
    ----------
    network
        A classifier returning (N, 1) or (N, 2) logits, with a ``gradcam_layer`` sub-module.
    inputs
        Images, (N, C, H, W), on the network's device.

    Returns
    -------
    (probabilities, cams)
        float (N,) probabilities of the positive answer, and its Grad-CAM, float32 (N, H, W) in
        [0, 1].

    Raises
    ------
    ValueError
        The network gives neither one nor two outputs.
    """
    with captured_output(network) as captured:
        cams = grad_cam(network, inputs, network.gradcam_layer, class_index=POSITIVE_INDEX)
    logits = captured[0].float()
    if logits.ndim != 2 or logits.shape[1] not in (1, 2):
        raise ValueError(f"a classifier stage must give 1 or 2 outputs, got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        probabilities = torch.sigmoid(logits[:, 0])
    else:
        probabilities = torch.softmax(logits, dim=1)[:, 1]
    return probabilities.cpu().numpy().astype(np.float64), cams
