"""load_pretrained: every supported layout and file type round-trips; bad files are refused."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from osteonode.nets import (
    CheckpointError,
    CheckpointLayout,
    ConvNeXt,
    ConvNeXtConfig,
    VGGNonLocal,
    VGGNonLocalConfig,
    load_pretrained,
    read_state_dict,
)

from ._layouts import convnext_to_timm, convnext_to_torchvision, vgg_to_timm, vgg_to_torchvision

# A stage of 11 blocks gives two-digit block indices, which renaming rules must handle.
DEEP_NARROW = ConvNeXtConfig(depths=(1, 2, 11, 1), widths=(8, 16, 24, 32))
VGG_TINY = VGGNonLocalConfig(width_multiplier=1 / 16)


def convnext(seed: int, **changes: object) -> ConvNeXt:
    torch.manual_seed(seed)
    options = {"depths": DEEP_NARROW.depths, "widths": DEEP_NARROW.widths, **changes}
    return ConvNeXt(ConvNeXtConfig(**options))


def vgg(seed: int, **changes: object) -> VGGNonLocal:
    torch.manual_seed(seed)
    options = {"width_multiplier": VGG_TINY.width_multiplier, **changes}
    model = VGGNonLocal(VGGNonLocalConfig(**options))
    # Give the non-local block's zero-initialised W values so a round trip is a real check.
    torch.nn.init.normal_(model.non_local.w.weight)
    return model


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    contiguous = {key: tensor.contiguous().clone() for key, tensor in state.items()}
    if path.suffix == ".safetensors":
        save_file(contiguous, str(path))
    else:
        torch.save(contiguous, path)
    return path


def assert_same_tensors(
    left: torch.nn.Module, right: torch.nn.Module, *, skip: tuple[str, ...] | str = ()
) -> None:
    left_state, right_state = left.state_dict(), right.state_dict()
    assert left_state.keys() == right_state.keys()
    for key, tensor in right_state.items():
        if not key.startswith(skip):
            assert torch.equal(tensor, left_state[key]), key


LAYOUTS: dict[CheckpointLayout, Callable[[dict], dict]] = {
    CheckpointLayout.FACEBOOK: dict,
    CheckpointLayout.TIMM: convnext_to_timm,
    CheckpointLayout.TORCHVISION: convnext_to_torchvision,
}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=lambda layout: layout.value)
def test_convnext_checkpoint_round_trips_from_every_layout(
    tmp_path: Path, layout: CheckpointLayout, suffix: str
) -> None:
    source, target = convnext(seed=1), convnext(seed=2)
    path = save(LAYOUTS[layout](source.state_dict()), tmp_path / f"weights{suffix}")
    report = load_pretrained(target, path)
    assert report.layout is layout
    assert report.head_loaded
    assert report.skipped_keys == () and report.initialised_keys == ()
    assert not report.stem_adapted
    assert set(report.loaded_keys) == set(target.state_dict())
    assert_same_tensors(source, target)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_checkpoint_of_this_package_round_trips(
    tmp_path: Path, suffix: str, batch_norm: bool
) -> None:
    source, target = vgg(seed=1, batch_norm=batch_norm), vgg(seed=2, batch_norm=batch_norm)
    path = save(source.state_dict(), tmp_path / f"hip{suffix}")
    report = load_pretrained(target, path, require_head=True)
    assert report.layout is CheckpointLayout.OSTEONODE
    assert report.head_loaded and report.initialised_keys == ()
    assert_same_tensors(source, target)


VGG_LAYOUTS = {
    CheckpointLayout.TORCHVISION: (vgg_to_torchvision, ("classifier.0", "classifier.3",
                                                        "classifier.6")),
    CheckpointLayout.TIMM: (vgg_to_timm, ("pre_logits.fc1", "pre_logits.fc2", "head.fc")),
}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("layout", list(VGG_LAYOUTS), ids=lambda layout: layout.value)
def test_imagenet_vgg16_features_load_and_new_parts_stay_initialised(
    tmp_path: Path, suffix: str, layout: CheckpointLayout
) -> None:
    source, target = vgg(seed=1), vgg(seed=2)
    fresh = {key: tensor.clone() for key, tensor in target.state_dict().items()}
    rename, imagenet_head = VGG_LAYOUTS[layout]
    path = save(rename(source.state_dict()), tmp_path / f"vgg16{suffix}")
    report = load_pretrained(target, path)
    assert report.layout is layout
    assert report.skipped_keys == tuple(
        sorted(f"{name}.{p}" for name in imagenet_head for p in ("weight", "bias"))
    )
    assert not report.head_loaded
    assert set(report.initialised_keys) == {
        key for key in fresh if key.startswith(("non_local.", "head."))
    }
    for key, tensor in target.state_dict().items():
        expected = source.state_dict()[key] if key.startswith("features.") else fresh[key]
        assert torch.equal(tensor, expected), key


def test_imagenet_1000_class_head_is_skipped_and_reported(tmp_path: Path) -> None:
    imagenet, target = convnext(seed=1, num_classes=1000), convnext(seed=2, num_classes=2)
    fresh_head = target.head.weight.detach().clone()
    path = save(imagenet.state_dict(), tmp_path / "convnext_small_1k_224.safetensors")
    report = load_pretrained(target, path)
    assert report.skipped_keys == ("head.bias", "head.weight")
    assert report.initialised_keys == ("head.bias", "head.weight")
    assert not report.head_loaded
    assert torch.equal(target.head.weight, fresh_head)
    assert_same_tensors(imagenet, target, skip="head.")


def test_imagenet_head_from_torchvision_layout_is_reported_under_its_own_name(
    tmp_path: Path,
) -> None:
    imagenet, target = convnext(seed=1, num_classes=1000), convnext(seed=2)
    path = save(convnext_to_torchvision(imagenet.state_dict()), tmp_path / "tv.pth")
    report = load_pretrained(target, path)
    assert report.skipped_keys == ("classifier.2.bias", "classifier.2.weight")
    assert torch.equal(target.norm.weight, imagenet.norm.weight)


def test_inference_weights_without_a_fitting_head_are_refused_when_head_required(
    tmp_path: Path,
) -> None:
    target = convnext(seed=2)
    before = {key: tensor.clone() for key, tensor in target.state_dict().items()}
    path = save(convnext(seed=1, num_classes=1000).state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="classification head not loaded"):
        load_pretrained(target, path, require_head=True)
    for key, tensor in target.state_dict().items():
        assert torch.equal(tensor, before[key]), "a refused checkpoint must not change the model"


@pytest.mark.parametrize(
    ("model_factory", "stem_key"),
    [
        (lambda seed, **kw: convnext(seed, **kw), "downsample_layers.0.0.weight"),
        (lambda seed, **kw: vgg(seed, **kw), "features.0.weight"),
    ],
    ids=["convnext", "vgg"],
)
def test_rgb_stem_is_summed_into_a_one_channel_model_that_sees_grey_images_the_same(
    tmp_path: Path, model_factory: Callable[..., torch.nn.Module], stem_key: str
) -> None:
    rgb, grey = model_factory(1, in_chans=3).eval(), model_factory(2, in_chans=1).eval()
    path = save(rgb.state_dict(), tmp_path / "rgb.safetensors")
    report = load_pretrained(grey, path)
    assert report.stem_adapted
    assert torch.equal(grey.state_dict()[stem_key], rgb.state_dict()[stem_key].sum(1, keepdim=True))
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(grey(image), rgb(image.expand(-1, 3, -1, -1)), atol=1e-5)


def test_checkpoint_of_another_depth_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = convnext(seed=1).state_dict()
    del state["stages.2.10.gamma"]
    state["stages.2.11.gamma"] = torch.ones(24)
    path = save(state, tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError) as caught:
        load_pretrained(convnext(seed=2), path)
    message = str(caught.value)
    assert "missing keys (1): stages.2.10.gamma" in message
    assert "unexpected keys (1): stages.2.11.gamma" in message
    assert caught.value.missing == ("stages.2.10.gamma",)
    assert caught.value.unexpected == ("stages.2.11.gamma",)


def test_lenient_load_reports_missing_and_unexpected_keys_instead(tmp_path: Path) -> None:
    state = convnext(seed=1).state_dict()
    del state["stages.2.10.gamma"]
    state["extra.weight"] = torch.ones(2)
    path = save(state, tmp_path / "partial.pth")
    report = load_pretrained(convnext(seed=2), path, strict_backbone=False)
    assert report.missing_keys == ("stages.2.10.gamma",)
    assert report.unexpected_keys == ("extra.weight",)


def test_checkpoint_of_other_widths_names_the_mis_shaped_tensors(tmp_path: Path) -> None:
    path = save(convnext(seed=1, widths=(8, 16, 24, 40)).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"wrong shape.*stages\.3\.0\.dwconv\.weight"):
        load_pretrained(convnext(seed=2), path, strict_backbone=False)


def test_checkpoint_of_another_network_family_is_refused(tmp_path: Path) -> None:
    path = save(vgg(seed=1).state_dict(), tmp_path / "hip.safetensors")
    with pytest.raises(CheckpointError, match="not recognised") as caught:
        load_pretrained(convnext(seed=2), path, strict_backbone=False)
    assert "downsample_layers.0.0.weight" in caught.value.missing
    assert "non_local.theta.weight" in caught.value.unexpected


class _Payload:
    """An object whose unpickling would create a file: proof that no pickle code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_pickled_python_objects_in_a_pth_file_are_refused_without_running_them(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pickle-code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": convnext(seed=1).state_dict(), "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"weights_only=True.*Unsupported global"):
        load_pretrained(convnext(seed=2), path)
    assert not marker.exists()


