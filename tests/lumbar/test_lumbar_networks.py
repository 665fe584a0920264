"""The lumbar networks: shapes, the architecture registry, Grad-CAM, input checks."""

from __future__ import annotations

import pytest
import torch

from osteonode.explain import grad_cam
from osteonode.nets import ARCHITECTURES, build_network
from osteonode.nets.vertebrae import CROP_SIZE, VertebraCropNet, VertebraKeypointNet


def test_keypoint_net_returns_one_heatmap_per_corner_at_half_resolution() -> None:
    net = build_network("vertebra_keypoint_net", keypoints=24, widths=[8, 12, 16])
    assert isinstance(net, VertebraKeypointNet)
    assert net(torch.zeros(2, 1, 64, 96)).shape == (2, 24, 32, 48)


def test_keypoint_net_refuses_sides_its_pooling_cannot_divide() -> None:
    net = build_network("vertebra_keypoint_net", widths=[8, 12, 16])
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 60, 64))


def test_crop_net_applies_its_fixed_output_map() -> None:
    net = build_network(
        "vertebra_crop_net",
        outputs=1,
        widths=[8, 16],
        hidden=8,
        output_offset=0.9,
        output_scale=0.15,
    )
    assert isinstance(net, VertebraCropNet)
    crops = torch.randn(3, 1, CROP_SIZE, CROP_SIZE)
    net.eval()
    torch.testing.assert_close(net(crops), 0.9 + 0.15 * net.raw(crops))


def test_crop_net_rejects_a_wrong_crop_size_and_bad_options() -> None:
    net = build_network("vertebra_crop_net", outputs=8, widths=[8, 16], hidden=8)
    with pytest.raises(ValueError, match="64, 64"):
        net(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError):
        build_network("vertebra_crop_net", output_scale=0.0)
    with pytest.raises(ValueError):
        build_network("vertebra_keypoint_net", widths=[8])


def test_regressor_grad_cam_covers_the_crop() -> None:
    net = build_network("vertebra_crop_net", outputs=1, widths=[8, 16, 16], hidden=8)
    cams = grad_cam(net, torch.randn(2, 1, CROP_SIZE, CROP_SIZE), net.gradcam_layer, 0)
    assert cams.shape == (2, CROP_SIZE, CROP_SIZE)
    assert cams.min() >= 0.0 and cams.max() <= 1.0


def test_both_lumbar_architectures_are_registered_for_model_cards() -> None:
    assert {"vertebra_keypoint_net", "vertebra_crop_net"} <= set(ARCHITECTURES)
