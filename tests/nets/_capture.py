"""Record what a module computes during a forward or backward pass, without changing it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def captured_output(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect ``module``'s forward outputs while the context is open."""
    outputs: list[torch.Tensor] = []

    def record(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        outputs.append(output)

    handle = module.register_forward_hook(record)
    try:
        yield outputs
    finally:
        handle.remove()


@contextmanager
def captured_gradient(module: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the gradient with respect to ``module``'s output during backward passes."""
    gradients: list[torch.Tensor] = []

    def record(_module: torch.nn.Module, _grad_in: object, grad_out: tuple) -> None:
        gradients.append(grad_out[0])

    handle = module.register_full_backward_hook(record)
    try:
        yield gradients
    finally:
        handle.remove()
