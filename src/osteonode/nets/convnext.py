"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) in plain torch.

The chest pipeline (METHODS.md section 2, Park et al. 2025) classifies a 512 x 512 chest radiograph
with a two-class ConvNeXt-small. This module builds that network, and smaller members of the same
family, with parameter names identical to the facebookresearch/ConvNeXt reference checkpoints
(``downsample_layers.0.0.weight``, ``stages.2.5.dwconv.weight``, ``stages.*.*.pwconv1``, ``gamma``,
``norm``, ``head``) so that such a state dict loads without renaming.
:func:`osteonode.nets.checkpoints.load_pretrained` maps the timm and torchvision layouts onto these
names.

Architecture, as published:

- stem: 4 x 4 convolution with stride 4, then LayerNorm over channels;
- before stages 2..n: LayerNorm over channels, then 2 x 2 convolution with stride 2;
- block: 7 x 7 depthwise convolution -> LayerNorm (channels-last) -> Linear (4x width) -> GELU ->
  Linear -> layer scale (initialised to 1e-6) -> stochastic depth -> residual add;
- head: global average pool -> LayerNorm -> Linear.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from osteonode.nets.classifier import (
    ImageClassifier,
    check_classifier_options,
    check_stage_layout,
)

__all__ = [
    "CONVNEXT_DEMO",
    "CONVNEXT_SMALL",
    "CONVNEXT_TINY",
    "ConvNeXt",
    "ConvNeXtBlock",
    "ConvNeXtConfig",
    "DropPath",
    "LayerNorm2d",
    "convnext_demo",
    "convnext_small",
    "convnext_tiny",
]

