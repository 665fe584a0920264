"""ResNet-18 and DarkNet-19, the lumbar AP and lateral classifiers of Boonrod et al. 2025.

Their published sizes, the contract every classifier network keeps (``in_chans``, a Grad-CAM
layer, (N, num_classes) logits), a safetensors round trip, and loading a site's torchvision
ResNet-18 checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from osteonode.explain import grad_cam
from osteonode.nets import (
    ARCHITECTURES,
    CheckpointLayout,
    DarkNet,
    ResNet,
    build_network,
    darknet19,
    load_pretrained,
    resnet18,
)

from ._capture import captured_output

LUMBAR_CLASSIFIERS = ("resnet18", "resnet18_demo", "darknet19", "darknet19_demo")


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_resnet18_has_torchvisions_11_689_512_parameters_for_imagenet() -> None:
    model = resnet18(num_classes=1000, in_chans=3)
    assert parameter_count(model) == 11_689_512
    # The backbone without the 1000-class layer: the "11.2 M" often quoted.
    assert parameter_count(model) - parameter_count(model.fc) == 11_176_512
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]


def test_darknet19_has_19_convolutions_five_max_pools_and_20_8_million_parameters() -> None:
    model = darknet19(num_classes=1000, in_chans=3)
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convolutions) == 19
    assert len(pools) == 5
    assert [c.out_channels for c in convolutions if c.kernel_size == (3, 3)] == [
        32, 64, 128, 128, 256, 256, 512, 512, 512, 1024, 1024, 1024,
    ]
    assert [c.out_channels for c in convolutions if c.kernel_size == (1, 1)] == [
        64, 128, 256, 256, 512, 512, 1000,
    ]
    assert parameter_count(model) == 20_842_376


@pytest.mark.parametrize("architecture", LUMBAR_CLASSIFIERS)
def test_every_lumbar_classifier_gives_two_logits_and_names_its_input_channels(
    architecture: str,
) -> None:
    assert architecture in ARCHITECTURES
    model = build_network(architecture, num_classes=2, in_chans=1).eval()
    assert model.in_chans == 1
    with torch.no_grad():
        assert model(torch.randn(3, 1, 192, 192)).shape == (3, 2)
        assert model(torch.randn(1, 1, 128, 160)).shape == (1, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, H, W\)"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("architecture", ["resnet18_demo", "darknet19_demo"])
def test_gradcam_layer_is_the_last_stride_32_stage_and_gives_a_heat_map(
    architecture: str,
) -> None:
    torch.manual_seed(0)
    model = build_network(architecture).eval()
    image = torch.randn(1, 1, 192, 160)
    with captured_output(model.gradcam_layer) as outputs, torch.no_grad():
        model(image)
    assert len(outputs) == 1
    assert outputs[0].shape[-2:] == (6, 5)
    cam = grad_cam(model, image, model.gradcam_layer, class_index=1)
    assert cam.shape[-2:] == (192, 160)  # upsampled to the input
    assert np.isfinite(cam).all() and cam.max() > 0


@pytest.mark.parametrize("architecture", ["resnet18_demo", "darknet19_demo"])
def test_weights_round_trip_through_safetensors(tmp_path: Path, architecture: str) -> None:
    torch.manual_seed(1)
    source = build_network(architecture).eval()
    torch.manual_seed(2)
    target = build_network(architecture).eval()
    path = tmp_path / "classifier.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    report = load_pretrained(target, path, require_head=True)
    assert report.head_loaded and not report.missing_keys
    image = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        assert torch.equal(source(image), target(image))


def test_a_torchvision_imagenet_resnet18_starts_a_one_channel_two_class_model(
    tmp_path: Path,
) -> None:
    torch.manual_seed(3)
    imagenet = resnet18(num_classes=1000, in_chans=3)
    path = tmp_path / "resnet18-f37072fd.pth"
    # torchvision's files are bare state dicts under these very names.
    torch.save(imagenet.state_dict(), path)
    model = resnet18(num_classes=2, in_chans=1)
    report = load_pretrained(model, path)
    assert report.layout is CheckpointLayout.TORCHVISION
    assert report.stem_adapted and not report.head_loaded
    assert set(report.skipped_keys) == {"fc.weight", "fc.bias"}
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)


def test_bad_configurations_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="in_chans must be 1 or 3"):
        resnet18(in_chans=2)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        darknet19(num_classes=0)
    with pytest.raises(TypeError, match="config must be a ResNetConfig"):
        ResNet("resnet18")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a DarkNetConfig"):
        DarkNet(None)  # type: ignore[arg-type]
