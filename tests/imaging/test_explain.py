"""Grad-CAM on a tiny network whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from osteonode.explain import Evidence, grad_cam


class BrightSpotNet(nn.Module):
    """Class 0 = "something bright": features are the input itself, pooled by 2.

    Only bright pixels give activation, and the class-0 logit is their mean, so the
    evidence for class 0 is exactly where the input is bright.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.relu(self.features(x)))
        return self.head(pooled.mean(dim=(2, 3)))


def _bright_square() -> torch.Tensor:
    image = torch.zeros(1, 1, 32, 32)
    image[:, :, 4:12, 20:28] = 1.0
    return image


def test_grad_cam_lights_the_only_region_that_drives_the_class() -> None:
    model = BrightSpotNet()

    heat = grad_cam(model, _bright_square(), model.pool, class_index=0)

    assert heat.shape == (1, 32, 32)
    assert heat.dtype == np.float32
    assert heat.max() == pytest.approx(1.0)
    assert heat[0, 5:11, 21:27].min() > 0.9
    assert heat[0, 16:, :].max() == 0.0
    assert heat[0, :, :16].max() == 0.0
    peak = np.unravel_index(np.argmax(heat[0]), heat[0].shape)
    assert 4 <= peak[0] < 12 and 20 <= peak[1] < 28


def test_grad_cam_without_evidence_is_all_zero_not_nan() -> None:
    model = BrightSpotNet()

    heat = grad_cam(model, torch.zeros(2, 1, 16, 16), model.pool, class_index=0)

    assert heat.shape == (2, 16, 16)
    assert np.all(heat == 0.0)


def test_backward_pass_stops_at_the_target_layer() -> None:
    model = BrightSpotNet()
    reached: list[str] = []
    model.features.register_full_backward_hook(lambda *args: reached.append("features"))
    # An input that asks for gradients would pull an ordinary backward pass through
    # every layer; Grad-CAM must still stop at the target layer.
    image = _bright_square().requires_grad_(True)

    grad_cam(model, image, model.pool, class_index=0)

    assert reached == []
    assert image.grad is None


def test_model_modes_are_restored_and_no_hook_is_left() -> None:
    model = BrightSpotNet()
    model.train()
    model.head.eval()

    grad_cam(model, _bright_square(), model.pool, class_index=1)

    assert model.training and model.features.training and not model.head.training
    assert not model.pool._forward_hooks


def test_a_failed_call_leaves_no_hook_behind() -> None:
    model = BrightSpotNet()

    with pytest.raises(ValueError, match="class_index"):
        grad_cam(model, _bright_square(), model.pool, class_index=5)

    assert not model.pool._forward_hooks
    assert torch.is_grad_enabled()


def test_a_layer_outside_the_model_is_rejected() -> None:
    with pytest.raises(ValueError, match="sub-module"):
        grad_cam(BrightSpotNet(), _bright_square(), nn.ReLU(), class_index=0)


def test_grad_cam_works_when_called_under_no_grad() -> None:
    model = BrightSpotNet()

    with torch.no_grad():
        heat = grad_cam(model, _bright_square(), model.pool, class_index=0)

    assert heat.max() == pytest.approx(1.0)


def test_lowering_evidence_shows_what_pulls_a_regressed_value_down() -> None:
    # Output 0 is "density": bright pixels raise it, dark pixels lower it. The map of what
    # lowers it (an osteoporotic film's evidence) lights the dark square, not the bright one.
    model = BrightSpotNet()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
    image = torch.zeros(1, 1, 32, 32)
    image[:, :, 4:12, 20:28] = 1.0
    image[:, :, 20:28, 4:12] = -1.0
    layer = model.pool

    raising = grad_cam(model, image, layer, 0)[0]
    lowering = grad_cam(model, image, layer, 0, Evidence.LOWERING)[0]

    assert raising[8, 24] > 0.9 and raising[24, 8] < 0.1
    assert lowering[24, 8] > 0.9 and lowering[8, 24] < 0.1
    with pytest.raises(TypeError, match="Evidence"):
        grad_cam(model, image, layer, 0, -1)  # type: ignore[arg-type]