#: LayerNorm epsilon of the reference implementation (and of timm and torchvision).
LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class ConvNeXtConfig:
    """Shape and regularisation of a ConvNeXt network.

    Parameters
    ----------
    depths : tuple[int, ...]
        Number of blocks in each stage.
    widths : tuple[int, ...]
        Channel count of each stage; same length as ``depths``.
    in_chans : int
        Input channels: 3 for ImageNet-style RGB input, 1 for a radiograph fed as one channel.
    num_classes : int
        Number of output logits (2 for the chest classifiers).
    drop_path_rate : float
        Stochastic depth probability of the last block; it rises linearly from 0 at the first block,
        as in the reference training recipe. Must lie in [0, 1).
    layer_scale_init : float
        Initial value of every layer-scale parameter ``gamma``.
    head_init_scale : float
        Factor applied to the initial weights and biases of the classification layer.

    Raises
    ------
    ValueError
        If any value is out of range or ``depths`` and ``widths`` differ in length.
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    in_chans: int = 3
    num_classes: int = 2
    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6
    head_init_scale: float = 1.0

    def __post_init__(self) -> None:
        check_stage_layout(self.depths, self.widths)
        check_classifier_options(self.in_chans, self.num_classes)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must lie in [0, 1), got {self.drop_path_rate!r}")
        if self.layer_scale_init <= 0.0:
            raise ValueError(f"layer_scale_init must be positive, got {self.layer_scale_init!r}")
        if self.head_init_scale <= 0.0:
            raise ValueError(f"head_init_scale must be positive, got {self.head_init_scale!r}")


#: ConvNeXt-T as published (28.6 M parameters with a 1000-class head).
CONVNEXT_TINY = ConvNeXtConfig(depths=(3, 3, 9, 3), widths=(96, 192, 384, 768))
#: ConvNeXt-S as published (50.2 M parameters with a 1000-class head); the chest network.
CONVNEXT_SMALL = ConvNeXtConfig(depths=(3, 3, 27, 3), widths=(96, 192, 384, 768))
#: Small member of the family for the demo weights trained on synthetic phantoms on a CPU:
#: same four-stage layout, two blocks per stage, a third of ConvNeXt-T's widths (about 1.5 M
#: parameters, roughly 1/15 of ConvNeXt-S's compute at 512 x 512). Not a published model.
CONVNEXT_DEMO = ConvNeXtConfig(depths=(2, 2, 2, 2), widths=(32, 64, 128, 256))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of an (N, C, H, W) tensor ("channels_first" in the paper)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples during training.

    In training mode each sample's branch output is zeroed with probability ``drop_prob`` and the
    kept ones are scaled by ``1 / (1 - drop_prob)`` so the expected value is unchanged; in
    evaluation mode the module is the identity.

    Parameters
    ----------
    drop_prob : float
        Probability of dropping the branch, in [0, 1).

    Raises
    ------
    ValueError
        If ``drop_prob`` is outside [0, 1).
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must lie in [0, 1), got {drop_prob!r}")
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.training or self.drop_prob == 0.0:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = x.new_empty(mask_shape).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:  # noqa: D102
        return f"drop_prob={self.drop_prob}"


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block; attribute names follow the reference implementation.

    Parameters
    ----------
    width : int
        Channels in and out.
    drop_path : float
        Stochastic depth probability of this block.
    layer_scale_init : float
        Initial value of the per-channel layer scale ``gamma``.
    """

    def __init__(self, width: int, *, drop_path: float, layer_scale_init: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(width, width, kernel_size=7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * width, width)
        self.gamma = nn.Parameter(torch.full((width,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        branch = self.dwconv(x).permute(0, 2, 3, 1)
        # Linear layers on channels-last tensors are the reference's (faster) form of 1x1 convs.
        branch = self.pwconv2(self.act(self.pwconv1(self.norm(branch))))
        branch = (self.gamma * branch).permute(0, 3, 1, 2)
        return x + self.drop_path(branch)


class ConvNeXt(ImageClassifier):
    """ConvNeXt classifier.

    Parameters
    ----------
    config : ConvNeXtConfig
        Depths, widths, input channels, classes and regularisation.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`ConvNeXtConfig`.

    Notes
    -----
    ``forward`` returns logits of shape (N, num_classes); :meth:`predict_proba` applies the softmax.
    Grad-CAM should hook :attr:`gradcam_layer`, the last stage, whose output is the final feature
    map (stride 32) before pooling.
    """

    def __init__(self, config: ConvNeXtConfig) -> None:
        if not isinstance(config, ConvNeXtConfig):
            raise TypeError(f"config must be a ConvNeXtConfig, got {type(config).__name__}")
        super().__init__()
        self.config = config
        widths = config.widths

        stem = nn.Sequential(
            nn.Conv2d(config.in_chans, widths[0], kernel_size=4, stride=4),
            LayerNorm2d(widths[0], eps=LAYER_NORM_EPS),
        )
        self.downsample_layers = nn.ModuleList([stem])
        for previous, current in zip(widths[:-1], widths[1:]):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm2d(previous, eps=LAYER_NORM_EPS),
                    nn.Conv2d(previous, current, kernel_size=2, stride=2),
                )
            )

        rates = torch.linspace(0.0, config.drop_path_rate, sum(config.depths)).tolist()
        self.stages = nn.ModuleList()
        first = 0
        for depth, width in zip(config.depths, widths):
            self.stages.append(
                nn.Sequential(
                    *(
                        ConvNeXtBlock(
                            width,
                            drop_path=rates[first + i],
                            layer_scale_init=config.layer_scale_init,
                        )
                        for i in range(depth)
                    )
                )
            )
            first += depth

        self.norm = nn.LayerNorm(widths[-1], eps=LAYER_NORM_EPS)
        self.head = nn.Linear(widths[-1], config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.head.weight.mul_(self.config.head_init_scale)
            self.head.bias.mul_(self.config.head_init_scale)

    @property
    def gradcam_layer(self) -> nn.Module:
        """Module whose output (the last stage's feature map) Grad-CAM should use."""
        return self.stages[-1]

    @property
    def in_chans(self) -> int:
        """Input channels the network takes."""
        return self.config.in_chans

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return x

    def logits(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        pooled = features.mean(dim=(-2, -1))
        return self.head(self.norm(pooled))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Return softmax class probabilities, shape (N, num_classes), without gradients.

        Parameters
        ----------
        x : torch.Tensor
            Images, shape (N, in_chans, H, W).

        Returns
        -------
        torch.Tensor
            Probabilities that sum to 1 over the class axis. The caller chooses train/eval mode.
        """
        return torch.softmax(self.forward(x), dim=1)


def _build(
    base: ConvNeXtConfig, num_classes: int, in_chans: int, drop_path_rate: float
) -> ConvNeXt:
    return ConvNeXt(
        replace(base, num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate)
    )


def convnext_small(
    num_classes: int = 2, in_chans: int = 3, drop_path_rate: float = 0.0
) -> ConvNeXt:
    """Build ConvNeXt-S (depths 3-3-27-3, widths 96-192-384-768).

    Parameters
    ----------
    num_classes : int
        Output logits; 2 for the chest classifiers.
    in_chans : int
        1 or 3 input channels.
    drop_path_rate : float
        Stochastic depth rate of the last block (0.4 in the reference ImageNet recipe).

    Returns
    -------
    ConvNeXt
        Randomly initialised network (49.46 M parameters with two classes).
    """
    return _build(CONVNEXT_SMALL, num_classes, in_chans, drop_path_rate)


def convnext_tiny(
    num_classes: int = 2, in_chans: int = 3, drop_path_rate: float = 0.0
) -> ConvNeXt:
    """Build ConvNeXt-T (depths 3-3-9-3, widths 96-192-384-768).

    Parameters
    ----------
    num_classes : int
        Output logits.
    in_chans : int
        1 or 3 input channels.
    drop_path_rate : float
        Stochastic depth rate of the last block.

    Returns
    -------
    ConvNeXt
        Randomly initialised network.
    """
    return _build(CONVNEXT_TINY, num_classes, in_chans, drop_path_rate)


def convnext_demo(
    num_classes: int = 2, in_chans: int = 1, drop_path_rate: float = 0.0
) -> ConvNeXt:
    """Build the demo ConvNeXt (depths 2-2-2-2, widths 32-64-128-256; see :data:`CONVNEXT_DEMO`).

    Parameters
    ----------
    num_classes : int
        Output logits.
    in_chans : int
        1 (default: demo weights are trained from scratch on one-channel phantoms) or 3.
    drop_path_rate : float
        Stochastic depth rate of the last block.

    Returns
    -------
    ConvNeXt
        Randomly initialised network.
    """
    return _build(CONVNEXT_DEMO, num_classes, in_chans, drop_path_rate)
