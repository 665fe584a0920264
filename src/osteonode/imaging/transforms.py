"""The papers' preprocessing, as pure functions of a 2-D pixel array.

Coordinates follow one convention throughout: pixel ``(i, j)`` has its centre at
``(i, j)`` and covers ``[i - 0.5, i + 0.5) x [j - 0.5, j + 0.5)``; resizing maps the
outer edges of the source onto the outer edges of the target (the ``align_corners=False``
convention of torch and Pillow).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

#: Output range of :func:`grayscale_truncation`.
TRUNCATION_OUTPUT_MAX = 255.0


class ClassifierTransform(enum.StrEnum):
    """The papers' whole-film preprocessing, by the name a model card gives it.

    Each maps a film to a float32 image of the network's input size (see :func:`classifier_input`),
    before the card's per-channel mean and standard deviation are applied.
    """

    GRAYSCALE_TRUNCATION = "grayscale_truncation"
    """Park et al. 2025: clip to the central half's range, rescale, resize; in [0, 1]."""
    ZTRANSFORM_2SIGMA = "ztransform_2sigma"
    """Jang et al. 2021: resize, then (x - mean) / (2 sigma) clipped; in [-1, 1]."""


@dataclass(frozen=True)
class ScaleMap:
    """Maps coordinates between a source image and a resized copy of it.

    Parameters
    ----------
    source_shape : tuple of int
        (rows, columns) of the source.
    target_shape : tuple of int
        (rows, columns) of the resized image (the model input).
    """

    source_shape: tuple[int, int]
    target_shape: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("source_shape", "target_shape"):
            shape = getattr(self, name)
            if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
                raise ValueError(f"{name} must be two positive ints, got {shape}")

    @property
    def scale(self) -> tuple[float, float]:
        """Source pixels per target pixel, (row, column)."""
        return (
            self.source_shape[0] / self.target_shape[0],
            self.source_shape[1] / self.target_shape[1],
        )

    def to_source(self, points: ArrayLike) -> np.ndarray:
        """Map (row, column) points on the target to source pixel coordinates.

        Parameters
        ----------
        points : array_like
            Shape (..., 2), (row, column) in target pixel coordinates.

        Returns
        -------
        numpy.ndarray
            float64, same shape, in source pixel coordinates.
        """
        target = _as_points(points)
        return (target + 0.5) * np.asarray(self.scale) - 0.5

    def to_target(self, points: ArrayLike) -> np.ndarray:
        """Map (row, column) points on the source to target pixel coordinates.

        Parameters
        ----------
        points : array_like
            Shape (..., 2), (row, column) in source pixel coordinates.

        Returns
        -------
        numpy.ndarray
            float64, same shape, in target pixel coordinates.
        """
        source = _as_points(points)
        return (source + 0.5) / np.asarray(self.scale) - 0.5


def _as_points(points: ArrayLike) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim == 0 or array.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {array.shape}")
    return array


def _check_image(pixels: np.ndarray) -> np.ndarray:
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"pixels must be a numpy array, not {type(pixels).__name__}")
    if pixels.ndim != 2 or 0 in pixels.shape:
        raise ValueError(f"pixels must be a non-empty 2-D array, got shape {pixels.shape}")
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise TypeError(f"pixels must be integer or floating point, not {pixels.dtype}")
    return pixels


def _target_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ValueError(f"size must be a positive int or two positive ints, got {size!r}")
    return (shape[0], shape[1])


def resize_with_scale(
    pixels: np.ndarray, size: int | tuple[int, int]
) -> tuple[np.ndarray, ScaleMap]:
    """Resize with bilinear, anti-aliased resampling and return the coordinate map.

    Parameters
    ----------
    pixels : numpy.ndarray
        2-D image.
    size : int or tuple of int
        Target (rows, columns); an int gives a square.

    Returns
    -------
    resized : numpy.ndarray
        float32 array of the target shape.
    scale_map : ScaleMap
        Maps target coordinates to source pixel coordinates and back.

    Raises
    ------
    TypeError, ValueError
        For a non-2-D or non-numeric image or an invalid size.
    """
    image = _check_image(pixels)
    target = _target_shape(size)
    scale_map = ScaleMap(source_shape=(image.shape[0], image.shape[1]), target_shape=target)
    if target == scale_map.source_shape:
        return image.astype(np.float32, copy=True), scale_map
    # np.require copies read-only input (e.g. pixels of a decoded dataset): torch wants it writable.
    tensor = torch.from_numpy(np.require(image, np.float32, ["C", "W"]))[None, None]
    resized = F.interpolate(
        tensor, size=target, mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0, 0].numpy(), scale_map


