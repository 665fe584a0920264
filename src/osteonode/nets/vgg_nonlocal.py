"""VGG16 with a non-local (self-attention) block, the hip classifier of Jang et al. 2021.

METHODS.md section 3: a crop of the proximal femur goes through VGG16 with a non-local block
inside and a binary output (osteoporosis, T <= -2.5, vs not) trained with binary cross-entropy.

- Convolutions: VGG16's 13 3 x 3 convolutions with ReLU (Simonyan & Zisserman 2015, configuration
  D) in five stages closed by 2 x 2 max-pools. The ``features`` sequence has torchvision's
  ``vgg16`` indices (``features.0.weight`` ... ``features.28.weight``; with ``batch_norm=True``
  those of ``vgg16_bn``), so an ImageNet VGG16 state dict loads through
  :func:`osteonode.nets.checkpoints.load_pretrained`.
- Non-local block: embedded Gaussian form of Wang et al., "Non-local Neural Networks", CVPR 2018,
  applied after the max-pool that closes one stage (stage 4 by default, see
  :class:`VGGNonLocalConfig`). It is a separate module (``non_local``) so the ``features`` indices
  stay torchvision's.
- Head: global average pool -> dropout -> Linear to **one logit**. One logit, not two classes,
  because the paper trains with binary cross-entropy; ``forward`` returns (N, 1) logits for
  ``torch.nn.BCEWithLogitsLoss`` and :meth:`VGGNonLocal.predict_proba` returns the sigmoid, the
  probability of osteoporosis, shape (N,). VGG16's three fully connected layers (fc6-fc8, 120 M
  parameters for 224 x 224 input) are not used: global pooling lets the crop size vary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from osteonode.nets.classifier import ImageClassifier

__all__ = [
    "VGG16_STAGES",
    "NonLocalBlock2d",
    "VGGNonLocal",
    "VGGNonLocalConfig",
    "vgg16_nonlocal",
    "vgg16_nonlocal_demo",
]

#: Output channels of the 3 x 3 convolutions of VGG16 (configuration D), stage by stage.
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


@dataclass(frozen=True)
class VGGNonLocalConfig:
    """Shape and regularisation of :class:`VGGNonLocal`.

    Parameters
    ----------
    in_chans : int
        Input channels: 3 for ImageNet-style input, 1 for a z-normalised radiograph crop.
    width_multiplier : float
        Factor on every stage's channel count (1.0 is VGG16; 0.25 gives the demo network).
        Channels are rounded to the nearest integer.
    batch_norm : bool
        Put a BatchNorm2d after every convolution (torchvision's ``vgg16_bn`` layout). Off by
        default: the published VGG16 has none.
    non_local_after_stage : int
        Stage (1-5) after whose max-pool the non-local block runs. The default 4 puts it at stride
        16, where Wang et al. found a single block most useful (their res4 of ResNet): at a
        512 x 512 crop that is 32 x 32 positions, few enough for a full affinity matrix, while the
        convolutions of stage 5 can still build on the long-range context. The position in Jang
        et al.'s network is not stated in a form we could confirm, hence configurable.
    non_local_subsample : bool
        Max-pool phi and g by 2 before the affinity (Wang et al.'s memory saving: 4x fewer
        keys/values, the queries keep full resolution).
    dropout : float
        Dropout probability before the final linear layer, in [0, 1).

    Raises
    ------
    ValueError
        If a value is out of range.
    """

    in_chans: int = 3
    width_multiplier: float = 1.0
    batch_norm: bool = False
    non_local_after_stage: int = 4
    non_local_subsample: bool = True
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans!r}")
        # Below 1/32 the first stage would have a single channel and the block no inter channel.
        if not 1.0 / 32.0 <= self.width_multiplier <= 4.0:
            raise ValueError(
                f"width_multiplier must lie in [1/32, 4], got {self.width_multiplier!r}"
            )
        if not 1 <= self.non_local_after_stage <= len(VGG16_STAGES):
            raise ValueError(
                f"non_local_after_stage must be 1..{len(VGG16_STAGES)}, "
                f"got {self.non_local_after_stage!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    def stage_channels(self) -> tuple[tuple[int, ...], ...]:
        """Return the convolution output channels per stage after the width multiplier.

        Returns
        -------
        tuple[tuple[int, ...], ...]
            Five tuples of channel counts.
        """
        return tuple(
            tuple(max(2, round(c * self.width_multiplier)) for c in stage) for stage in VGG16_STAGES
        )


class NonLocalBlock2d(nn.Module):
    """Embedded Gaussian non-local block (Wang et al. 2018), an identity at initialisation.

    ``z = x + W(softmax(theta(x)^T phi(x)) g(x))`` where theta, phi and g are 1 x 1 convolutions to
    ``inter_channels`` and W is a 1 x 1 convolution back to ``channels`` whose weight and bias start
    at zero, so the block passes its input through unchanged until training moves W. The affinity
    is not scaled by 1/sqrt(d), as in the paper.

    Parameters
    ----------
    channels : int
        Channels in and out.
    inter_channels : int or None
        Embedding channels; ``channels // 2`` (the paper's choice) when None.
    subsample : bool
        Max-pool phi(x) and g(x) by 2 where the map is at least 2 x 2.

    Raises
    ------
    ValueError
        If a channel count is not positive.
    """

    def __init__(
        self, channels: int, inter_channels: int | None = None, *, subsample: bool = True
    ) -> None:
        inter = channels // 2 if inter_channels is None else inter_channels
        if channels < 1 or inter < 1:
            raise ValueError(
                f"channels and inter_channels must be positive, got {channels!r} and {inter!r}"
            )
        super().__init__()
        self.channels = channels
        self.inter_channels = inter
        self.subsample = subsample
        self.theta = nn.Conv2d(channels, inter, kernel_size=1)
        self.phi = nn.Conv2d(channels, inter, kernel_size=1)
        self.g = nn.Conv2d(channels, inter, kernel_size=1)
        self.w = nn.Conv2d(inter, channels, kernel_size=1)  # W_z of the paper
        for conv in (self.theta, self.phi, self.g):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.w.weight)
        nn.init.zeros_(self.w.bias)

    def _keys(self, embedded: torch.Tensor) -> torch.Tensor:
        if self.subsample and min(embedded.shape[-2:]) >= 2:
            embedded = F.max_pool2d(embedded, kernel_size=2)
        return embedded.flatten(2)  # (N, inter, M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        n, _, h, w = x.shape
        queries = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, inter)
        keys = self._keys(self.phi(x))  # (N, inter, M)
        values = self._keys(self.g(x)).transpose(1, 2)  # (N, M, inter)
        attention = torch.softmax(queries @ keys, dim=-1)  # (N, HW, M)
        context = (attention @ values).transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return x + self.w(context)


class VGGNonLocal(ImageClassifier):
    """VGG16 convolutions, one non-local block and a one-logit head.

    Parameters
    ----------
    config : VGGNonLocalConfig
        Input channels, width, batch norm, block position and dropout.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`VGGNonLocalConfig`.

    Notes
    -----
    Grad-CAM should hook :attr:`gradcam_layer`: the ReLU after the last convolution, i.e. the last
    conv stage's output at stride 16, before the final max-pool. ReLUs are not in-place so that
    forward and backward hooks on them see intact tensors.
    """

    def __init__(self, config: VGGNonLocalConfig) -> None:
        if not isinstance(config, VGGNonLocalConfig):
            raise TypeError(f"config must be a VGGNonLocalConfig, got {type(config).__name__}")
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.in_chans
        stage_channels = config.stage_channels()
        for stage_index, stage in enumerate(stage_channels, start=1):
            for out_channels in stage:
                layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(nn.ReLU())
                channels = out_channels
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            if stage_index == config.non_local_after_stage:
                self._non_local_after_index = len(layers) - 1
                non_local_channels = channels
        self.features = nn.Sequential(*layers)
        self.non_local = NonLocalBlock2d(
            non_local_channels, subsample=config.non_local_subsample
        )
        self.head_dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(channels, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    @property
    def gradcam_layer(self) -> nn.Module:
        """Module whose output (the last conv stage's activation) Grad-CAM should use."""
        return self.features[-2]

    @property
    def in_chans(self) -> int:
        """Input channels the network takes."""
        return self.config.in_chans

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == self._non_local_after_index:
                x = self.non_local(x)
        return x

    def logits(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        pooled = features.mean(dim=(-2, -1))
        return self.head(self.head_dropout(pooled))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Return the probability of osteoporosis (sigmoid of the logit), shape (N,).

        Parameters
        ----------
        x : torch.Tensor
            Images, shape (N, in_chans, H, W).

        Returns
        -------
        torch.Tensor
            Values in (0, 1). The caller chooses train/eval mode (eval disables dropout).
        """
        return torch.sigmoid(self.forward(x)).squeeze(1)


def vgg16_nonlocal(
    in_chans: int = 3, *, batch_norm: bool = False, dropout: float = 0.5
) -> VGGNonLocal:
    """Build the full-size hip network (VGG16 convolutions, non-local block after stage 4).

    Parameters
    ----------
    in_chans : int
        1 or 3 input channels.
    batch_norm : bool
        Add batch normalisation after every convolution (``vgg16_bn`` layout).
    dropout : float
        Dropout before the final linear layer.

    Returns
    -------
    VGGNonLocal
        Randomly initialised network; its 13 convolutions hold 14,714,688 parameters.
    """
    return VGGNonLocal(VGGNonLocalConfig(in_chans=in_chans, batch_norm=batch_norm, dropout=dropout))


def vgg16_nonlocal_demo(in_chans: int = 1, *, dropout: float = 0.5) -> VGGNonLocal:
    """Build the demo hip network: the same layout at a quarter of VGG16's widths (16 ... 128).

    Parameters
    ----------
    in_chans : int
        1 (default: demo weights are trained from scratch on one-channel phantoms) or 3.
    dropout : float
        Dropout before the final linear layer.

    Returns
    -------
    VGGNonLocal
        Randomly initialised network of about 0.95 M parameters.
    """
    return VGGNonLocal(VGGNonLocalConfig(in_chans=in_chans, width_multiplier=0.25, dropout=dropout))
