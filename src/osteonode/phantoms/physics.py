"""Image formation: bone areal density maps and the X-ray detector chain.

The projection is modelled in the log-attenuation domain,
``A = mu_soft * soft_tissue_cm + mu_bone * bone_g_per_cm2 + mu_metal * metal_mm``; the detector sees
``exp(-A)`` plus scatter, with quantum noise whose variance follows the photon count, and
"For Presentation" processing (log, auto-ranging, large-scale equalisation, a gamma curve) turns
that into a display image in [0, 1] with bone bright.

Bone density acts in two ways. The mean areal density of each bone equals its BMD, so attenuation
and bone-to-soft-tissue contrast grow with BMD; and its inner pattern follows BMD: lower density
thins the cortex, coarsens the trabecular spacing and thins and drops struts (horizontal ones
first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from osteonode.phantoms.raster import (
    Grid,
    fill_mask,
    fill_polygons,
    gaussian_blur,
    inset,
    smooth_noise,
)

#: Effective attenuation of soft tissue (1/cm) at a mid-range radiographic beam.
MU_SOFT_PER_CM = 0.20
#: Effective mass attenuation of bone mineral (cm2/g).
MU_BONE_CM2_PER_G = 0.45
#: Effective attenuation of implant metal (1/mm).
MU_METAL_PER_MM = 0.45
#: Relative areal density of the projected cortical shell against the trabecular interior.
_CORTEX_WEIGHT = 2.2


@dataclass(frozen=True)
class Bone:
    """One bone outline to paint into a density map.

    Parameters
    ----------
    outline:
        Closed outline in pixels.
    bmd:
        Mean areal density over the outline (g/cm2).
    quality:
        Density relative to the young-adult reference at that site (1.0 = reference mean); drives
        cortex thickness and trabecular pattern.
    cortex_px:
        Cortex thickness at reference quality (pixels).
    interior:
        Density of the interior relative to trabecular bone (low for a medullary canal).
    """

    outline: np.ndarray
    bmd: float
    quality: float
    cortex_px: float
    interior: float = 1.0


@dataclass
class Texture:
    """Trabecular texture fields for one image: vertical and horizontal strut families, and a
    coarse field for the patchy marrow spaces of osteoporotic bone (visible at low resolution)."""

    vertical: np.ndarray
    horizontal: np.ndarray
    coarse: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, grid: Grid, quality: float) -> Texture:
        """Texture whose spacing coarsens as skeletal quality falls."""
        spacing_px = grid.px(0.9 / np.clip(quality, 0.4, 1.5) ** 0.6)
        return cls(
            vertical=smooth_noise(rng, grid.rows, grid.columns, 2.2 * spacing_px, spacing_px),
            horizontal=smooth_noise(rng, grid.rows, grid.columns, spacing_px, 2.2 * spacing_px),
            coarse=smooth_noise(rng, grid.rows, grid.columns, grid.px(3.5), grid.px(3.5)),
        )


def paint_bones(density: np.ndarray, bones: list[Bone], texture: Texture) -> None:
    """Add non-overlapping bones to a density map (g/cm2) in place.

    Each bone's mean over its visible outline is exactly its ``bmd``; overlapping sets of bones
    are painted with separate calls so that their densities add up.
    """
    for bone in bones:
        _paint_bone(density, bone, texture)


def _paint_bone(density: np.ndarray, bone: Bone, texture: Texture) -> None:
    rows, columns = density.shape
    x0 = int(np.clip(np.floor(bone.outline[:, 0].min()) - 1, 0, columns))
    y0 = int(np.clip(np.floor(bone.outline[:, 1].min()) - 1, 0, rows))
    x1 = int(np.clip(np.ceil(bone.outline[:, 0].max()) + 2, 0, columns))
    y1 = int(np.clip(np.ceil(bone.outline[:, 1].max()) + 2, 0, rows))
    if x1 <= x0 or y1 <= y0:
        return
    shape = (y1 - y0, x1 - x0)
    quality = float(np.clip(bone.quality, 0.3, 1.5))
    outer = fill_mask(shape, bone.outline, (x0, y0))
    if not outer.any():
        return
    cortex = bone.cortex_px * quality**1.3
    inner = fill_mask(shape, inset(bone.outline, cortex), (x0, y0)) & outer
    window = (slice(y0, y1), slice(x0, x1))
    # Trabeculae: thin ridges along zero crossings of the two texture fields; low density thins
    # them and drops the horizontal family first.
    width = 0.25 + 0.35 * quality
    horizontal_weight = min(max(1.6 * quality - 0.6, 0.0), 1.0)
    vertical = np.clip(1.0 - np.abs(texture.vertical[window][inner]) / width, 0.0, 1.0)
    horizontal = np.clip(1.0 - np.abs(texture.horizontal[window][inner]) / width, 0.0, 1.0)
    struts = np.maximum(vertical, horizontal_weight * horizontal)
    # Low density also shows as patchy loss over a few mm, not only as thinner struts.
    patchiness = min(max(0.6 * (1.1 - quality), 0.0), 0.45)
    patches = np.clip(1.0 + patchiness * texture.coarse[window][inner], 0.0, None)
    raw = np.zeros(shape, np.float32)
    raw[outer] = _CORTEX_WEIGHT
    raw[inner] = bone.interior * (0.25 + 0.75 * struts) * patches
    mean = float(raw[outer].mean())
    if mean > 0:
        density[window] += raw * np.float32(bone.bmd / mean)


@dataclass
class Scene:
    """Everything the detector sees, on the image grid.

    Attributes
    ----------
    grid:
        The pixel grid.
    soft_tissue_cm:
        Water-equivalent soft tissue path (cm).
    bone:
        Bone mineral areal density (g/cm2).
    metal_mm:
        Metal path (mm).
    field:
        1 inside the collimated field, 0 outside.
    """

    grid: Grid
    soft_tissue_cm: np.ndarray
    bone: np.ndarray
    metal_mm: np.ndarray
    field: np.ndarray = field(default_factory=lambda: np.ones((1, 1), np.float32))


@dataclass(frozen=True)
class Exposure:
    """Per-image acquisition and processing nuisance parameters."""

    bone_contrast: float
    photons_per_mm2: float
    scatter_fraction: float
    blur_mm: float
    latitude: float
    level: float
    equalisation: float
    gamma: float
    black_level: float
    white_level: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Exposure:
        """Draw exposure, kVp-like contrast, scatter, blur and processing settings."""
        return cls(
            bone_contrast=float(rng.uniform(0.9, 1.1)),
            photons_per_mm2=float(rng.uniform(1.5e5, 8e5)),
            scatter_fraction=float(rng.uniform(0.1, 0.4)),
            blur_mm=float(rng.uniform(0.08, 0.3)),
            latitude=float(rng.uniform(5.0, 6.0)),
            level=float(rng.uniform(0.4, 0.6)),
            equalisation=float(rng.uniform(0.0, 0.5)),
            gamma=float(rng.uniform(0.8, 1.25)),
            black_level=float(rng.uniform(0.0, 0.08)),
            white_level=float(rng.uniform(0.9, 1.0)),
        )


def collimation_field(rng: np.random.Generator, grid: Grid, max_margin: float = 0.07) -> np.ndarray:
    """A slightly rotated rectangular field with random margins (1 inside, 0 outside)."""
    margins = rng.uniform(0.0, max_margin, 4) * np.array([grid.columns, grid.rows] * 2)
    corners = np.array(
        [
            [margins[0], margins[1]],
            [grid.columns - margins[2], margins[1]],
            [grid.columns - margins[2], grid.rows - margins[3]],
            [margins[0], grid.rows - margins[3]],
        ]
    )
    angle = np.deg2rad(rng.uniform(-1.5, 1.5))
    centre = corners.mean(0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = (corners - centre) @ rot.T + centre
    return fill_polygons((grid.rows, grid.columns), [(corners, 1.0)])


def render(scene: Scene, exposure: Exposure, rng: np.random.Generator) -> np.ndarray:
    """Project a scene through the detector chain.

    Returns
    -------
    numpy.ndarray
        float32 display image in [0, 1], bone bright (MONOCHROME2 sense).
    """
    grid = scene.grid
    attenuation = (
        MU_SOFT_PER_CM * scene.soft_tissue_cm
        + MU_BONE_CM2_PER_G * exposure.bone_contrast * scene.bone
        + MU_METAL_PER_MM * scene.metal_mm
    )
    primary = np.exp(-attenuation, dtype=np.float32)
    primary *= scene.field
    signal = primary + exposure.scatter_fraction * gaussian_blur(primary, grid.px(40.0)) + 1e-4
    photons = exposure.photons_per_mm2 * grid.spacing_mm**2
    noise = rng.standard_normal(signal.shape, dtype=np.float32)
    noise *= np.sqrt(signal / photons)
    signal += noise
    log_signal = -np.log(np.maximum(signal, 1e-5))
    # One blur for focal spot, scintillator and the display pipeline; it also softens the noise.
    log_signal = gaussian_blur(log_signal, float(np.hypot(grid.px(exposure.blur_mm), 0.6)))

    # Exposure recognition: centre the body's median signal at ``level`` over a fixed latitude
    # (in log units), as CR/DR readers do in fixed-latitude mode.
    sample = log_signal[::4, ::4][np.broadcast_to(scene.field, signal.shape)[::4, ::4] > 0.5]
    sample = sample[sample > 0.5]
    centre = float(np.median(sample)) if sample.size else 0.0
    image = exposure.level + (log_signal - centre) / exposure.latitude
    if exposure.equalisation > 0:
        background = gaussian_blur(image, grid.px(25.0))
        image = image - exposure.equalisation * (background - float(np.mean(background)))
    image = np.clip(image, 0.0, 1.0) ** exposure.gamma
    image = exposure.black_level + (exposure.white_level - exposure.black_level) * image
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def burn_annotations(
    image: np.ndarray,
    rng: np.random.Generator,
    marker: str,
    marker_at_left: bool,
    text_lines: list[str],
) -> None:
    """Burn a lead side marker and corner text into a display image in place (bright pixels)."""
    rows, columns = image.shape
    mask = Image.new("L", (columns, rows), 0)
    draw = ImageDraw.Draw(mask)
    marker_font = ImageFont.load_default(size=max(8, rows // 25))
    mx = int(columns * rng.uniform(0.06, 0.14))
    if not marker_at_left:
        mx = columns - mx - rows // 25
    draw.text((mx, int(rows * rng.uniform(0.08, 0.2))), marker, fill=255, font=marker_font)
    if text_lines:
        text_font = ImageFont.load_default(size=max(6, rows // 60))
        line_height = max(7, rows // 50)
        x = int(columns * 0.02)
        y = rows - line_height * (len(text_lines) + 1) if rng.random() < 0.5 else int(rows * 0.02)
        for k, line in enumerate(text_lines):
            draw.text((x, y + k * line_height), line, fill=255, font=text_font)
    ink = np.asarray(mask, dtype=np.float32) / 255.0
    np.maximum(image, 0.97 * ink, out=image)
