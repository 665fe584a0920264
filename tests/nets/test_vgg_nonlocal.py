"""VGG16 + non-local block: VGG16's exact size and layout, the block's maths and identity start."""

from __future__ import annotations

import pytest
import torch

from osteonode.nets import build_network
from osteonode.nets.vgg_nonlocal import (
    NonLocalBlock2d,
    VGGNonLocal,
    VGGNonLocalConfig,
    vgg16_nonlocal,
    vgg16_nonlocal_demo,
)

from ._capture import captured_gradient, captured_output


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.fixture(scope="module")
def full() -> VGGNonLocal:
    torch.manual_seed(0)
    return vgg16_nonlocal(in_chans=3).eval()


def test_the_13_convolutions_have_exactly_vgg16s_14_714_688_parameters(full: VGGNonLocal) -> None:
    convolutions = [m for m in full.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convolutions) == 13
    assert all(conv.kernel_size == (3, 3) and conv.padding == (1, 1) for conv in convolutions)
    assert parameter_count(full.features) == 14_714_688


def test_non_local_block_parameter_count_matches_hand_computation(full: VGGNonLocal) -> None:
    channels, inter = 512, 256
    theta_phi_g = 3 * (channels * inter + inter)  # three 1x1 convs C -> C/2 with bias
    w = inter * channels + channels  # 1x1 conv C/2 -> C with bias
    assert theta_phi_g + w == 525_568
    assert parameter_count(full.non_local) == 525_568
    assert parameter_count(full) == 14_714_688 + 525_568 + 512 + 1


def test_full_network_gives_one_logit_for_a_512_pixel_hip_crop(full: VGGNonLocal) -> None:
    with torch.no_grad():
        logits = full(torch.randn(1, 3, 512, 512))
    assert logits.shape == (1, 1)
    probability = vgg16_nonlocal_demo().eval().predict_proba(torch.randn(2, 1, 64, 64))
    assert probability.shape == (2,)
    assert torch.all((probability > 0.0) & (probability < 1.0))


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (256, 256)])
def test_demo_network_takes_one_channel_crops_of_several_sizes(size: tuple[int, int]) -> None:
    model = vgg16_nonlocal_demo().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *size)).shape == (2, 1)


def test_features_use_torchvision_vgg16_indices(full: VGGNonLocal) -> None:
    conv_indices = [i for i, m in enumerate(full.features) if isinstance(m, torch.nn.Conv2d)]
    assert conv_indices == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert len(full.features) == 31


def test_batch_norm_variant_uses_torchvision_vgg16_bn_indices() -> None:
    model = vgg16_nonlocal(batch_norm=True)
    conv_indices = [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.Conv2d)]
    assert conv_indices == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert "features.1.running_mean" in model.state_dict()


def test_non_local_block_is_the_identity_at_initialisation() -> None:
    torch.manual_seed(3)
    block = NonLocalBlock2d(64)
    x = torch.randn(2, 64, 9, 7)
    assert torch.equal(block(x), x)


def test_whole_network_at_initialisation_equals_plain_vgg16_features(full: VGGNonLocal) -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(full.forward_features(x), full.features(x))


def test_non_local_block_computes_embedded_gaussian_attention() -> None:
    torch.manual_seed(4)
    block = NonLocalBlock2d(6, subsample=False)
    torch.nn.init.normal_(block.w.weight)
    x = torch.randn(1, 6, 3, 4)
    positions = [(i, j) for i in range(3) for j in range(4)]

    def embed(conv: torch.nn.Conv2d, i: int, j: int) -> torch.Tensor:
        return conv.weight[:, :, 0, 0] @ x[0, :, i, j] + conv.bias

    expected = torch.empty_like(x)
    for i, j in positions:
        scores = torch.stack([embed(block.theta, i, j) @ embed(block.phi, k, m)
                              for k, m in positions])
        weights = torch.softmax(scores, dim=0)
        context = sum(w * embed(block.g, k, m) for w, (k, m) in zip(weights, positions))
        expected[0, :, i, j] = x[0, :, i, j] + block.w.weight[:, :, 0, 0] @ context + block.w.bias
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_subsampled_block_attends_to_a_quarter_of_the_positions() -> None:
    torch.manual_seed(5)
    block = NonLocalBlock2d(8, subsample=True)
    torch.nn.init.normal_(block.w.weight)
    x = torch.randn(1, 8, 6, 6)
    with captured_output(block.phi) as phi_maps:
        out = block(x)
    assert out.shape == x.shape
    assert phi_maps[0].shape == (1, 4, 6, 6)
    assert block._keys(phi_maps[0]).shape == (1, 4, 9)
    # A 1 x 1 map cannot be pooled; the block still runs.
    assert block(torch.randn(1, 8, 1, 1)).shape == (1, 8, 1, 1)


def test_non_local_block_sits_after_the_fourth_stage_at_stride_16(full: VGGNonLocal) -> None:
    with captured_output(full.non_local) as outputs, torch.no_grad():
        full(torch.randn(1, 3, 64, 96))
    assert outputs[0].shape == (1, 512, 4, 6)


def test_gradcam_layer_is_the_last_convolution_stage_output(full: VGGNonLocal) -> None:
    assert isinstance(full.gradcam_layer, torch.nn.ReLU)
    assert full.features[-3] is [m for m in full.features if isinstance(m, torch.nn.Conv2d)][-1]
    with captured_output(full.gradcam_layer) as outputs, torch.no_grad():
        full(torch.randn(1, 3, 64, 96))
    assert outputs[0].shape == (1, 512, 4, 6)


def test_gradients_reach_the_gradcam_layer_through_the_head() -> None:
    model = vgg16_nonlocal_demo().eval()
    with captured_gradient(model.gradcam_layer) as gradients:
        model(torch.randn(1, 1, 64, 64)).sum().backward()
    assert gradients[0].shape == (1, 128, 4, 4)
    assert gradients[0].abs().sum() > 0


def test_width_multiplier_scales_every_stage() -> None:
    config = VGGNonLocalConfig(width_multiplier=0.25)
    assert config.stage_channels() == ((16, 16), (32, 32), (64,) * 3, (128,) * 3, (128,) * 3)


@pytest.mark.parametrize(
    "options",
    [
        {"in_chans": 2},
        {"width_multiplier": 0.0},
        {"non_local_after_stage": 0},
        {"non_local_after_stage": 6},
        {"dropout": 1.0},
    ],
)
def test_invalid_configuration_is_rejected(options: dict) -> None:
    with pytest.raises(ValueError):
        VGGNonLocalConfig(**options)


def test_input_with_wrong_channel_count_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        vgg16_nonlocal_demo(in_chans=1)(torch.randn(1, 3, 64, 64))


def test_build_network_knows_the_hip_networks() -> None:
    assert isinstance(build_network("vgg16_nonlocal_demo"), VGGNonLocal)
