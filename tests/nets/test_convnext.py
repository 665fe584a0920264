"""ConvNeXt: published shape and size, reference parameter names, stochastic depth, Grad-CAM."""

from __future__ import annotations

import pytest
import torch

from osteonode.nets import build_network
from osteonode.nets.convnext import (
    CONVNEXT_SMALL,
    ConvNeXt,
    ConvNeXtConfig,
    DropPath,
    convnext_demo,
    convnext_small,
    convnext_tiny,
)

from ._capture import captured_output


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.fixture(scope="module")
def small() -> ConvNeXt:
    torch.manual_seed(0)
    return convnext_small(num_classes=2, in_chans=3).eval()


def test_convnext_small_gives_two_logits_for_a_512_pixel_chest_image(small: ConvNeXt) -> None:
    with torch.no_grad():
        logits = small(torch.randn(1, 3, 512, 512))
    assert logits.shape == (1, 2)
    assert torch.isfinite(logits).all()


def test_convnext_small_two_class_parameter_count_is_49_46_million(small: ConvNeXt) -> None:
    count = parameter_count(small)
    assert 49_400_000 <= count <= 49_500_000
    # torchvision's published count with the 1000-class ImageNet head is 50,223,688; the two-class
    # head has 768 x 998 + 998 fewer parameters.
    assert count == 50_223_688 - 768 * 998 - 998


def test_convnext_tiny_with_imagenet_head_matches_published_parameter_count() -> None:
    assert parameter_count(convnext_tiny(num_classes=1000)) == 28_589_128


def test_convnext_small_has_published_depths_and_widths(small: ConvNeXt) -> None:
    assert [len(stage) for stage in small.stages] == [3, 3, 27, 3]
    assert [stage[0].dwconv.in_channels for stage in small.stages] == [96, 192, 384, 768]
    stem_conv = small.downsample_layers[0][0]
    assert stem_conv.kernel_size == (4, 4) and stem_conv.stride == (4, 4)
    down_conv = small.downsample_layers[2][1]
    assert down_conv.kernel_size == (2, 2) and down_conv.stride == (2, 2)
    assert small.stages[1][0].dwconv.kernel_size == (7, 7)
    assert small.stages[1][0].dwconv.groups == 192
    assert small.stages[1][0].pwconv1.out_features == 4 * 192


def test_parameter_names_follow_the_facebookresearch_checkpoint(small: ConvNeXt) -> None:
    names = set(small.state_dict())
    for name in (
        "downsample_layers.0.0.weight",
        "downsample_layers.0.1.bias",
        "downsample_layers.3.0.weight",
        "downsample_layers.3.1.weight",
        "stages.2.5.dwconv.weight",
        "stages.2.26.pwconv1.weight",
        "stages.0.0.pwconv2.bias",
        "stages.3.2.norm.weight",
        "stages.3.2.gamma",
        "norm.weight",
        "head.weight",
        "head.bias",
    ):
        assert name in names, name
    assert len(names) == 4 + 3 * 4 + 36 * 9 + 4


def test_layer_scale_starts_at_one_millionth(small: ConvNeXt) -> None:
    gammas = torch.cat([block.gamma for stage in small.stages for block in stage])
    assert torch.all(gammas == torch.tensor(1e-6))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_demo_network_accepts_one_or_three_channels_at_several_sizes(in_chans: int) -> None:
    model = convnext_demo(num_classes=2, in_chans=in_chans).eval()
    with torch.no_grad():
        for size in (64, 96, 160):
            assert model(torch.randn(2, in_chans, size, size)).shape == (2, 2)


def test_demo_network_takes_a_512_pixel_grey_image() -> None:
    with torch.no_grad():
        assert convnext_demo().eval()(torch.randn(1, 1, 512, 512)).shape == (1, 2)


def test_input_with_wrong_channel_count_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        convnext_demo(in_chans=1)(torch.randn(1, 3, 64, 64))


def test_predict_proba_gives_class_probabilities_summing_to_one() -> None:
    model = convnext_demo().eval()
    probabilities = model.predict_proba(torch.randn(3, 1, 64, 64))
    assert probabilities.shape == (3, 2)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3))
    assert not probabilities.requires_grad


def test_gradcam_layer_is_the_last_stage_with_stride_32_feature_map() -> None:
    model = convnext_demo().eval()
    assert model.gradcam_layer is model.stages[-1]
    with captured_output(model.gradcam_layer) as outputs, torch.no_grad():
        model(torch.randn(1, 1, 128, 160))
    assert outputs[0].shape == (1, 256, 4, 5)


def test_drop_path_is_identity_in_eval_mode() -> None:
    drop = DropPath(0.5).eval()
    x = torch.randn(64, 3, 2, 2)
    assert torch.equal(drop(x), x)


def test_drop_path_drops_whole_samples_and_rescales_kept_ones_in_train_mode() -> None:
    torch.manual_seed(1)
    drop = DropPath(0.5).train()
    out = drop(torch.ones(256, 3, 2, 2))
    per_sample = out.flatten(1)
    dropped = (per_sample == 0).all(dim=1)
    kept = (per_sample == 2.0).all(dim=1)
    assert torch.all(dropped | kept)
    assert 64 < int(dropped.sum()) < 192


def test_stochastic_depth_rates_rise_linearly_to_the_configured_rate() -> None:
    model = ConvNeXt(ConvNeXtConfig(depths=CONVNEXT_SMALL.depths, widths=(4, 4, 4, 4),
                                    drop_path_rate=0.4))
    rates = [block.drop_path.drop_prob for stage in model.stages for block in stage]
    assert rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.4)
    assert rates == sorted(rates)


def test_network_with_stochastic_depth_is_deterministic_in_eval_and_random_in_train() -> None:
    torch.manual_seed(2)
    model = ConvNeXt(ConvNeXtConfig(depths=(2, 2), widths=(8, 16), drop_path_rate=0.9,
                                    layer_scale_init=1.0))
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    "options",
    [
        {"depths": (3, 3), "widths": (8,)},
        {"depths": (), "widths": ()},
        {"depths": (0,), "widths": (8,)},
        {"depths": (1,), "widths": (8,), "in_chans": 2},
        {"depths": (1,), "widths": (8,), "drop_path_rate": 1.0},
        {"depths": (1,), "widths": (8,), "num_classes": 0},
    ],
)
def test_invalid_configuration_is_rejected(options: dict) -> None:
    with pytest.raises(ValueError):
        ConvNeXtConfig(**options)


def test_model_requires_a_config_object() -> None:
    with pytest.raises(TypeError):
        ConvNeXt({"depths": (1,)})  # type: ignore[arg-type]


def test_published_small_config_is_the_chest_network() -> None:
    assert CONVNEXT_SMALL.depths == (3, 3, 27, 3)
    assert CONVNEXT_SMALL.widths == (96, 192, 384, 768)


def test_build_network_by_name_and_rejects_unknown_names() -> None:
    assert isinstance(build_network("convnext_demo", in_chans=3), ConvNeXt)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("resnet50")
