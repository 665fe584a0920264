"""PA chest phantom: ribs, clavicles, scapulae, humeral heads, thoracic spine, lungs, heart and
diaphragm shadows.

Layout in mm at the detector, x to the image right (the patient's left on a PA film), y down,
origin at the image centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteonode.bone import Sex
from osteonode.phantoms.demographics import LUMBAR_REFERENCE, Patient
from osteonode.phantoms.enum import HardCase
from osteonode.phantoms.physics import Bone, Scene, Texture, collimation_field, paint_bones
from osteonode.phantoms.raster import (
    Grid,
    band,
    fill_polygons,
    gaussian_blur,
    resize,
    smooth_closed,
    smooth_open,
    superellipse,
)

#: The chest skeleton follows bone quality more steeply than a real one (quality to this power).
#: With the quality itself, the difference between the WHO classes on a chest phantom is a few
#: percent of bone brightness under +-25 % body depth and +-10 % exposure: the paper's network
#: learns such a signal from ImageNet weights and thousands of films, but the small demo ConvNeXt
#: trained from scratch on a CPU does not. A phantom assumption for the demonstration, stated in
#: the chest demo model card; lumbar and hip phantoms draw with the quality itself.
CHEST_QUALITY_EXPONENT = 6.0
_RIB_DENSITY = 0.45  # areal density of a young adult's rib (g/cm2), a phantom assumption


@dataclass(frozen=True)
class ChestGeometry:
    """Ground truth geometry of a chest phantom.

    Attributes
    ----------
    lung_box:
        (x0, y0, x1, y1) in source pixels around both lungs.
    evaluable:
        False for a cropped film or severe scoliosis.
    """

    lung_box: tuple[float, float, float, float]
    evaluable: bool


def _lung_outline(s: float, dome: float) -> np.ndarray:
    """Control outline of one lung (mm from the mediastinal centre); ``s`` is -1 image left."""
    points = np.array(
        [
            [22, -120],
            [50, -160],
            [95, -150],
            [135, -95],
            [150, -10],
            [152, 75],
            [140, 105],
            [105, dome + 20],
            [60, dome],
            [25, dome + 25],
            [20, 0],
        ],
        dtype=float,
    )
    return smooth_closed(points * (s, 1.0), 3)


def draw_chest(
    rng: np.random.Generator, patient: Patient, grid: Grid, hard_case: HardCase
) -> tuple[Scene, ChestGeometry]:
    """Draw a PA chest phantom.

    Parameters
    ----------
    rng:
        The image's random generator.
    patient:
        Ground truth; the skeleton is drawn at the patient's overall density.
    grid:
        Pixel grid of the image.
    hard_case:
        ``SCOLIOSIS`` curves the thoracic spine, ``CROPPED`` cuts the lung apices or bases off.

    Returns
    -------
    tuple[Scene, ChestGeometry]
    """
    size = rng.uniform(0.9, 1.08) * (1.07 if patient.sex is Sex.MALE else 1.0)
    quality = patient.skeletal_quality**CHEST_QUALITY_EXPONENT
    shift = np.array([rng.uniform(-15, 15), rng.uniform(-20, 20)])
    if hard_case is HardCase.CROPPED:
        edge = grid.rows * grid.spacing_mm / 2
        shift[1] = (edge - 60.0) * (1 if rng.random() < 0.5 else -1)
    cx, cy = grid.centre

    def to_px(points_mm: np.ndarray) -> np.ndarray:
        return (np.asarray(points_mm, dtype=float) * size + shift) / grid.spacing_mm + (cx, cy)

    amplitude = rng.uniform(18, 35) if hard_case is HardCase.SCOLIOSIS else rng.uniform(0, 4)
    phase = rng.uniform(0, 2 * np.pi)

    def spine_x(y: np.ndarray | float) -> np.ndarray | float:
        return amplitude * np.sin(2 * np.pi * (np.asarray(y) + 200) / 330 + phase)

    rib_bmd = _RIB_DENSITY * quality
    spine_bmd = 0.9 * LUMBAR_REFERENCE[0] * quality
    vertebrae, posterior_ribs, anterior_ribs, girdle, arms = [], [], [], [], []
    for k in range(12):
        y = -175 + k * 25.0
        slope = np.gradient(spine_x(np.array([y - 1, y, y + 1])))[1]
        vertebrae.append(
            Bone(
                superellipse(
                    tuple(to_px([spine_x(y), y])),
                    grid.px(size * (14 + k)),
                    grid.px(size * 9.5),
                    -np.rad2deg(np.arctan(slope)),
                    4.0,
                ),
                spine_bmd,
                quality,
                grid.px(0.8),
            )
        )
    for k in range(10):
        y = -150 + k * 24.0
        reach = 95 + 6 * min(k, 6)
        for s in (-1.0, 1.0):
            origin = np.array([spine_x(y) + s * 18, y])
            posterior = smooth_open(
                origin + np.array([[0, 0], [s * 45, -14], [s * reach, 5], [s * (reach + 35), 55]]),
                3,
            )
            posterior_ribs.append(
                Bone(band(to_px(posterior), grid.px(11.0 * size)), rib_bmd, quality, grid.px(1.2))
            )
            if k < 6:
                # Only the upper anterior ribs reach the sternum; the costal cartilage is invisible.
                anterior = smooth_open(
                    origin
                    + np.array([[s * (reach + 35), 55], [s * (reach - 10), 85], [s * 50, 100]]),
                    3,
                )
                anterior_ribs.append(
                    Bone(
                        band(to_px(anterior), grid.px(9.0 * size)),
                        0.6 * rib_bmd,
                        quality,
                        grid.px(0.8),
                    )
                )
    for s in (-1.0, 1.0):
        clavicle = smooth_open(
            np.array([[s * 22, -148], [s * 70, -158], [s * 120, -162], [s * 160, -180]]), 3
        )
        girdle.append(
            Bone(band(to_px(clavicle), grid.px(15.0 * size)), 1.1 * rib_bmd, quality, grid.px(1.5))
        )
        scapula = smooth_closed(
            np.array(
                [[s * 115, -175], [s * 185, -170], [s * 170, -110], [s * 150, -40], [s * 125, -110]]
            ),
            3,
        )
        arms.append(Bone(to_px(scapula), 0.8 * rib_bmd, quality, grid.px(1.5)))
        humerus = superellipse(
            tuple(to_px([s * 200, -165])), grid.px(27 * size), grid.px(27 * size)
        )
        girdle.append(Bone(humerus, 1.3 * rib_bmd, quality, grid.px(2.0)))

    step = 8
    x, y = grid.coordinates_mm(step)
    xs = (x - shift[0]) / size
    ys = (y - shift[1]) / size
    half_width = rng.uniform(150.0, 175.0)
    depth = rng.uniform(20.0, 27.0) * size
    thorax = depth * np.sqrt(np.clip(1 - (xs / half_width) ** 2, 0, 1))
    neck = 12.0 * size * np.exp(-0.5 * (xs / 45.0) ** 2)
    shoulders = np.where(ys < -150, np.clip(1 + (ys + 150) / 60, 0, 1), 1.0)
    thickness = np.maximum(thorax * shoulders, neck * (ys < -140))
    for s in (-1.0, 1.0):
        # Shoulder girdle soft tissue around the humeral heads.
        thickness = np.maximum(
            thickness,
            13.0
            * size
            * np.exp(-((((xs - s * 190.0) / 60.0) ** 2 + ((ys + 160.0) / 75.0) ** 2) ** 2)),
        )
    small_shape = thickness.shape
    domes = {-1.0: rng.uniform(45, 65), 1.0: rng.uniform(60, 80)}
    lungs_small = fill_polygons(
        small_shape,
        [
            (((_lung_outline(s, domes[s]) * size + shift) / grid.spacing_mm + (cx, cy)) / step, 1.0)
            for s in (-1.0, 1.0)
        ],
    )
    heart_mask = np.exp(-((((xs - 30.0) / 68.0) ** 2 + ((ys - 45.0) / 60.0) ** 2) ** 2))
    lungs_small = gaussian_blur(lungs_small, grid.px(6.0) / step) * (1 - 0.85 * heart_mask)
    thickness = np.clip(thickness - 0.8 * depth * 0.7 * lungs_small, 0, None)
    soft = resize(thickness.astype(np.float32), grid.rows, grid.columns)

    texture = Texture.sample(rng, grid, quality)
    density = np.zeros((grid.rows, grid.columns), np.float32)
    for layer in (vertebrae, posterior_ribs, anterior_ribs, girdle, arms):
        paint_bones(density, layer, texture)
    lung_points = np.concatenate([to_px(_lung_outline(s, domes[s])) for s in (-1.0, 1.0)])
    lung_box = tuple(round(float(v), 1) for v in (*lung_points.min(0), *lung_points.max(0)))
    scene = Scene(grid, soft, density, np.zeros_like(density), collimation_field(rng, grid))
    return scene, ChestGeometry(lung_box, evaluable=hard_case is HardCase.NONE)
