"""Torch modules of the screening networks, and loading of their pretrained weights.

Plain torch only (no torchvision, no timm). The classifiers share
:class:`~osteonode.nets.classifier.ImageClassifier` (input check, logits, Grad-CAM layer):
:mod:`~osteonode.nets.convnext` for the chest
classifiers, :mod:`~osteonode.nets.vgg_nonlocal` for the hip classifier,
:mod:`~osteonode.nets.resnet` and :mod:`~osteonode.nets.darknet` for the AP and lateral lumbar
classifiers,
:mod:`~osteonode.nets.checkpoints` to load a site's checkpoint in any of the common layouts.
:func:`build_network` builds a network from the architecture name a model card gives.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from torch import nn

from osteonode.nets.checkpoints import (
    CheckpointError,
    CheckpointLayout,
    LoadReport,
    load_pretrained,
    read_state_dict,
)
from osteonode.nets.classifier import ImageClassifier
from osteonode.nets.convnext import (
    ConvNeXt,
    ConvNeXtConfig,
    convnext_demo,
    convnext_small,
    convnext_tiny,
)
from osteonode.nets.darknet import DarkNet, DarkNetConfig, darknet19, darknet19_demo
from osteonode.nets.femur_locator import FemurLocator, femur_locator
from osteonode.nets.resnet import ResNet, ResNetConfig, resnet18, resnet18_demo
from osteonode.nets.vertebrae import (
    VertebraCropNet,
    VertebraKeypointNet,
    vertebra_crop_net,
    vertebra_keypoint_net,
)
from osteonode.nets.vgg_nonlocal import (
    NonLocalBlock2d,
    VGGNonLocal,
    VGGNonLocalConfig,
    vgg16_nonlocal,
    vgg16_nonlocal_demo,
)

__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "CheckpointLayout",
    "ConvNeXt",
    "ConvNeXtConfig",
    "DarkNet",
    "DarkNetConfig",
    "FemurLocator",
    "ImageClassifier",
    "LoadReport",
    "NonLocalBlock2d",
    "ResNet",
    "ResNetConfig",
    "VGGNonLocal",
    "VGGNonLocalConfig",
    "VertebraCropNet",
    "VertebraKeypointNet",
    "build_network",
    "convnext_demo",
    "convnext_small",
    "convnext_tiny",
    "darknet19",
    "darknet19_demo",
    "femur_locator",
    "load_pretrained",
    "read_state_dict",
    "resnet18",
    "resnet18_demo",
    "vertebra_crop_net",
    "vertebra_keypoint_net",
    "vgg16_nonlocal",
    "vgg16_nonlocal_demo",
]

#: Architecture names a model card may use, and the constructor each one calls.
ARCHITECTURES: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        "convnext_small": convnext_small,
        "convnext_tiny": convnext_tiny,
        "convnext_demo": convnext_demo,
        "vgg16_nonlocal": vgg16_nonlocal,
        "vgg16_nonlocal_demo": vgg16_nonlocal_demo,
        "resnet18": resnet18,
        "resnet18_demo": resnet18_demo,
        "darknet19": darknet19,
        "darknet19_demo": darknet19_demo,
        "vertebra_keypoint_net": vertebra_keypoint_net,
        "vertebra_crop_net": vertebra_crop_net,
        "femur_locator": femur_locator,
    }
)


def build_network(architecture: str, **options: Any) -> nn.Module:
    """Build a randomly initialised network by architecture name.

    Parameters
    ----------
    architecture : str
        One of :data:`ARCHITECTURES`.
    **options : Any
        Keyword arguments of that constructor (``num_classes``, ``in_chans``, ...).

    Returns
    -------
    torch.nn.Module
        The network, in training mode.

    Raises
    ------
    ValueError
        If the architecture name is unknown.
    """
    try:
        constructor = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return constructor(**options)
