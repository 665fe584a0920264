"""Vectorised drawing primitives: the pixel grid, smooth outlines, polygon fill and blur.

Coordinates are pixels with x = column and y = row, origin at the top-left pixel centre. Shapes
are dense closed outlines (``(n, 2)`` float arrays) so that insetting them along their normals
gives a cortex of a given thickness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Grid:
    """A detector pixel grid.

    Parameters
    ----------
    rows, columns:
        Image size in pixels.
    spacing_mm:
        Pixel pitch at the detector (mm), the same in both directions.
    """

    rows: int
    columns: int
    spacing_mm: float

    def px(self, mm: float | np.ndarray) -> float | np.ndarray:
        """Convert a length in mm to pixels."""
        return mm / self.spacing_mm

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) of the image centre in pixels."""
        return (self.columns - 1) / 2, (self.rows - 1) / 2

    def coordinates_mm(self, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Open (x, y) grids in mm from the image centre, every ``step`` pixels."""
        cx, cy = self.centre
        x = (np.arange(0, self.columns, step, dtype=np.float32) - cx) * self.spacing_mm
        y = (np.arange(0, self.rows, step, dtype=np.float32) - cy) * self.spacing_mm
        return x[None, :], y[:, None]


def rotation(points: np.ndarray, angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """Rotate points (x, y) about a centre; positive angles turn clockwise on screen."""
    theta = np.deg2rad(angle_deg)
    c, s = np.cos(theta), np.sin(theta)
    shifted = np.asarray(points, dtype=np.float64) - centre
    return (
        np.stack([c * shifted[:, 0] - s * shifted[:, 1], s * shifted[:, 0] + c * shifted[:, 1]], 1)
        + centre
    )


def superellipse(
    centre: tuple[float, float],
    half_width: float,
    half_height: float,
    angle_deg: float = 0.0,
    exponent: float = 2.0,
    waist: float = 0.0,
    n: int = 96,
) -> np.ndarray:
    """Closed outline of a (rotated) superellipse, optionally waisted at the sides.

    ``exponent`` 2 gives an ellipse, larger values a rounded rectangle; ``waist`` pulls the left
    and right sides in by that fraction at mid-height (the concave flanks of a vertebral body).
    """
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = half_width * np.sign(c) * np.abs(c) ** (2 / exponent)
    y = half_height * np.sign(s) * np.abs(s) ** (2 / exponent)
    x = x * (1 - waist * (1 - np.abs(s) ** 2) * (np.abs(c) > 0.3))
    pts = np.stack([x + centre[0], y + centre[1]], 1)
    return rotation(pts, angle_deg, centre) if angle_deg else pts


def band(path: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Closed outline of a band of given width (scalar or per point) around an open path."""
    path = np.asarray(path, dtype=np.float64)
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    half = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(path),))[:, None] / 2
    return np.concatenate([path + normal * half, (path - normal * half)[::-1]])


def inset(outline: np.ndarray, distance: float) -> np.ndarray:
    """Move every vertex of a closed outline inward by ``distance`` along its normal."""
    outline = np.asarray(outline, dtype=np.float64)
    tangent = np.roll(outline, -1, axis=0) - np.roll(outline, 1, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], 1)
    # The shoelace sign tells which side of the outline is inside.
    area = 0.5 * np.sum(
        outline[:, 0] * np.roll(outline[:, 1], -1) - np.roll(outline[:, 0], -1) * outline[:, 1]
    )
    return outline - np.sign(area) * normal * distance


