"""Frontal (AP) lumbar spine phantom: T11-L5 with posterior elements, sacrum, ilia and low ribs.

Geometry is laid out in mm at the detector, x to the image right (the patient's left on an AP
film), y down, origin at the image centre, and converted to pixels at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteonode.bone import Sex
from osteonode.phantoms.demographics import LUMBAR_REFERENCE, VERTEBRAE, Patient
from osteonode.phantoms.enum import HardCase
from osteonode.phantoms.physics import Bone, Scene, Texture, collimation_field, paint_bones
from osteonode.phantoms.raster import (
    Grid,
    band,
    fill_polygons,
    resize,
    smooth_closed,
    smooth_open,
    superellipse,
)

#: Body width and height (mm) and the disc below each vertebra (mm), T11 first.
_BODY_MM = {
    "T11": (36.0, 23.0, 6.0),
    "T12": (38.0, 24.0, 7.0),
    "L1": (42.0, 26.0, 8.0),
    "L2": (45.0, 27.0, 9.0),
    "L3": (48.0, 28.0, 10.0),
    "L4": (50.0, 28.0, 11.0),
    "L5": (52.0, 27.0, 10.0),
}
_TRANSVERSE_MM = {
    "T11": 0.0,
    "T12": 0.0,
    "L1": 14.0,
    "L2": 19.0,
    "L3": 24.0,
    "L4": 20.0,
    "L5": 16.0,
}
_CORTEX_MM = 1.0


@dataclass(frozen=True)
class LumbarGeometry:
    """Ground-truth geometry of a lumbar phantom.

    Attributes
    ----------
    corners:
        Per vertebra T12-L5, the body's four corners in source pixels (x = column, y = row) in the
        order top-left, top-right, bottom-right, bottom-left as seen on the image.
    """

    corners: dict[str, np.ndarray]


def body_size(rng: np.random.Generator, patient: Patient) -> float:
    """The patient's skeletal size factor (men a little larger)."""
    return rng.uniform(0.92, 1.08) * (1.05 if patient.sex is Sex.MALE else 1.0)


def arc_positions(body_mm: dict[str, tuple[float, float, float]], size: float) -> np.ndarray:
    """Position of each body centre along the spine (mm), T11 first, with L3's centre at 0.

    ``body_mm`` gives each body's (width or depth, height, disc below) in mm.
    """
    names = list(body_mm)
    heights = [(body_mm[n][1] + body_mm[n][2]) * size for n in names]
    s = np.cumsum([0.0] + heights[:-1]) + np.array([body_mm[n][1] * size / 2 for n in names])
    return s - (s[names.index("L3")] + body_mm["L3"][1] * size / 2)


def tilted_layout(
    names: list[str], s: np.ndarray, offset: np.ndarray, slope: np.ndarray, tilt: float
) -> list[tuple[str, float, float, float]]:
    """(name, x_mm, y_mm, tilt_deg) of each body centre on a curve tilted by ``tilt`` degrees.

    ``s`` is each centre's position along the spine, ``offset`` its distance from the straight
    line across it (mm), ``slope`` the curve's slope there.
    """
    theta = np.deg2rad(tilt)
    x = offset * np.cos(theta) - s * np.sin(theta)
    y = offset * np.sin(theta) + s * np.cos(theta)
    angle = tilt - np.rad2deg(np.arctan(slope))
    return [(n, float(x[i]), float(y[i]), float(angle[i])) for i, n in enumerate(names)]


def cropped_shift(
    rng: np.random.Generator, grid: Grid, layout: list[tuple[str, float, float, float]]
) -> float:
    """The vertical shift (mm) that pushes L1 or L4 partly off the image (``HardCase.CROPPED``)."""
    edge = grid.rows * grid.spacing_mm / 2
    name = "L1" if rng.random() < 0.5 else "L4"
    y_centre = next(v[2] for v in layout if v[0] == name)
    return (-edge if name == "L1" else edge) - y_centre + rng.uniform(-6.0, 6.0)


