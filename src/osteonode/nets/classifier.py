"""What every screening classifier network is: images in, logits out, and the layer Grad-CAM reads."""

from __future__ import annotations

import abc

import torch
from torch import nn

__all__ = ["ImageClassifier", "check_classifier_options", "check_stage_layout"]


class ImageClassifier(nn.Module, abc.ABC):
    """Base of the classifier networks (ConvNeXt, ResNet, DarkNet, VGG16 non-local).

    A subclass builds its layers and gives :attr:`in_chans`, :attr:`gradcam_layer`,
    :meth:`feature_map` (images to the last feature map) and :meth:`logits` (feature map to logits);
    the input check and the order of the two steps live here once.
    """

    @property
    @abc.abstractmethod
    def in_chans(self) -> int:
        """Input channels the network takes."""

    @property
    @abc.abstractmethod
    def gradcam_layer(self) -> nn.Module:
        """The module whose output (the last stride-32 feature map) Grad-CAM should use."""

    @abc.abstractmethod
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map of checked images (N, in_chans, H, W)."""

    @abc.abstractmethod
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits, (N, outputs), from the last feature map."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last feature map, shape (N, C, H/32, W/32).

        Parameters
        ----------
        x : torch.Tensor
            Images, shape (N, in_chans, H, W).

        Returns
        -------
        torch.Tensor
            Feature map before pooling.

        Raises
        ------
        ValueError
            If ``x`` is not a 4-D tensor with ``in_chans`` channels.
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected input of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        return self.feature_map(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits, shape (N, outputs).

        Parameters
        ----------
        x : torch.Tensor
            Images, shape (N, in_chans, H, W); H and W should be multiples of 32.

        Returns
        -------
        torch.Tensor
            Unnormalised scores: one per class, or the positive answer's alone (a network trained
            with binary cross-entropy).
        """
        return self.logits(self.forward_features(x))


def check_classifier_options(in_chans: object, num_classes: object) -> None:
    """Raise ValueError unless ``in_chans`` is 1 or 3 and ``num_classes`` a positive integer."""
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


def check_stage_layout(depths: tuple[int, ...], widths: tuple[int, ...]) -> None:
    """Raise ValueError unless each stage has a positive integer depth and width."""
    if len(depths) == 0 or len(depths) != len(widths):
        raise ValueError(
            f"depths and widths must be non-empty and of equal length, got {depths!r} "
            f"and {widths!r}"
        )
    if any(not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f"every depth must be a positive integer, got {depths!r}")
    if any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"every width must be a positive integer, got {widths!r}")
