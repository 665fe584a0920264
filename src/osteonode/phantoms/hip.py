"""AP pelvis / hip phantom: hemi-pelves, sacrum and both proximal femora.

Layout in mm at the detector, x to the image right, y down, origin at the image centre. On an AP
film the patient's right is on the image left, so the right femur is drawn at negative x.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from osteonode.bone import Sex
from osteonode.phantoms.demographics import TOTAL_HIP_REFERENCE, HipSide, Patient
from osteonode.phantoms.enum import HardCase
from osteonode.phantoms.physics import Bone, Scene, Texture, collimation_field, paint_bones
from osteonode.phantoms.raster import (
    Grid,
    band,
    fill_polygons,
    resize,
    rotation,
    smooth_closed,
    smooth_open,
    superellipse,
)

_HEAD_RADIUS_MM = 23.0
_NECK_ANGLE_DEG = 40.0  # neck axis below the horizontal, i.e. a neck-shaft angle of 130 degrees


@dataclass(frozen=True)
class FemurGeometry:
    """Ground truth of one side.

    Attributes
    ----------
    crop_box:
        (x0, y0, x1, y1) in source pixels, x0 < x1, y0 < y1: top at the acetabular roof,
        bottom below the lesser trochanter by its length, medial at the teardrop's lateral
        margin, lateral just beyond the vastus ridge (METHODS.md section 3).
    neck_centre:
        (x, y) of the femoral neck's narrowest section in source pixels.
    evaluable:
        False when a prosthesis replaces the femur or the side is cut off the image.
    prosthesis:
        True when the side carries a hip prosthesis.
    """

    crop_box: tuple[float, float, float, float]
    neck_centre: tuple[float, float]
    evaluable: bool
    prosthesis: bool


@dataclass(frozen=True)
class HipGeometry:
    """Ground truth geometry of a pelvis phantom, per patient side."""

    right: FemurGeometry
    left: FemurGeometry


def _femur_template() -> dict[str, np.ndarray]:
    """Outline and landmarks of a right-of-image femur (lateral = +x), head centre at the origin."""
    r = _HEAD_RADIUS_MM
    beta = np.deg2rad(_NECK_ANGLE_DEG)
    axis = np.array([np.cos(beta), np.sin(beta)])
    normal = np.array([-np.sin(beta), np.cos(beta)])  # toward the inferior neck margin
    phi = np.deg2rad(np.linspace(0.0, -280.0, 40)) + beta - np.deg2rad(40.0)
    head = np.stack([r * np.cos(phi), r * np.sin(phi)], 1)
    neck_inferior = 28 * axis + 15 * normal
    neck_superior = 28 * axis - 14 * normal
    lower = np.array(
        [
            [20, 42],
            [16, 56],
            [11, 63],
            [20, 71],
            [25, 88],
            [25, 260],
            [55, 260],
            [55, 88],
            [58, 55],
            [62, 30],
            [60, 8],
            [52, -5],
            [43, -2],
            [36, 9],
        ],
        dtype=float,
    )
    outline = np.concatenate([head, [neck_inferior], lower, [neck_superior]])
    neck = np.array(
        [
            22 * axis - 17 * normal,
            36 * axis - 17 * normal,
            36 * axis + 17 * normal,
            22 * axis + 17 * normal,
        ]
    )
    canal = np.array([[31, 110], [49, 110], [49, 260], [31, 260]], dtype=float)
    return {
        "outline": smooth_closed(outline, 2),
        "neck": neck,
        "neck_centre": 29 * axis,
        "canal": canal,
        "lesser_trochanter_bottom": np.array([20.0, 71.0]),
        "vastus_ridge": np.array([62.0, 30.0]),
        "stem": np.array([[40, -2], [40, 40], [38, 160]], dtype=float),
    }


def _soft_tissue(
    rng: np.random.Generator, grid: Grid, size: float, midline: float, head_y: float
) -> np.ndarray:
    """Pelvic soft tissue path (cm): elliptic trunk above, two thighs below."""
    step = 8
    x, y = grid.coordinates_mm(step)
    half_width = rng.uniform(165.0, 215.0) * size
    depth = rng.uniform(17.0, 25.0) * size
    trunk = depth * np.sqrt(np.clip(1 - ((x - midline) / half_width) ** 2, 0, 1))
    thigh_radius = 85.0 * size
    thighs = sum(
        0.9
        * depth
        * np.sqrt(np.clip(1 - ((x - midline - side * 95.0 * size) / thigh_radius) ** 2, 0, 1))
        for side in (-1, 1)
    )
    blend = 1 / (1 + np.exp(-(y - head_y - 90.0) / 20.0))
    thickness = (1 - blend) * trunk + blend * np.minimum(thighs, trunk * 1.1)
    for _ in range(int(rng.integers(1, 6))):
        gx, gy = midline + rng.uniform(-90, 90), head_y + rng.uniform(-150, -40)
        rx, ry = rng.uniform(10, 30, 2)
        thickness = thickness - rng.uniform(1.0, 3.0) * np.exp(
            -((((x - gx) / rx) ** 2 + ((y - gy) / ry) ** 2) ** 2)
        )
    return resize(np.clip(thickness, 0, None).astype(np.float32), grid.rows, grid.columns)


def _place(
    points: np.ndarray,
    *,
    s: float,
    size: float,
    angle: float,
    head: np.ndarray,
    to_px: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Template points (mm, right-of-image femur) mirrored to side ``s`` and placed in pixels."""
    mirrored = np.atleast_2d(np.asarray(points, dtype=float)) * (s, 1.0) * size
    return to_px(rotation(mirrored, angle, (0.0, 0.0)) + head)


