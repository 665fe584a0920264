"""Measurements on phantom files shared by the phantom tests (written independently of the
generator: they read the DICOM files back with pydicom and draw the ground truth with Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw


def display_pixels(path: Path) -> np.ndarray:
    """Decoded pixels scaled to [0, 1] with bone bright, whatever the photometric interpretation."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float64)
    maximum = (1 << int(ds.BitsStored)) - 1
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = maximum - pixels
    return pixels / maximum


def polygon_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Boolean mask of a polygon given as (x, y) points."""
    image = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in np.asarray(points, float).tolist()], fill=1)
    return np.asarray(image, dtype=bool)


def box_and_sides(shape: tuple[int, int], corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask of a vertebral box and of two equal boxes beside it (one box width away, both sides)."""
    width_vector = corners[1] - corners[0]
    inside = polygon_mask(shape, corners)
    beside = polygon_mask(shape, corners - 1.1 * width_vector) | polygon_mask(
        shape, corners + 1.1 * width_vector
    )
    return inside, beside


def pearson(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> float:
    """Pearson correlation coefficient."""
    return float(np.corrcoef(np.asarray(x, float), np.asarray(y, float))[0, 1])