def central_half_bounds(shape: tuple[int, int]) -> tuple[slice, slice]:
    """The pixels touching the central rectangle spanning half the height and width.

    The rectangle is ``[H/4, 3H/4] x [W/4, 3W/4]`` in edge coordinates (pixel ``i``
    spans ``[i, i + 1)``), so rows ``floor(H/4) .. ceil(3H/4) - 1`` are included.

    Parameters
    ----------
    shape : tuple of int
        (rows, columns).

    Returns
    -------
    tuple of slice
        Row and column slices.
    """
    rows, columns = shape
    return (
        slice(math.floor(rows / 4), math.ceil(3 * rows / 4)),
        slice(math.floor(columns / 4), math.ceil(3 * columns / 4)),
    )


def grayscale_truncation(pixels: np.ndarray, size: int = 512) -> np.ndarray:
    """The chest model's "grayscale truncation" (Park et al. 2025).

    The whole image is clipped to the minimum and maximum of its central rectangle
    spanning 50% of the height and width, rescaled linearly to 0-255 and resized to
    ``size x size``.  A flat centre gives an all-zero image.  The coordinate map of
    the resize is ``ScaleMap(pixels.shape, (size, size))``.

    Parameters
    ----------
    pixels : numpy.ndarray
        2-D image, bone bright.
    size : int
        Side of the square output.

    Returns
    -------
    numpy.ndarray
        float32 (size, size) in [0, 255].
    """
    image = _check_image(pixels).astype(np.float64)
    rows, columns = central_half_bounds(image.shape)
    centre = image[rows, columns]
    low, high = float(centre.min()), float(centre.max())
    if high > low:
        scaled = (np.clip(image, low, high) - low) * (TRUNCATION_OUTPUT_MAX / (high - low))
    else:
        scaled = np.zeros_like(image)
    resized, _ = resize_with_scale(scaled, size)
    return np.clip(resized, 0.0, TRUNCATION_OUTPUT_MAX)


def ztransform_2sigma(
    pixels: np.ndarray, jitter: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The hip model's two-sigma z-transform (Jang et al. 2021).

    ``z = (x - mean) / (2 * sigma + e)`` clipped to [-1, 1], where ``sigma`` is the
    population standard deviation and ``e`` is drawn uniformly from
    ``[-jitter * sigma, +jitter * sigma]`` (training only; 0 at inference).  A flat
    image gives all zeros.

    Parameters
    ----------
    pixels : numpy.ndarray
        2-D image (usually the femur crop).
    jitter : float
        Relative jitter epsilon of the divisor, in [0, 2).
    rng : numpy.random.Generator, optional
        Source of the jitter; a fresh default generator when omitted.

    Returns
    -------
    numpy.ndarray
        float32 array of the input's shape in [-1, 1].
    """
    image = _check_image(pixels).astype(np.float64)
    if not (isinstance(jitter, (int, float)) and 0.0 <= jitter < 2.0):
        raise ValueError(f"jitter must be a number in [0, 2), got {jitter!r}")
    mean = float(image.mean())
    sigma = float(image.std())
    if sigma == 0.0:
        return np.zeros(image.shape, dtype=np.float32)
    divisor = 2.0 * sigma
    if jitter > 0.0:
        generator = rng if rng is not None else np.random.default_rng()
        divisor += float(generator.uniform(-jitter * sigma, jitter * sigma))
    return np.clip((image - mean) / divisor, -1.0, 1.0).astype(np.float32)


def classifier_input(
    pixels: np.ndarray, transform: ClassifierTransform, size: tuple[int, int]
) -> np.ndarray:
    """A film as a classifier sees it, before per-channel normalisation.

    Parameters
    ----------
    pixels : numpy.ndarray
        2-D image, bone bright.
    transform : ClassifierTransform
        The preprocessing the model card names.
    size : tuple of int
        (rows, columns) of the network input.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``size``.

    Raises
    ------
    ValueError
        For an unknown transform, a non-square size for grayscale truncation, or a bad image.
    """
    transform = ClassifierTransform(transform)
    target = _target_shape(size)
    if transform is ClassifierTransform.GRAYSCALE_TRUNCATION:
        if target[0] != target[1]:
            raise ValueError(f"grayscale truncation makes a square input, got size {target}")
        truncated = grayscale_truncation(pixels, size=target[0])
        return (truncated / TRUNCATION_OUTPUT_MAX).astype(np.float32)
    resized, _ = resize_with_scale(pixels, target)
    return ztransform_2sigma(resized)