def test_training_checkpoint_wrapping_is_unwrapped(tmp_path: Path) -> None:
    source = convnext(seed=1)
    wrapped = {
        "model": {f"module.{key}": tensor for key, tensor in source.state_dict().items()},
        "epoch": 12,
    }
    path = tmp_path / "checkpoint-best.pth"
    torch.save(wrapped, path)
    target = convnext(seed=2)
    load_pretrained(target, path)
    assert_same_tensors(source, target)


def test_state_dict_with_non_tensor_entries_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"stem.weight": torch.ones(1), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not tensors.*epoch"):
        read_state_dict(path)


def test_unsupported_missing_and_corrupt_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="unsupported checkpoint suffix"):
        read_state_dict(tmp_path / "weights.onnx")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "absent.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "corrupt.safetensors")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_state_dict(tmp_path / "corrupt.pth")
    with pytest.raises(TypeError):
        read_state_dict(42)  # type: ignore[arg-type]


def test_only_the_packages_networks_are_accepted(tmp_path: Path) -> None:
    path = save(convnext(seed=1).state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(TypeError, match="model must be one of ConvNeXt, VGGNonLocal, ResNet, DarkNet"):
        load_pretrained(torch.nn.Linear(2, 2), path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_with_objects_is_refused_without_running_them(tmp_path: Path) -> None:
    path = tmp_path / "plain-pickle.pth"
    with path.open("wb") as stream:
        pickle.dump({"weight": _Payload(tmp_path / "x")}, stream)
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not (tmp_path / "x").exists()