def _scale_regions(density: np.ndarray, regions: list[tuple[np.ndarray, float]]) -> None:
    """Multiply the density inside each outline by its factor, in place."""
    for outline, factor in regions:
        mask = fill_polygons(density.shape, [(outline, 1.0)]) > 0
        density[mask] *= factor


def draw_hip(
    rng: np.random.Generator, patient: Patient, grid: Grid, hard_case: HardCase
) -> tuple[Scene, HipGeometry]:
    """Draw an AP pelvis phantom with both proximal femora.

    Parameters
    ----------
    rng:
        The image's random generator.
    patient:
        Ground-truth hip densities.
    grid:
        Pixel grid of the image.
    hard_case:
        ``IMPLANT`` replaces one hip by a prosthesis, ``CROPPED`` pushes one femur off the image;
        the affected side is not evaluable.

    Returns
    -------
    tuple[Scene, HipGeometry]
    """
    size = rng.uniform(0.92, 1.08) * (1.07 if patient.sex is Sex.MALE else 1.0)
    template = _femur_template()
    midline = rng.uniform(-20.0, 20.0)
    head_y = rng.uniform(-30.0, 10.0)
    half_span = rng.uniform(82.0, 95.0) * size
    affected = "right" if rng.random() < 0.5 else "left"
    if hard_case is HardCase.CROPPED:
        edge = grid.columns * grid.spacing_mm / 2
        # Put the affected head near the image edge so its femur and crop box fall outside.
        midline = (edge - half_span - rng.uniform(0.0, 20.0) * size) * (
            1 if affected == "left" else -1
        )
    cx, cy = grid.centre

    def to_px(points_mm: np.ndarray) -> np.ndarray:
        return np.asarray(points_mm, dtype=float) / grid.spacing_mm + (cx, cy)

    femora, pelvis, rings, dense, metal = [], [], [], [], []
    # Regions whose density is scaled: of the femur alone, and of everything (holes).
    femur_scaling: list[tuple[np.ndarray, float]] = []
    holes: list[tuple[np.ndarray, float]] = []
    sides: dict[str, FemurGeometry] = {}
    quality = patient.skeletal_quality
    for name, s in (("right", -1.0), ("left", 1.0)):
        truth: HipSide = getattr(patient, f"{name}_hip")
        side_quality = truth.total_hip_bmd / TOTAL_HIP_REFERENCE[0]
        head = np.array([midline + s * half_span, head_y + rng.uniform(-3.0, 3.0)])
        abduction = rng.uniform(-6.0, 6.0)

        place = functools.partial(
            _place, s=s, size=size, angle=s * abduction, head=head, to_px=to_px
        )

        prosthesis = hard_case is HardCase.IMPLANT and name == affected
        outline = place(template["outline"])
        femora.append(Bone(outline, truth.total_hip_bmd, side_quality, grid.px(2.0)))
        femur_scaling.append((place(template["neck"]), truth.neck_bmd / truth.total_hip_bmd * 1.12))
        femur_scaling.append((place(template["canal"]), 0.55))
        if prosthesis:
            stem = smooth_open(place(template["stem"]), 3)
            metal.append((band(stem, grid.px(np.linspace(16, 9, len(stem)) * size)), 12.0))
            metal.append(
                (
                    superellipse(
                        tuple(place([[0.0, 0.0]])[0]),
                        grid.px(_HEAD_RADIUS_MM * 0.95 * size),
                        grid.px(_HEAD_RADIUS_MM * 0.95 * size),
                    ),
                    10.0,
                )
            )

        r = _HEAD_RADIUS_MM * size
        roof = smooth_open(
            np.array(
                [
                    [s * (r + 8), 2.0],
                    [s * 0.8 * r, -1.05 * r - 3],
                    [0, -r - 5],
                    [-s * 0.8 * r, -r - 2],
                    [-s * (r + 6), -6],
                ]
            )
            + head,
            3,
        )
        dense.append(
            Bone(
                band(to_px(roof), grid.px(4.0 * size)),
                0.9 * TOTAL_HIP_REFERENCE[0] * quality,
                quality,
                grid.px(1.0),
            )
        )
        teardrop_x = head[0] - s * (r + 5.0 * size)
        teardrop = smooth_open(
            np.array(
                [
                    [teardrop_x, head[1] - 8],
                    [teardrop_x - s * 4, head[1] + 22 * size],
                    [teardrop_x - s * 9, head[1] + 20 * size],
                    [teardrop_x - s * 10, head[1] - 6],
                ]
            ),
            3,
        )
        dense.append(
            Bone(
                band(to_px(teardrop), grid.px(2.5 * size)),
                0.7 * TOTAL_HIP_REFERENCE[0] * quality,
                quality,
                grid.px(0.8),
            )
        )

        ilium = np.array(
            [
                [-30, -18],
                [-50, -70],
                [-45, -110],
                [-20, -135],
                [30, -140],
                [62, -115],
                [55, -75],
                [38, -40],
                [30, -15],
            ]
        )
        pelvis.append(
            Bone(
                to_px(smooth_closed(ilium * (s, 1.0) * size + head, 3)),
                0.75 * TOTAL_HIP_REFERENCE[0] * quality,
                quality,
                grid.px(2.0),
            )
        )
        ring_centre = head + np.array([-s * 30, 58]) * size
        ring = superellipse(
            tuple(to_px(ring_centre)), grid.px(34 * size), grid.px(36 * size), s * 15
        )
        rings.append(Bone(ring, 0.6 * TOTAL_HIP_REFERENCE[0] * quality, quality, grid.px(3.0)))
        foramen = superellipse(
            tuple(to_px(ring_centre)), grid.px(19 * size), grid.px(24 * size), s * 15
        )
        holes.append((foramen, 0.0))
        ramus = smooth_open(
            np.array([[-s * 25, 25], [-s * 55, 32], [-s * (half_span - 3), 45]]) * (1.0, size)
            + (head[0], head[1]),
            3,
        )
        rings.append(
            Bone(
                band(to_px(ramus), grid.px(17 * size)),
                0.55 * TOTAL_HIP_REFERENCE[0] * quality,
                quality,
                grid.px(1.5),
            )
        )

        lt_bottom = place(template["lesser_trochanter_bottom"])[0]
        lt_length = grid.px(16.0 * size)
        vastus = place(template["vastus_ridge"])[0]
        medial = to_px([teardrop_x, 0.0])[0]
        lateral = vastus[0] + s * grid.px(6.0)
        top = to_px([0.0, head[1] - r - 4.0])[1]
        bottom = lt_bottom[1] + lt_length
        box = (min(medial, lateral), top, max(medial, lateral), bottom)
        on_image = (
            box[0] >= 0 and box[2] <= grid.columns - 1 and box[1] >= 0 and box[3] <= grid.rows - 1
        )
        sides[name] = FemurGeometry(
            tuple(round(float(v), 1) for v in box),
            tuple(round(float(v), 1) for v in place(template["neck_centre"][None])[0]),
            evaluable=on_image and not prosthesis,
            prosthesis=prosthesis,
        )

    sacrum_top = np.array([midline, head_y - 115.0 * size])
    sacrum = smooth_closed(
        np.array([[-50, 0], [50, 0], [36, 60], [10, 110], [-10, 110], [-36, 60]]) * size
        + sacrum_top
    )
    spine = [Bone(to_px(sacrum), 0.6 * TOTAL_HIP_REFERENCE[0] * quality, quality, grid.px(1.5))]
    texture = Texture.sample(rng, grid, quality)
    density = np.zeros((grid.rows, grid.columns), np.float32)
    paint_bones(density, femora, texture)
    _scale_regions(density, femur_scaling)
    for layer in (pelvis, rings, spine, dense):
        paint_bones(density, layer, texture)
    _scale_regions(density, holes)
    metal_mm = fill_polygons(density.shape, metal) if metal else np.zeros_like(density)
    soft = _soft_tissue(rng, grid, size, midline, head_y)
    scene = Scene(grid, soft, density, metal_mm, collimation_field(rng, grid))
    return scene, HipGeometry(right=sides["right"], left=sides["left"])
