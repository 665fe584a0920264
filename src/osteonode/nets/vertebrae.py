"""Networks of the lumbar pipeline: a vertebra corner detector and a small crop network.

METHODS.md section 1: the estimator first finds the vertebrae T12-L5 on a frontal lumbar film, then
regresses areal BMD from each of L1-L4. Two modules do this here:

- :class:`VertebraKeypointNet`, a compact U-Net (Ronneberger et al. 2015) that sees a downscaled
  copy of the whole film and returns heat-maps at half the input resolution; the lumbar pipeline
  uses five: vertebral body centres and the four corner types (top-left, top-right,
  bottom-right, bottom-left). A heat-map peak is a point's confidence; a point off the film or
  hidden has no peak. The coarse positions are refined on crops.
- :class:`VertebraCropNet`, a small CNN on a 64 x 64 crop aligned to one vertebral body: the BMD
  regressor, returning g/cm2 through a fixed affine output map so the module's output is the
  estimate itself. Its :attr:`VertebraCropNet.gradcam_layer` is the last convolution's activation.

Plain torch; batch normalisation everywhere; ReLUs are not in-place so Grad-CAM hooks see intact
tensors.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "CORNERS_PER_BODY",
    "CROP_SIZE",
    "VertebraCropNet",
    "VertebraKeypointNet",
    "vertebra_crop_net",
    "vertebra_keypoint_net",
]

#: Corners per vertebral body: top-left, top-right, bottom-right, bottom-left (as seen on the film).
CORNERS_PER_BODY = 4
#: Side of the square crop the crop networks see (pixels).
CROP_SIZE = 64


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3 x 3 convolutions with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def _check_widths(widths: tuple[int, ...] | list[int], minimum: int) -> tuple[int, ...]:
    widths = tuple(widths)
    if len(widths) < minimum or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(f"widths must be at least {minimum} positive ints, got {widths!r}")
    return widths


class VertebraKeypointNet(nn.Module):
    """Compact U-Net returning corner heat-map logits at half the input resolution.

    The stem halves the resolution at once (a full-resolution stage costs most and adds little at
    this scale); each further stage halves it again; the decoder climbs back to the stem's
    resolution with skip connections.

    Parameters
    ----------
    keypoints : int
        Heat-maps returned (5 for the lumbar pipeline: body centres and four corner types).
    widths : sequence of int
        Channels at the stem and at each deeper stage (strides 2, 4, 8, ...).
    in_chans : int
        Input channels (1 for a radiograph).

    Raises
    ------
    ValueError
        For a non-positive keypoint count or invalid widths.
    """

    def __init__(
        self,
        keypoints: int = 5,
        widths: tuple[int, ...] | list[int] = (16, 32, 48, 64),
        in_chans: int = 1,
    ) -> None:
        if keypoints < 1 or in_chans < 1:
            raise ValueError("keypoints and in_chans must be positive")
        widths = _check_widths(widths, 2)
        super().__init__()
        self.stride = 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
            _conv_block(widths[0], widths[0]),
        )
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _conv_block(widths[i], widths[i + 1]))
            for i in range(len(widths) - 1)
        )
        self.up = nn.ModuleList(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False) for _ in widths[1:]
        )
        self.merge = nn.ModuleList(
            _conv_block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1)
        )
        self.head = nn.Conv2d(widths[0], keypoints, 1)
        # Peaks cover a tiny share of each heat-map: start near that prior (sigmoid(-4) ~ 0.02)
        # rather than at 0.5, so early training localises instead of lowering the background.
        nn.init.constant_(self.head.bias, -4.0)

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this."""
        return self.stride * 2 ** len(self.down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heat-map logits, shape (N, keypoints, H / 2, W / 2).

        Raises
        ------
        ValueError
            When the input sides are not multiples of :attr:`divisor`.
        """
        if x.ndim != 4 or x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise ValueError(f"input must be (N, C, H, W) with H and W multiples of {self.divisor}")
        features = [self.stem(x)]
        for stage in self.down:
            features.append(stage(features[-1]))
        y = features.pop()
        for level in range(len(features) - 1, -1, -1):
            y = self.merge[level](torch.cat([self.up[level](y), features[level]], dim=1))
        return self.head(y)


class VertebraCropNet(nn.Module):
    """Small CNN on a square crop aligned to one vertebral body.

    Parameters
    ----------
    outputs : int
        Number of outputs (1 for the BMD regressor).
    widths : sequence of int
        Channels of the convolution stages; each stage but the last ends in a 2 x 2 max-pool.
    hidden : int
        Width of the fully connected layer.
    output_offset, output_scale : float
        Fixed output map ``y = offset + scale * raw``: the regressor's raw output is a standardised
        BMD, the module returns g/cm2.
    in_chans : int
        Input channels.
    crop_size : int
        Side of the input crop.

    Raises
    ------
    ValueError
        For non-positive sizes or a crop that the pooling does not divide.
    """

    def __init__(
        self,
        outputs: int = 1,
        widths: tuple[int, ...] | list[int] = (16, 32, 48, 64),
        hidden: int = 128,
        output_offset: float = 0.0,
        output_scale: float = 1.0,
        in_chans: int = 1,
        crop_size: int = CROP_SIZE,
    ) -> None:
        widths = _check_widths(widths, 1)
        if outputs < 1 or hidden < 1 or in_chans < 1 or output_scale <= 0:
            raise ValueError("outputs, hidden, in_chans and output_scale must be positive")
        reduction = 2 ** (len(widths) - 1)
        if crop_size % reduction:
            raise ValueError(f"crop_size {crop_size} is not a multiple of {reduction}")
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for index, width in enumerate(widths):
            if index:
                layers.append(nn.MaxPool2d(2))
            layers.append(_conv_block(channels, width))
            channels = width
        self.features = nn.Sequential(*layers)
        side = crop_size // reduction
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, outputs),
        )
        self.crop_size = crop_size
        self.output_offset = float(output_offset)
        self.output_scale = float(output_scale)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last convolution stage's output (ReLU), for Grad-CAM."""
        return self.features[-1][-1]

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Output before the fixed affine map (what training losses compare)."""
        if x.ndim != 4 or x.shape[-2:] != (self.crop_size, self.crop_size):
            raise ValueError(
                f"input must be (N, C, {self.crop_size}, {self.crop_size}), got {tuple(x.shape)}"
            )
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs in their physical unit, shape (N, outputs)."""
        return self.output_offset + self.output_scale * self.raw(x)


def vertebra_keypoint_net(
    keypoints: int = 5, widths: tuple[int, ...] | list[int] = (16, 32, 48, 64), in_chans: int = 1
) -> VertebraKeypointNet:
    """Build the corner detector (see :class:`VertebraKeypointNet`)."""
    return VertebraKeypointNet(keypoints=keypoints, widths=widths, in_chans=in_chans)


def vertebra_crop_net(
    outputs: int = 1,
    widths: tuple[int, ...] | list[int] = (16, 32, 48, 64),
    hidden: int = 128,
    output_offset: float = 0.0,
    output_scale: float = 1.0,
    in_chans: int = 1,
    crop_size: int = CROP_SIZE,
) -> VertebraCropNet:
    """Build a crop network (the BMD regressor with ``outputs=1``)."""
    return VertebraCropNet(
        outputs=outputs,
        widths=widths,
        hidden=hidden,
        output_offset=output_offset,
        output_scale=output_scale,
        in_chans=in_chans,
        crop_size=crop_size,
    )