def rotation(angle_deg: float) -> np.ndarray:
    """The 2 x 2 matrix turning (x, y) by ``angle_deg`` degrees."""
    theta = np.deg2rad(angle_deg)
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def body_corners(width: float, height: float, angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """A body's corners (mm): top-left, top-right, bottom-right, bottom-left as seen."""
    box = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (width / 2, height / 2)
    return box @ rotation(angle_deg).T + centre


def paint_spine(
    rng: np.random.Generator,
    grid: Grid,
    layers: list[list[Bone]],
    metal: list[tuple[np.ndarray, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Areal density of the bone layers (vertebral bodies first, their texture) and metal (mm)."""
    texture = Texture.sample(rng, grid, float(np.mean([b.quality for b in layers[0]])))
    density = np.zeros((grid.rows, grid.columns), np.float32)
    for layer in layers:
        paint_bones(density, layer, texture)
    metal_mm = fill_polygons((grid.rows, grid.columns), metal) if metal else np.zeros_like(density)
    return density, metal_mm


def _soft_tissue(rng: np.random.Generator, grid: Grid, size: float, spine_x: float) -> np.ndarray:
    """Abdominal soft tissue path (cm): elliptic cross-section, psoas shadows, bowel gas."""
    step = 8
    x, y = grid.coordinates_mm(step)
    habitus = rng.uniform(0.85, 1.2)  # wider patients are also thicker
    half_width = 165.0 * habitus * size * rng.uniform(0.95, 1.05)
    depth_cm = 20.0 * habitus * size * rng.uniform(0.95, 1.05)
    profile = depth_cm * np.sqrt(np.clip(1.0 - ((x - spine_x) / half_width) ** 2, 0.0, 1.0))
    thickness = np.broadcast_to(profile, (y.shape[0], x.shape[1])).copy()
    for side in (-1.0, 1.0):
        # Psoas: a muscle band diverging downward from the upper lumbar spine.
        centre = spine_x + side * (28.0 + 0.25 * np.clip(y + 60.0, 0.0, None))
        thickness += (
            0.8 * np.exp(-0.5 * ((x - centre) / 14.0) ** 2) / (1.0 + np.exp(-(y + 80.0) / 15.0))
        )
    for _ in range(int(rng.integers(2, 9))):
        gx, gy = rng.uniform(-120, 120), rng.uniform(-60, 180)
        rx, ry = rng.uniform(10, 35, 2)
        thickness -= rng.uniform(0.5, 2.0) * np.exp(
            -((((x - gx) / rx) ** 2 + ((y - gy) / ry) ** 2) ** 2)
        )
    thickness = np.clip(thickness, 0.0, None)
    return resize(thickness, grid.rows, grid.columns)


def _spine_layout(
    rng: np.random.Generator, hard_case: HardCase, size: float
) -> list[tuple[str, float, float, float]]:
    """(name, x_mm, y_mm, tilt_deg) of each body centre, T11 to L5, before cropping shifts."""
    amplitude = (
        rng.uniform(15.0, 35.0) if hard_case is HardCase.SCOLIOSIS else rng.uniform(0.0, 5.0)
    )
    period = rng.uniform(220.0, 320.0)
    phase = rng.uniform(0, 2 * np.pi)
    tilt = rng.uniform(-4.0, 4.0)
    names = list(_BODY_MM)
    s = arc_positions(_BODY_MM, size)
    lateral = amplitude * np.sin(2 * np.pi * s / period + phase)
    slope = amplitude * 2 * np.pi / period * np.cos(2 * np.pi * s / period + phase)
    return tilted_layout(names, s, lateral, slope, tilt)


def draw_lumbar(
    rng: np.random.Generator, patient: Patient, grid: Grid, hard_case: HardCase
) -> tuple[Scene, LumbarGeometry]:
    """Draw a frontal lumbar spine phantom.

    Parameters
    ----------
    rng:
        The image's random generator.
    patient:
        Ground-truth densities to draw.
    grid:
        Pixel grid of the image.
    hard_case:
        ``IMPLANT`` adds pedicle screws and rods, ``SCOLIOSIS`` a strong lateral curve,
        ``CROPPED`` pushes L1 or L4 partly off the image.

    Returns
    -------
    tuple[Scene, LumbarGeometry]
    """
    size = body_size(rng, patient)
    layout = _spine_layout(rng, hard_case, size)
    shift_x, shift_y = rng.uniform(-15.0, 15.0), rng.uniform(-20.0, 20.0)
    if hard_case is HardCase.CROPPED:
        shift_y = cropped_shift(rng, grid, layout)
    axial = rng.uniform(-8.0, 8.0)
    bmd = dict(patient.vertebra_bmd, T11=patient.vertebra_bmd["T12"] * 0.98)
    cx, cy = grid.centre

    def to_px(points_mm: np.ndarray) -> np.ndarray:
        return np.asarray(points_mm) / grid.spacing_mm + (cx, cy)

    bodies, posterior, transverse, metal = [], [], [], []
    corners: dict[str, np.ndarray] = {}
    for name, x, y, angle in layout:
        x, y = x + shift_x, y + shift_y
        width, height = _BODY_MM[name][0] * size, _BODY_MM[name][1] * size
        quality = bmd[name] / LUMBAR_REFERENCE[0]
        centre = to_px([x, y])
        bodies.append(
            Bone(
                superellipse(
                    tuple(centre), grid.px(width / 2), grid.px(height / 2), angle, 5.0, 0.06
                ),
                bmd[name],
                quality,
                grid.px(_CORTEX_MM),
            )
        )
        rot = rotation(angle)
        if name in VERTEBRAE:
            corners[name] = to_px(body_corners(width, height, angle, (x, y)))
        # Axial rotation moves posterior elements sideways against the body.
        offset = np.sin(np.deg2rad(axial)) * width * 0.6
        for side in (-1.0, 1.0):
            local = np.array([side * 0.3 * width + offset * 0.5, -0.2 * height])
            pedicle_centre = to_px(rot @ local + (x, y))
            posterior.append(
                Bone(
                    superellipse(
                        tuple(pedicle_centre), grid.px(0.11 * width), grid.px(0.2 * height), angle
                    ),
                    0.45 * bmd[name],
                    quality,
                    grid.px(1.6),
                    interior=0.3,
                )
            )
            reach = _TRANSVERSE_MM[name] * size
            if reach:
                path = np.array(
                    [
                        [side * 0.42 * width, -0.05 * height],
                        [side * (0.5 * width + reach), -0.12 * height],
                    ]
                )
                path = np.linspace(path[0], path[1], 16) @ rot.T + (x, y)
                transverse.append(
                    Bone(
                        band(to_px(path), grid.px(np.linspace(9, 6, 16) * size)),
                        0.4 * bmd[name],
                        quality,
                        grid.px(1.0),
                    )
                )
            if hard_case is HardCase.IMPLANT and name in ("L3", "L4"):
                tip = to_px(rot @ (local + [-side * 0.15 * width, 0.05 * height]) + (x, y))
                screw = band(
                    np.linspace(pedicle_centre + (pedicle_centre - tip) * 0.4, tip, 8), grid.px(6.0)
                )
                metal.append((screw, 6.0))
        spinous = to_px(rot @ np.array([offset, 0.22 * height]) + (x, y))
        posterior.append(
            Bone(
                superellipse(tuple(spinous), grid.px(0.07 * width), grid.px(0.3 * height), angle),
                0.5 * bmd[name],
                quality,
                grid.px(1.2),
                interior=0.6,
            )
        )

    if hard_case is HardCase.IMPLANT:
        heads = [b.outline.mean(0) for b in posterior if b.interior == 0.3]
        for side in (0, 1):
            # Pedicle order per vertebra is (left, right), spinous after: pick one side's L3, L4.
            side_heads = [h for k, h in enumerate(heads) if k % 2 == side][-3:-1]
            rod = np.linspace(
                side_heads[0] - (0, grid.px(12)), side_heads[1] + (0, grid.px(12)), 10
            )
            metal.append((band(rod, grid.px(5.5)), 5.5))

    l5 = next(v for v in layout if v[0] == "L5")
    sacrum_top = np.array(
        [l5[1] + shift_x, l5[2] + shift_y + (_BODY_MM["L5"][1] / 2 + 10.0) * size]
    )
    pelvis_quality = patient.skeletal_quality
    pelvis_bmd = 0.55 * LUMBAR_REFERENCE[0] * pelvis_quality
    sacrum = smooth_closed(
        np.array([[-50, 0], [50, 0], [35, 60], [10, 105], [-10, 105], [-35, 60]]) * size
        + sacrum_top
    )
    pelvis = [Bone(to_px(sacrum), pelvis_bmd, pelvis_quality, grid.px(1.5))]
    ilia = []
    for side in (-1.0, 1.0):
        # Iliac wing: sacroiliac joint medially, crest at about L4, narrowing toward the acetabulum.
        ilium = np.array(
            [
                [40, 10],
                [46, 70],
                [75, 122],
                [112, 132],
                [136, 80],
                [152, 20],
                [152, -30],
                [128, -62],
                [92, -72],
                [60, -56],
                [44, -28],
            ],
            dtype=float,
        )
        ilium = ilium * (side, 1.0) * size + sacrum_top
        ilia.append(
            Bone(
                to_px(smooth_closed(ilium, 3)),
                pelvis_bmd * 0.9,
                pelvis_quality,
                grid.px(2.5),
                interior=0.7,
            )
        )
    ribs = []
    t11, t12 = layout[0], layout[1]
    for (name, x, y, _), length in ((t11, 150.0), (t12, 110.0)):
        for side in (-1.0, 1.0):
            control = np.array(
                [[0.45 * 38, -5], [0.45 * 38 + length * 0.45, 15], [0.45 * 38 + length, 60]]
            )
            path = smooth_open(control * (side, 1.0) * size + (x + shift_x, y + shift_y), 4)
            ribs.append(
                Bone(
                    band(to_px(path), grid.px(np.linspace(11, 7, len(path)) * size)),
                    0.35 * LUMBAR_REFERENCE[0] * pelvis_quality,
                    pelvis_quality,
                    grid.px(1.0),
                )
            )

    density, metal_mm = paint_spine(rng, grid, [bodies, posterior, transverse, pelvis, ilia, ribs], metal)
    soft = _soft_tissue(rng, grid, size, shift_x)
    scene = Scene(grid, soft, density, metal_mm, collimation_field(rng, grid))
    return scene, LumbarGeometry(corners)