def fill_polygons(
    shape: tuple[int, int],
    polygons: list[tuple[np.ndarray, float]],
    origin: tuple[int, int] = (0, 0),
    mode: str = "F",
) -> np.ndarray:
    """Rasterise (outline, value) pairs into an array, later polygons painting over earlier ones.

    Parameters
    ----------
    shape:
        (rows, columns) of the output window.
    polygons:
        Outlines in image pixel coordinates with the value to fill them with.
    origin:
        (x, y) of the window's top-left pixel in image coordinates.
    mode:
        Pillow mode, ``"F"`` for float values or ``"I"`` for integer labels.
    """
    image = Image.new(mode, (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(image)
    for outline, value in polygons:
        points = np.asarray(outline, dtype=np.float64) - origin
        draw.polygon([tuple(p) for p in points.tolist()], fill=value)
    return np.array(image, dtype=np.float32 if mode == "F" else np.int32)


def fill_mask(
    shape: tuple[int, int], outline: np.ndarray, origin: tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Boolean mask of one outline in a window whose top-left pixel is ``origin`` (x, y)."""
    image = Image.new("L", (shape[1], shape[0]), 0)
    points = np.asarray(outline, dtype=np.float64) - origin
    ImageDraw.Draw(image).polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(image, dtype=bool)


def resize(array: np.ndarray, rows: int, columns: int, smooth: bool = True) -> np.ndarray:
    """Resample a float array to (rows, columns) with bicubic or bilinear interpolation."""
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    method = Image.Resampling.BICUBIC if smooth else Image.Resampling.BILINEAR
    return np.array(image.resize((columns, rows), method), dtype=np.float32)


def _blur_rows(array: np.ndarray, sigma: float) -> np.ndarray:
    """Blur along axis 0, where shifted views are whole contiguous rows."""
    radius = max(1, int(np.ceil(2.5 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(array, [(radius, radius), (0, 0)], mode="edge")
    length = array.shape[0]
    out = padded[:length] * np.float32(kernel[0])
    for k in range(1, len(kernel)):
        out += np.float32(kernel[k]) * padded[k : k + length]
    return out


def gaussian_blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D float array (edge padded).

    Small kernels run as separable shifted sums; wide ones on a reduced copy, then resampled back,
    which keeps the cost independent of ``sigma``.
    """
    array = np.asarray(array, dtype=np.float32)
    if sigma < 0.3:
        return array
    if sigma <= 4.0:
        across = np.ascontiguousarray(_blur_rows(array, sigma).T)
        return np.ascontiguousarray(_blur_rows(across, sigma).T)
    factor = int(sigma // 2)
    rows, columns = array.shape
    small_rows, small_columns = max(2, rows // factor), max(2, columns // factor)
    small = resize(array, small_rows, small_columns, smooth=False)
    small = gaussian_blur(small, sigma * small_rows / rows)
    return resize(small, rows, columns, smooth=False)


def smooth_noise(
    rng: np.random.Generator, rows: int, columns: int, scale_rows: float, scale_columns: float
) -> np.ndarray:
    """Zero-mean, unit-variance band-limited noise with correlation lengths in pixels per axis."""
    small_rows = int(np.clip(round(rows / max(scale_rows, 1.0)), 2, rows))
    small_columns = int(np.clip(round(columns / max(scale_columns, 1.0)), 2, columns))
    field = resize(
        rng.standard_normal((small_rows, small_columns), dtype=np.float32), rows, columns
    )
    sample = field[::7, ::7]
    field -= sample.mean()
    field *= 1.0 / (sample.std() + 1e-6)
    return field


def smooth_closed(points: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Smooth closed outline through control points by Chaikin corner cutting."""
    outline = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        following = np.roll(outline, -1, axis=0)
        outline = np.stack(
            [0.75 * outline + 0.25 * following, 0.25 * outline + 0.75 * following], 1
        )
        outline = outline.reshape(-1, 2)
    return outline


def smooth_open(points: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Smooth open path through control points (end points kept) by Chaikin corner cutting."""
    path = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        cut = np.stack([0.75 * path[:-1] + 0.25 * path[1:], 0.25 * path[:-1] + 0.75 * path[1:]], 1)
        path = np.concatenate([path[:1], cut.reshape(-1, 2), path[-1:]])
    return path
