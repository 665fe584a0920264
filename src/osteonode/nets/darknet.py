"""DarkNet-19 (Redmon & Farhadi, "YOLO9000: Better, Faster, Stronger", CVPR 2017) in plain torch.

Boonrod et al. 2025 classify a lateral lumbar spine radiograph as osteoporosis (T-score <= -2.5)
or not with a two-class DarkNet-19, the YOLOv2 backbone. The layout is the paper's Table 6:

- 18 convolutions in six stages, each convolution followed by BatchNorm and a leaky ReLU
  (slope 0.1); 3 x 3 convolutions double the channels from stage to stage and 1 x 1
  convolutions between them halve the channels again (a "bottleneck" the network-in-network way);
- a 2 x 2 max-pool with stride 2 closes stages 1-5 (five max-pools, stride 32 overall);
- the 19th convolution, 1 x 1 to the classes with a bias and no activation, then global average
  pooling of those class maps gives the logits.

The demo member keeps this layout at a quarter of the widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from osteonode.nets.classifier import ImageClassifier, check_classifier_options

__all__ = [
    "DARKNET19_STAGES",
    "ConvBnLeaky",
    "DarkNet",
    "DarkNetConfig",
    "darknet19",
    "darknet19_demo",
]

#: Negative slope of the leaky ReLU in darknet.
LEAKY_SLOPE = 0.1
#: DarkNet-19's convolutions stage by stage as (kernel size, output channels); a 2 x 2 max-pool
#: follows every stage but the last.
DARKNET19_STAGES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((3, 32),),
    ((3, 64),),
    ((3, 128), (1, 64), (3, 128)),
    ((3, 256), (1, 128), (3, 256)),
    ((3, 512), (1, 256), (3, 512), (1, 256), (3, 512)),
    ((3, 1024), (1, 512), (3, 1024), (1, 512), (3, 1024)),
)


@dataclass(frozen=True)
class DarkNetConfig:
    """Shape of a DarkNet-19 network.

    Parameters
    ----------
    in_chans : int
        Input channels: 3 for ImageNet-style RGB input, 1 for a radiograph fed as one channel.
    num_classes : int
        Number of output logits (2 for the lumbar classifiers).
    width_multiplier : float
        Factor on every convolution's channel count (1.0 is DarkNet-19; 0.25 the demo network),
        rounded to the nearest integer and at least 2.

    Raises
    ------
    ValueError
        If a value is out of range.
    """

    in_chans: int = 3
    num_classes: int = 2
    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        check_classifier_options(self.in_chans, self.num_classes)
        if not 1.0 / 16.0 <= self.width_multiplier <= 4.0:
            raise ValueError(
                f"width_multiplier must lie in [1/16, 4], got {self.width_multiplier!r}"
            )

    def stage_layers(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Return (kernel size, output channels) per convolution and stage after the multiplier.

        Returns
        -------
        tuple[tuple[tuple[int, int], ...], ...]
            Six stages of convolutions.
        """
        return tuple(
            tuple((kernel, max(2, round(width * self.width_multiplier))) for kernel, width in stage)
            for stage in DARKNET19_STAGES
        )


class ConvBnLeaky(nn.Sequential):
    """Convolution without bias -> BatchNorm -> leaky ReLU, darknet's ``[convolutional]`` layer.

    Parameters
    ----------
    in_channels : int
        Channels in.
    out_channels : int
        Channels out.
    kernel_size : int
        1 or 3; the padding keeps the resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        # Not in place, so that Grad-CAM hooks see intact tensors.
        self.act = nn.LeakyReLU(LEAKY_SLOPE)


class DarkNet(ImageClassifier):
    """DarkNet-19 classifier.

    Parameters
    ----------
    config : DarkNetConfig
        Input channels, classes and width.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`DarkNetConfig`.

    Notes
    -----
    ``forward`` returns logits of shape (N, num_classes). Grad-CAM should hook
    :attr:`gradcam_layer`, the last stage of 3 x 3 / 1 x 1 convolutions (stride 32), whose output
    the 1 x 1 classifier convolution reads.
    """

    def __init__(self, config: DarkNetConfig) -> None:
        if not isinstance(config, DarkNetConfig):
            raise TypeError(f"config must be a DarkNetConfig, got {type(config).__name__}")
        super().__init__()
        self.config = config
        layers = config.stage_layers()
        self.stages = nn.ModuleList()
        channels = config.in_chans
        for index, stage in enumerate(layers):
            modules: list[nn.Module] = []
            for kernel, width in stage:
                modules.append(ConvBnLeaky(channels, width, kernel))
                channels = width
            if index < len(layers) - 1:
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            self.stages.append(nn.Sequential(*modules))
        # The 19th convolution: class maps, averaged over the image.
        self.head = nn.Conv2d(channels, config.num_classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, a=LEAKY_SLOPE, mode="fan_out", nonlinearity="leaky_relu"
                )
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    @property
    def in_chans(self) -> int:
        """Input channels the network takes."""
        return self.config.in_chans

    @property
    def gradcam_layer(self) -> nn.Module:
        """Module whose output (the last stage's feature map) Grad-CAM should use."""
        return self.stages[-1]

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for stage in self.stages:
            x = stage(x)
        return x

    def logits(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.head(features).mean(dim=(-2, -1))


def darknet19(num_classes: int = 2, in_chans: int = 3) -> DarkNet:
    """Build DarkNet-19 (Redmon & Farhadi 2017, Table 6).

    Parameters
    ----------
    num_classes : int
        Output logits; 2 for the lumbar classifiers.
    in_chans : int
        1 or 3 input channels.

    Returns
    -------
    DarkNet
        Randomly initialised network.
    """
    return DarkNet(DarkNetConfig(in_chans=in_chans, num_classes=num_classes))


def darknet19_demo(num_classes: int = 2, in_chans: int = 1) -> DarkNet:
    """Build the demo DarkNet-19: the same 19 layers at a quarter of the widths (8 ... 256).

    Parameters
    ----------
    num_classes : int
        Output logits.
    in_chans : int
        1 (default: demo weights are trained from scratch on one-channel phantoms) or 3.

    Returns
    -------
    DarkNet
        Randomly initialised network.
    """
    return DarkNet(
        DarkNetConfig(in_chans=in_chans, num_classes=num_classes, width_multiplier=0.25)
    )
