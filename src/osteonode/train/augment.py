"""Image augmentations in torch for training batches: blur, sharpen, shear, small rotation.

Each function takes a batch of images (N, C, H, W), float, and returns a new batch of the same
shape, dtype and device; parameters are per sample (a scalar applies to every sample). They use
no random state of their own: :func:`random_choice_augment` draws the parameters from a numpy
generator, so a training run that seeds its generator repeats exactly.

:func:`random_choice_augment` is the hip paper's scheme (Jang et al. 2021, METHODS.md section 3):
every image is shown as the original, blurred, sharpened, sheared or slightly rotated version.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Augmentation",
    "AugmentationRanges",
    "affine",
    "gaussian_blur",
    "random_choice_augment",
    "sharpen",
]

#: Gaussian kernels reach this many sigmas each side (the tail beyond holds < 0.3% of the weight).
_KERNEL_SIGMAS = 3.0


def _check_batch(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, not {type(images).__name__}")
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
        )


def _per_sample(
    name: str, value: float | Sequence[float] | torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    values = torch.as_tensor(value, dtype=images.dtype, device=images.device).flatten()
    if values.numel() == 1:
        values = values.expand(images.shape[0])
    if values.numel() != images.shape[0]:
        raise ValueError(
            f"{name} needs one value or one per image ({images.shape[0]}), got {values.numel()}"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} must be finite")
    return values


def gaussian_blur(
    images: torch.Tensor, sigma: float | Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Blur each image with an isotropic Gaussian of its own ``sigma`` (pixels).

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) float batch.
    sigma : float or sequence of float
        Standard deviation in pixels, one value or one per image; 0 leaves an image unchanged.

    Returns
    -------
    torch.Tensor
        Blurred batch; borders are reflected.

    Raises
    ------
    TypeError, ValueError
        If ``images`` is not a float 4-D tensor or a sigma is negative or not finite.
    """
    _check_batch(images)
    sigmas = _per_sample("sigma", sigma, images)
    if bool((sigmas < 0).any()):
        raise ValueError("sigma must be >= 0")
    radius = math.ceil(_KERNEL_SIGMAS * float(sigmas.max())) if sigmas.numel() else 0
    radius = min(radius, (min(images.shape[-2:]) - 1))
    if radius == 0:
        return images.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    safe = sigmas.clamp_min(1e-6)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None, :] / safe) ** 2)
    # A zero sigma gives a delta kernel (only the centre tap survives the tiny width).
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    n, c, h, w = images.shape
    # Grouped convolution: one group per (image, channel) so each image gets its own kernel.
    per_channel = kernels.repeat_interleave(c, dim=0)
    flat = images.reshape(1, n * c, h, w)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    flat = F.conv2d(flat, per_channel[:, None, None, :], groups=n * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = F.conv2d(flat, per_channel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


def sharpen(
    images: torch.Tensor, amount: float | Sequence[float] | torch.Tensor, sigma: float = 1.0
) -> torch.Tensor:
    """Unsharp masking: ``x + amount * (x - blur(x, sigma))``.

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) float batch.
    amount : float or sequence of float
        Strength, one value or one per image; 0 leaves an image unchanged.
    sigma : float
        Width of the blur that defines the detail being amplified, in pixels (> 0).

    Returns
    -------
    torch.Tensor
        Sharpened batch (values may leave the input's range; clip if the model needs it).

    Raises
    ------
    TypeError, ValueError
        If ``images`` is not a float 4-D tensor, an amount is negative or sigma not positive.
    """
    _check_batch(images)
    amounts = _per_sample("amount", amount, images)
    if bool((amounts < 0).any()):
        raise ValueError("amount must be >= 0")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    detail = images - gaussian_blur(images, sigma)
    return images + amounts[:, None, None, None] * detail


def affine(
    images: torch.Tensor,
    *,
    rotation_deg: float | Sequence[float] | torch.Tensor = 0.0,
    shear_deg: float | Sequence[float] | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Rotate and shear each image about its centre (bilinear; the border is extended).

    The shear is horizontal: a row ``y`` pixels below the centre moves ``y * tan(shear)`` to the
    right. Rotation is anticlockwise as displayed for a positive angle.

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) float batch.
    rotation_deg, shear_deg : float or sequence of float
        Angles in degrees, one value or one per image; shear within (-90, 90).

    Returns
    -------
    torch.Tensor
        Transformed batch.

    Raises
    ------
    TypeError, ValueError
        If ``images`` is not a float 4-D tensor or an angle is out of range.
    """
    _check_batch(images)
    rotation = torch.deg2rad(_per_sample("rotation_deg", rotation_deg, images))
    shear_values = _per_sample("shear_deg", shear_deg, images)
    if bool((shear_values.abs() >= 90).any()):
        raise ValueError("shear_deg must lie within (-90, 90)")
    shear = torch.tan(torch.deg2rad(shear_values))
    n, _, h, w = images.shape
    # Work in pixel units so that rotation stays a rotation on a non-square image.
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    zeros, ones = torch.zeros_like(cos), torch.ones_like(cos)
    rotate = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_matrix = torch.stack([torch.stack([ones, shear], -1), torch.stack([zeros, ones], -1)], -2)
    forward = rotate @ shear_matrix
    inverse = torch.linalg.inv(forward)  # grid_sample maps output positions to input positions
    to_pixels = torch.diag(
        torch.tensor([w / 2.0, h / 2.0], dtype=images.dtype, device=images.device)
    )
    to_unit = torch.diag(torch.tensor([2.0 / w, 2.0 / h], dtype=images.dtype, device=images.device))
    theta = torch.cat(
        [
            to_unit @ inverse @ to_pixels,
            torch.zeros(n, 2, 1, dtype=images.dtype, device=images.device),
        ],
        dim=2,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Augmentation(enum.StrEnum):
    """The versions :func:`random_choice_augment` chooses between, as in Jang et al. 2021."""

    ORIGINAL = "original"
    BLUR = "blur"
    SHARPEN = "sharpen"
    SHEAR = "shear"
    ROTATION = "rotation"


@dataclass(frozen=True)
class AugmentationRanges:
    """Parameter ranges of :func:`random_choice_augment` (uniform draws).

    Parameters
    ----------
    blur_sigma : tuple of float
        Gaussian sigma in pixels.
    sharpen_amount : tuple of float
        Unsharp-mask strength.
    shear_deg : float
        Largest absolute shear angle.
    rotation_deg : float
        Largest absolute rotation ("small rotation").

    Raises
    ------
    ValueError
        If a range is reversed or negative, or an angle is 45 degrees or more.
    """

    blur_sigma: tuple[float, float] = (0.5, 1.5)
    sharpen_amount: tuple[float, float] = (0.5, 1.5)
    shear_deg: float = 10.0
    rotation_deg: float = 10.0

    def __post_init__(self) -> None:
        for name in ("blur_sigma", "sharpen_amount"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {(low, high)!r}")
        for name in ("shear_deg", "rotation_deg"):
            if not 0 <= getattr(self, name) < 45:
                raise ValueError(f"{name} must lie in [0, 45), got {getattr(self, name)!r}")


def random_choice_augment(
    images: torch.Tensor,
    rng: np.random.Generator,
    ranges: AugmentationRanges = AugmentationRanges(),
    choices: Sequence[Augmentation] = tuple(Augmentation),
) -> torch.Tensor:
    """Show each image as one version drawn uniformly from ``choices`` (the paper's scheme).

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) float batch.
    rng : numpy.random.Generator
        Source of the choices and their parameters.
    ranges : AugmentationRanges
        Parameter ranges.
    choices : sequence of Augmentation
        Versions to choose from; all five by default.

    Returns
    -------
    torch.Tensor
        The augmented batch (a new tensor; the input is not changed).

    Raises
    ------
    TypeError, ValueError
        If ``images`` is not a float 4-D tensor or ``choices`` is empty.
    """
    _check_batch(images)
    options = [Augmentation(choice) for choice in choices]
    if not options:
        raise ValueError("choices must not be empty")
    n = images.shape[0]
    picked = [options[i] for i in rng.integers(len(options), size=n)]
    blur_sigma = rng.uniform(*ranges.blur_sigma, size=n)
    amount = rng.uniform(*ranges.sharpen_amount, size=n)
    shear = rng.uniform(-ranges.shear_deg, ranges.shear_deg, size=n)
    rotation = rng.uniform(-ranges.rotation_deg, ranges.rotation_deg, size=n)
    out = images.clone()
    for kind, apply in (
        (Augmentation.BLUR, lambda x, k: gaussian_blur(x, blur_sigma[k])),
        (Augmentation.SHARPEN, lambda x, k: sharpen(x, amount[k])),
        (Augmentation.SHEAR, lambda x, k: affine(x, shear_deg=shear[k])),
        (Augmentation.ROTATION, lambda x, k: affine(x, rotation_deg=rotation[k])),
    ):
        chosen = np.flatnonzero([p is kind for p in picked])
        if chosen.size:
            index = torch.as_tensor(chosen, device=images.device)
            out[index] = apply(images[index], chosen)
    return out
