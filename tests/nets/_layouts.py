"""Native -> foreign key mappings written independently of osteonode.nets.checkpoints.

The tests save a model's state dict under another library's names with these functions and check
that ``load_pretrained`` maps the names back; two independent directions catch a wrong rule.
"""

from __future__ import annotations

import torch

_TIMM_BLOCK_NAMES = {"dwconv": "conv_dw", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
_TORCHVISION_BLOCK_NAMES = {"dwconv": "block.0", "norm": "block.2", "pwconv1": "block.3",
                            "pwconv2": "block.5"}


def convnext_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ConvNeXt state dict to timm's ``ConvNeXt`` names."""
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "downsample_layers" and parts[1] == "0":
            new = ".".join(["stem", *parts[2:]])
        elif parts[0] == "downsample_layers":
            new = ".".join(["stages", parts[1], "downsample", *parts[2:]])
        elif parts[0] == "stages":
            module = _TIMM_BLOCK_NAMES.get(parts[3], parts[3])
            new = ".".join(["stages", parts[1], "blocks", parts[2], module, *parts[4:]])
        elif parts[0] == "norm":
            new = "head.norm." + parts[1]
        else:
            assert parts[0] == "head"
            new = "head.fc." + parts[1]
        renamed[new] = tensor
    return renamed


def convnext_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ConvNeXt state dict to torchvision's ``ConvNeXt`` names and shapes."""
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "downsample_layers":
            new = ".".join(["features", str(2 * int(parts[1])), *parts[2:]])
        elif parts[0] == "stages":
            position = str(2 * int(parts[1]) + 1)
            if parts[3] == "gamma":
                new = f"features.{position}.{parts[2]}.layer_scale"
                tensor = tensor.reshape(-1, 1, 1)
            else:
                module = _TORCHVISION_BLOCK_NAMES[parts[3]]
                new = ".".join(["features", position, parts[2], module, *parts[4:]])
        elif parts[0] == "norm":
            new = "classifier.0." + parts[1]
        else:
            assert parts[0] == "head"
            new = "classifier.2." + parts[1]
        renamed[new] = tensor
    return renamed


def vgg_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``features.*`` tensors and add a (miniature) fc6-fc8 classifier as ImageNet has."""
    renamed = {key: tensor for key, tensor in state.items() if key.startswith("features.")}
    for index, shape in ((0, (32, 16)), (3, (32, 32)), (6, (1000, 32))):
        renamed[f"classifier.{index}.weight"] = torch.randn(shape)
        renamed[f"classifier.{index}.bias"] = torch.randn(shape[0])
    return renamed


def vgg_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``features.*`` tensors and add a (miniature) timm ConvMlp + classifier head."""
    renamed = {key: tensor for key, tensor in state.items() if key.startswith("features.")}
    for name, shape in (("pre_logits.fc1", (32, 16, 7, 7)), ("pre_logits.fc2", (32, 32, 1, 1)),
                        ("head.fc", (1000, 32))):
        renamed[f"{name}.weight"] = torch.randn(shape)
        renamed[f"{name}.bias"] = torch.randn(shape[0])
    return renamed
