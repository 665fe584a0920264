"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) in plain torch.

Boonrod et al. 2025 classify an AP lumbar spine radiograph as osteoporosis (T-score <= -2.5) or
not with a two-class ResNet-18. This module builds that network, and a narrower demo member of the
same layout, with parameter names identical to torchvision's ``resnet18`` (``conv1``, ``bn1``,
``layer1.0.conv1`` ... ``layer4.1.bn2``, ``layer2.0.downsample.0``, ``fc``), which timm's ResNet
shares, so such a state dict loads through :func:`osteonode.nets.checkpoints.load_pretrained`
without renaming.

Architecture, as published (ResNet-18, "option B" shortcuts):

- stem: 7 x 7 convolution with stride 2 -> BatchNorm -> ReLU -> 3 x 3 max-pool with stride 2;
- four stages of two basic blocks each (3 x 3 conv -> BN -> ReLU -> 3 x 3 conv -> BN, plus the
  input, then ReLU); the first block of stages 2-4 halves the resolution with stride 2 and
  matches the shortcut with a 1 x 1 convolution + BN;
- head: global average pool -> Linear.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from osteonode.nets.classifier import (
    ImageClassifier,
    check_classifier_options,
    check_stage_layout,
)

__all__ = [
    "RESNET18",
    "RESNET18_DEMO",
    "BasicBlock",
    "ResNet",
    "ResNetConfig",
    "resnet18",
    "resnet18_demo",
]


@dataclass(frozen=True)
class ResNetConfig:
    """Shape of a basic-block ResNet.

    Parameters
    ----------
    depths : tuple[int, ...]
        Basic blocks per stage.
    widths : tuple[int, ...]
        Channels of each stage; same length as ``depths``. The stem has ``widths[0]`` channels.
    in_chans : int
        Input channels: 3 for ImageNet-style RGB input, 1 for a radiograph fed as one channel.
    num_classes : int
        Number of output logits (2 for the lumbar classifiers).
    zero_init_residual : bool
        Start the last BatchNorm of every block at zero, so each block begins as the identity
        (Goyal et al. 2017); helps small networks trained from scratch.

    Raises
    ------
    ValueError
        If a value is out of range or ``depths`` and ``widths`` differ in length.
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    in_chans: int = 3
    num_classes: int = 2
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        check_stage_layout(self.depths, self.widths)
        check_classifier_options(self.in_chans, self.num_classes)


#: ResNet-18 as published: 11,689,512 parameters with a 1000-class head and three input channels
#: (11,176,512 without the head), Boonrod et al.'s AP lumbar network.
RESNET18 = ResNetConfig(depths=(2, 2, 2, 2), widths=(64, 128, 256, 512))
#: The demo member: the same layout at a quarter of the widths (16-32-64-128, about 0.7 M
#: parameters), trained from scratch on synthetic phantoms on a CPU. Not a published model.
RESNET18_DEMO = ResNetConfig(depths=(2, 2, 2, 2), widths=(16, 32, 64, 128), zero_init_residual=True)


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with a residual shortcut; attribute names follow torchvision.

    Parameters
    ----------
    in_channels : int
        Channels in.
    out_channels : int
        Channels out.
    stride : int
        Stride of the first convolution (2 halves the resolution).

    Notes
    -----
    ReLUs are not in place, so that Grad-CAM hooks on a block see intact tensors.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(branch + shortcut)


class ResNet(ImageClassifier):
    """Basic-block ResNet classifier.

    Parameters
    ----------
    config : ResNetConfig
        Depths, widths, input channels and classes.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`ResNetConfig`.

    Notes
    -----
    ``forward`` returns logits of shape (N, num_classes). Grad-CAM should hook
    :attr:`gradcam_layer`, the last stage (``layer4``), whose output is the final feature map
    (stride 32) before pooling.
    """

    def __init__(self, config: ResNetConfig) -> None:
        if not isinstance(config, ResNetConfig):
            raise TypeError(f"config must be a ResNetConfig, got {type(config).__name__}")
        super().__init__()
        self.config = config
        widths = config.widths
        # Stem
        self.conv1 = nn.Conv2d(
            config.in_chans, widths[0], kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # Stages, named layer1 ... layerN as torchvision names them.
        channels = widths[0]
        self.stage_names: tuple[str, ...] = tuple(f"layer{i}" for i in range(1, len(widths) + 1))
        for index, (name, depth, width) in enumerate(
            zip(self.stage_names, config.depths, widths, strict=True)
        ):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(depth - 1)]
            self.add_module(name, nn.Sequential(*blocks))
            channels = width
        # Head
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.config.zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    @property
    def in_chans(self) -> int:
        """Input channels the network takes."""
        return self.config.in_chans

    @property
    def gradcam_layer(self) -> nn.Module:
        """Module whose output (the last stage's feature map) Grad-CAM should use."""
        return getattr(self, self.stage_names[-1])

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def logits(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.fc(torch.flatten(self.avgpool(features), 1))


def resnet18(num_classes: int = 2, in_chans: int = 3) -> ResNet:
    """Build ResNet-18 (basic blocks 2-2-2-2, widths 64-128-256-512, 7 x 7 stem).

    Parameters
    ----------
    num_classes : int
        Output logits; 2 for the lumbar classifiers.
    in_chans : int
        1 or 3 input channels.

    Returns
    -------
    ResNet
        Randomly initialised network.
    """
    return ResNet(replace(RESNET18, num_classes=num_classes, in_chans=in_chans))


def resnet18_demo(num_classes: int = 2, in_chans: int = 1) -> ResNet:
    """Build the demo ResNet-18 (quarter widths 16-32-64-128; see :data:`RESNET18_DEMO`).

    Parameters
    ----------
    num_classes : int
        Output logits.
    in_chans : int
        1 (default: demo weights are trained from scratch on one-channel phantoms) or 3.

    Returns
    -------
    ResNet
        Randomly initialised network.
    """
    return ResNet(replace(RESNET18_DEMO, num_classes=num_classes, in_chans=in_chans))
