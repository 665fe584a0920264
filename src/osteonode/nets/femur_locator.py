"""Femur localiser: finds the hip crop box of each side of an AP pelvis / hip film.

METHODS.md section 3 crops the proximal femur of one side: top at the acetabular roof, bottom below
the lesser trochanter by about the trochanter's length, medial at the lateral margin of the
teardrop, lateral just beyond the vastus ridge. Jang et al. cropped by hand; this network finds the
box itself, for the femur on the image's left and the one on the image's right (which of them is
the patient's right is the pipeline's business: it depends on Patient Orientation).

The network sees the whole film, downscaled and z-normalised, and predicts at stride 8:

- per image side, a **centre map**: logits of a spatial softmax over the grid cells, one box
  centre per side (an AP pelvis film shows each femur at most once, so a softmax over positions
  fits better than per-cell detection with non-maximum suppression);
- per image side, the **distances** from each cell centre to the box's left, top, right and bottom
  edges (FCOS-style, Tian et al. ICCV 2019), in units of :data:`DISTANCE_UNIT` input pixels;
- per image side, the **state** logits of :class:`SideState` (femur evaluable, prosthesis, outside
  the field of view), from globally pooled features.

Two coordinate channels (CoordConv, Liu et al. 2018) are appended to the input inside the network,
so the fully convolutional maps can tell the image's left femur from its right one.

``forward`` returns one tensor (N, 16, h, w) so that the shared training loop can treat it like any
other output; the state logits are pooled values broadcast over the grid. :meth:`FemurLocator.decode`
turns it into boxes, states and confidences.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CHANNELS_PER_SIDE",
    "DISTANCE_UNIT",
    "IMAGE_SIDES",
    "STRIDE",
    "FemurLocator",
    "FemurLocatorConfig",
    "LocatedSides",
    "SideState",
    "femur_locator",
]


class SideState(enum.IntEnum):
    """What the localiser sees on one side of the film; the value is the logit index."""

    EVALUABLE = 0
    """A native proximal femur with its whole crop box on the film."""
    PROSTHESIS = 1
    """A hip prosthesis replaces the femoral head and neck."""
    OUTSIDE_FIELD = 2
    """The femur or its crop box is cut off by the field of view (or not on the film at all)."""


#: Image sides in output order: the femur on the image's left (smaller columns), then the right.
IMAGE_SIDES: tuple[str, str] = ("image_left", "image_right")
#: Output stride of the maps, in input pixels.
STRIDE = 8
#: Input pixels per unit of the distance outputs (keeps the regression targets near 1).
DISTANCE_UNIT = 32.0
#: Channels per image side: centre logit, four distances, the states' logits.
CHANNELS_PER_SIDE = 1 + 4 + len(SideState)
#: Cells around the centre cell whose boxes are averaged when decoding (and trained).
_NEIGHBOURHOOD = 1


@dataclass(frozen=True)
class FemurLocatorConfig:
    """Widths of :class:`FemurLocator`.

    Parameters
    ----------
    widths : tuple of int
        Channels of the five encoder stages, at strides 2, 4, 8, 16 and 32.
    head_width : int
        Channels of the decoder at stride 8 and of the prediction head.

    Raises
    ------
    ValueError
        If there are not five positive widths or the head width is not positive.
    """

    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    head_width: int = 32

    def __post_init__(self) -> None:
        if len(self.widths) != 5 or not all(isinstance(w, int) and w > 0 for w in self.widths):
            raise ValueError(f"widths must be five positive ints, got {self.widths!r}")
        if not isinstance(self.head_width, int) or self.head_width < 1:
            raise ValueError(f"head_width must be a positive int, got {self.head_width!r}")


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class LocatedSides:
    """Decoded localiser output for a batch.

    Attributes
    ----------
    boxes : torch.Tensor
        (N, 2, 4) boxes ``(column0, row0, column1, row1)`` in input pixel coordinates (pixel
        centres at integers), per image side in :data:`IMAGE_SIDES` order.
    state_probabilities : torch.Tensor
        (N, 2, 3) softmax over :class:`SideState` per image side.
    centre_confidence : torch.Tensor
        (N, 2) softmax mass of the centre map in the decoded neighbourhood: how sure the network
        is of where the box is.
    """

    boxes: torch.Tensor
    state_probabilities: torch.Tensor
    centre_confidence: torch.Tensor


class FemurLocator(nn.Module):
    """Small encoder-decoder that predicts both hips' crop boxes and states.

    Parameters
    ----------
    config : FemurLocatorConfig
        Channel widths.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`FemurLocatorConfig`.
    """

    def __init__(self, config: FemurLocatorConfig) -> None:
        if not isinstance(config, FemurLocatorConfig):
            raise TypeError(f"config must be a FemurLocatorConfig, got {type(config).__name__}")
        super().__init__()
        self.config = config
        w = config.widths
        # Input: the film plus two coordinate channels.
        self.stage1 = _conv(3, w[0], stride=2)
        self.stage2 = nn.Sequential(_conv(w[0], w[1], stride=2), _conv(w[1], w[1]))
        self.stage3 = nn.Sequential(_conv(w[1], w[2], stride=2), _conv(w[2], w[2]))
        self.stage4 = nn.Sequential(_conv(w[2], w[3], stride=2), _conv(w[3], w[3]))
        self.stage5 = nn.Sequential(_conv(w[3], w[4], stride=2), _conv(w[4], w[4]))
        self.lateral5 = nn.Conv2d(w[4], config.head_width, 1)
        self.lateral4 = nn.Conv2d(w[3], config.head_width, 1)
        self.lateral3 = nn.Conv2d(w[2], config.head_width, 1)
        self.refine = nn.Sequential(
            _conv(config.head_width + 2, config.head_width),
            _conv(config.head_width, config.head_width),
        )
        self.maps = nn.Conv2d(config.head_width, len(IMAGE_SIDES) * 5, 1)
        self.states = nn.Linear(2 * w[4], len(IMAGE_SIDES) * len(SideState))

    @staticmethod
    def _with_coordinates(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        rows = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        columns = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid_rows, grid_columns = torch.meshgrid(rows, columns, indexing="ij")
        coordinates = torch.stack([grid_columns, grid_rows]).expand(n, 2, h, w)
        return torch.cat([x, coordinates], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the packed prediction maps, shape (N, 2 * CHANNELS_PER_SIDE, H/8, W/8).

        Parameters
        ----------
        x : torch.Tensor
            Z-normalised films, shape (N, 1, H, W); H and W multiples of 32.

        Returns
        -------
        torch.Tensor
            Per image side: centre logit, four distances, the state logits (constant over the
            grid).

        Raises
        ------
        ValueError
            If ``x`` is not (N, 1, H, W) with H and W multiples of 32.
        """
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(
                f"expected (N, 1, H, W) with H, W multiples of 32, got {tuple(x.shape)}"
            )
        s1 = self.stage1(self._with_coordinates(x))
        s3 = self.stage3(self.stage2(s1))
        s4 = self.stage4(s3)
        s5 = self.stage5(s4)
        top = self.lateral5(s5)
        top = F.interpolate(top, size=s4.shape[-2:], mode="nearest") + self.lateral4(s4)
        top = F.interpolate(top, size=s3.shape[-2:], mode="nearest") + self.lateral3(s3)
        maps = self.maps(self.refine(self._with_coordinates(top)))
        pooled = torch.cat([s5.mean(dim=(-2, -1)), s5.amax(dim=(-2, -1))], dim=1)
        states = self.states(pooled)
        n, _, h, w = maps.shape
        per_side = []
        for side in range(len(IMAGE_SIDES)):
            side_states = states[:, side * len(SideState) : (side + 1) * len(SideState)]
            per_side.append(maps[:, side * 5 : (side + 1) * 5])
            per_side.append(side_states[:, :, None, None].expand(n, len(SideState), h, w))
        return torch.cat(per_side, dim=1)

    @staticmethod
    def split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unpack ``forward``'s output.

        Parameters
        ----------
        output : torch.Tensor
            (N, 2 * CHANNELS_PER_SIDE, h, w).

        Returns
        -------
        centre_logits : torch.Tensor
            (N, 2, h, w).
        distances : torch.Tensor
            (N, 2, 4, h, w) in :data:`DISTANCE_UNIT` input pixels (left, top, right, bottom).
        state_logits : torch.Tensor
            (N, 2, 3).
        """
        n, channels, h, w = output.shape
        if channels != len(IMAGE_SIDES) * CHANNELS_PER_SIDE:
            raise ValueError(
                f"expected {len(IMAGE_SIDES) * CHANNELS_PER_SIDE} channels, got {channels}"
            )
        sides = output.reshape(n, len(IMAGE_SIDES), CHANNELS_PER_SIDE, h, w)
        return sides[:, :, 0], sides[:, :, 1:5], sides[:, :, 5:, 0, 0]

    @staticmethod
    def cell_centres(
        h: int, w: int, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input-pixel coordinates (column, row) of the grid cells' centres, each (h, w)."""
        rows = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * STRIDE - 0.5
        columns = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * STRIDE - 0.5
        grid_rows, grid_columns = torch.meshgrid(rows, columns, indexing="ij")
        return grid_columns, grid_rows

    @classmethod
    def decode(cls, output: torch.Tensor) -> LocatedSides:
        """Boxes, state probabilities and centre confidence from ``forward``'s output.

        The box of a side is the average of the boxes predicted by the 3 x 3 cells around the
        centre map's peak, weighted by the centre softmax.

        Parameters
        ----------
        output : torch.Tensor
            (N, 2 * CHANNELS_PER_SIDE, h, w).

        Returns
        -------
        LocatedSides
        """
        centre_logits, distances, state_logits = cls.split(output.detach().float())
        n, sides, h, w = centre_logits.shape
        weights = torch.softmax(centre_logits.reshape(n, sides, h * w), dim=-1).reshape(
            n, sides, h, w
        )
        peak = weights.reshape(n, sides, h * w).argmax(dim=-1)
        peak_rows, peak_columns = peak // w, peak % w
        rows = torch.arange(h, device=output.device)[None, None, :, None]
        columns = torch.arange(w, device=output.device)[None, None, None, :]
        near = ((rows - peak_rows[..., None, None]).abs() <= _NEIGHBOURHOOD) & (
            (columns - peak_columns[..., None, None]).abs() <= _NEIGHBOURHOOD
        )
        local = weights * near
        mass = local.sum(dim=(-2, -1))
        local = local / mass.clamp_min(1e-12)[..., None, None]
        centre_columns, centre_rows = cls.cell_centres(h, w, output.device)
        scaled = distances * DISTANCE_UNIT
        edges = torch.stack(
            [
                centre_columns - scaled[:, :, 0],
                centre_rows - scaled[:, :, 1],
                centre_columns + scaled[:, :, 2],
                centre_rows + scaled[:, :, 3],
            ],
            dim=2,
        )
        boxes = (edges * local[:, :, None]).sum(dim=(-2, -1))
        return LocatedSides(
            boxes=boxes,
            state_probabilities=torch.softmax(state_logits, dim=-1),
            centre_confidence=mass,
        )


def femur_locator(
    widths: list[int] | tuple[int, ...] = (16, 24, 32, 48, 64), head_width: int = 32
) -> FemurLocator:
    """Build the femur localiser (about 0.2 M parameters with the default widths).

    Parameters
    ----------
    widths : sequence of int
        Channels of the five encoder stages (strides 2 to 32).
    head_width : int
        Channels of the decoder and head.

    Returns
    -------
    FemurLocator
        Randomly initialised network.
    """
    return FemurLocator(FemurLocatorConfig(widths=tuple(widths), head_width=head_width))
