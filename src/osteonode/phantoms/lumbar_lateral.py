"""Lateral lumbar spine phantom: T11-L5 seen from the side, with posterior elements, sacrum,
the superimposed iliac wings and the lower ribs.

Geometry is laid out in mm at the detector, x to the image right, y down, origin at the image
centre, and converted to pixels at the end. The film is displayed the usual way for a lateral
spine: the patient faces the image left, so anterior is left and posterior right (Patient
Orientation ``P\\F``).

The bone signal is the one the frontal phantom draws (:mod:`osteonode.phantoms.physics`): each
vertebral body's mean areal density follows its BMD and its cortex and trabecular pattern follow
skeletal quality. A lateral beam crosses the body's full width but not the posterior elements,
which a frontal beam adds on top: the phantom paints a body at
:data:`LATERAL_AREAL_DENSITY_RATIO` times its frontal BMD, a phantom assumption.
"""

from __future__ import annotations

import numpy as np

from osteonode.phantoms.demographics import LUMBAR_REFERENCE, VERTEBRAE, Patient
from osteonode.phantoms.enum import HardCase
from osteonode.phantoms.lumbar import (
    LumbarGeometry,
    arc_positions,
    body_corners,
    body_size,
    cropped_shift,
    paint_spine,
    rotation,
    tilted_layout,
)
from osteonode.phantoms.physics import Bone, Scene, collimation_field
from osteonode.phantoms.raster import Grid, band, resize, smooth_closed, smooth_open, superellipse

#: Body depth (front to back) and height (mm), and the disc below each vertebra (mm), T11 first.
_BODY_MM = {
    "T11": (29.0, 23.0, 6.0),
    "T12": (31.0, 24.0, 7.0),
    "L1": (33.0, 26.0, 8.0),
    "L2": (34.0, 27.0, 9.0),
    "L3": (35.0, 28.0, 10.0),
    "L4": (35.0, 28.0, 11.0),
    "L5": (34.0, 27.0, 10.0),
}
#: A vertebral body's mean areal density on a lateral projection relative to its frontal BMD. The
#: lateral beam crosses the body's width, longer than the depth a frontal beam crosses, but misses
#: the posterior elements a frontal beam adds: taken to cancel, a phantom assumption.
LATERAL_AREAL_DENSITY_RATIO = 1.0
_CORTEX_MM = 1.0


def _soft_tissue(
    rng: np.random.Generator, grid: Grid, size: float, spine_x: float
) -> np.ndarray:
    """Soft tissue path (cm) across the body from side to side; the abdomen in profile."""
    step = 8
    x, y = grid.coordinates_mm(step)
    habitus = rng.uniform(0.85, 1.2)
    # The lateral beam crosses the whole width of the trunk, thickest in the middle of the
    # abdomen, which lies in front of the spine; the back is close behind it.
    width_cm = 27.0 * habitus * size * rng.uniform(0.95, 1.05)
    front = spine_x - (140.0 + 60.0 * (habitus - 1.0)) * size
    back = spine_x + (100.0 + 20.0 * (habitus - 1.0)) * size * rng.uniform(0.9, 1.1)
    centre, half_depth = (front + back) / 2, (back - front) / 2
    # The trunk's cross-section is closer to a rounded rectangle than to an ellipse: nearly the
    # full width over most of its depth, falling off near the skin.
    profile = width_cm * np.clip(1.0 - np.abs((x - centre) / half_depth) ** 4, 0.0, None) ** 0.25
    thickness = np.broadcast_to(profile, (y.shape[0], x.shape[1])).copy()
    # Bowel gas in the abdomen, in front of the psoas and the spine.
    for _ in range(int(rng.integers(2, 9))):
        gx = rng.uniform(front + 20.0, spine_x - 60.0 * size)
        gy = rng.uniform(-60, 180)
        rx, ry = rng.uniform(10, 35, 2)
        thickness -= rng.uniform(0.5, 2.0) * np.exp(
            -((((x - gx) / rx) ** 2 + ((y - gy) / ry) ** 2) ** 2)
        )
    thickness = np.clip(thickness, 0.0, None)
    return resize(thickness, grid.rows, grid.columns)


def _spine_layout(rng: np.random.Generator, size: float) -> list[tuple[str, float, float, float]]:
    """(name, x_mm, y_mm, tilt_deg) of each body centre, T11 to L5, along the lordotic curve."""
    names = list(_BODY_MM)
    s = arc_positions(_BODY_MM, size)
    # Lordosis: the mid-lumbar bodies lie furthest forward (to the image left); a parabola whose
    # end slopes give some 40-60 degrees between the end plates of T12 and L5.
    depth = rng.uniform(10.0, 28.0)
    reach = float(np.abs(s).max())
    apex = rng.uniform(-15.0, 25.0)  # the curve's apex, around L3
    forward = -depth * (1.0 - ((s - apex) / reach) ** 2)
    slope = 2.0 * depth * (s - apex) / reach**2
    tilt = rng.uniform(-5.0, 5.0)  # the patient not quite upright on the table
    return tilted_layout(names, s, forward, slope, tilt)


def draw_lumbar_lateral(
    rng: np.random.Generator, patient: Patient, grid: Grid, hard_case: HardCase
) -> tuple[Scene, LumbarGeometry]:
    """Draw a lateral lumbar spine phantom.

    Parameters
    ----------
    rng:
        The image's random generator.
    patient:
        Ground-truth densities to draw.
    grid:
        Pixel grid of the image.
    hard_case:
        ``IMPLANT`` adds pedicle screws seen from the side and rods, ``CROPPED`` pushes L1 or L4
        partly off the image.

    Returns
    -------
    tuple[Scene, LumbarGeometry]
        The scene, and each body's corners (top-left, top-right, bottom-right, bottom-left as
        seen, i.e. anterior-superior first).
    """
    size = body_size(rng, patient)
    layout = _spine_layout(rng, size)
    # The field is centred on the vertebral bodies, give or take a little.
    shift_x, shift_y = rng.uniform(0.0, 25.0), rng.uniform(-20.0, 20.0)
    if hard_case is HardCase.CROPPED:
        shift_y = cropped_shift(rng, grid, layout)
    bmd = dict(patient.vertebra_bmd, T11=patient.vertebra_bmd["T12"] * 0.98)
    cx, cy = grid.centre

    def to_px(points_mm: np.ndarray) -> np.ndarray:
        return np.asarray(points_mm) / grid.spacing_mm + (cx, cy)

    bodies, posterior, spinous, metal = [], [], [], []
    corners: dict[str, np.ndarray] = {}
    for name, x, y, angle in layout:
        x, y = x + shift_x, y + shift_y
        depth, height = _BODY_MM[name][0] * size, _BODY_MM[name][1] * size
        quality = bmd[name] / LUMBAR_REFERENCE[0]
        rot = rotation(angle)
        bodies.append(
            Bone(
                superellipse(
                    tuple(to_px([x, y])), grid.px(depth / 2), grid.px(height / 2), angle, 6.0, 0.05
                ),
                LATERAL_AREAL_DENSITY_RATIO * bmd[name],
                quality,
                grid.px(_CORTEX_MM),
            )
        )
        if name in VERTEBRAE:
            corners[name] = to_px(body_corners(depth, height, angle, (x, y)))
        # Pedicles (both superimposed) and lamina run backwards from the upper half of the body,
        # leaving the intervertebral foramen below them.
        arch = np.array([[0.5 * depth - 2.0, -0.25 * height], [0.5 * depth + 22.0, -0.1 * height]])
        arch = np.linspace(arch[0], arch[1], 12) * size @ rot.T + (x, y)
        posterior.append(
            Bone(band(to_px(arch), grid.px(0.42 * height)), 0.9 * bmd[name], quality, grid.px(1.4),
                 interior=0.6)
        )
        # Spinous process: backwards and a little down from the lamina.
        process = np.array([[0.5 * depth + 18.0, -0.05 * height], [0.5 * depth + 50.0, 0.3 * height]])
        process = np.linspace(process[0], process[1], 12) * size @ rot.T + (x, y)
        width = grid.px(np.linspace(0.45, 0.3, 12) * height)
        spinous.append(Bone(band(to_px(process), width), 0.5 * bmd[name], quality, grid.px(1.2),
                            interior=0.6))
        if hard_case is HardCase.IMPLANT and name in ("L3", "L4"):
            # A pedicle screw seen from the side: from the back of the arch into the body.
            screw = np.array([[0.5 * depth + 20.0, -0.15 * height], [-0.2 * depth, -0.05 * height]])
            screw = np.linspace(screw[0], screw[1], 8) @ rot.T + (x, y)
            metal.append((band(to_px(screw), grid.px(6.0)), 6.0 * 2))  # both sides superimposed

    if hard_case is HardCase.IMPLANT:
        heads = [
            to_px(rotation(v[3]) @ np.array([_BODY_MM[v[0]][0] / 2 + 20.0, 0.0]) * size
                  + (v[1] + shift_x, v[2] + shift_y))
            for v in layout
            if v[0] in ("L3", "L4")
        ]
        rod = np.linspace(heads[0] - (0, grid.px(12)), heads[1] + (0, grid.px(12)), 10)
        metal.append((band(rod, grid.px(5.5)), 5.5 * 2))

    l5 = next(v for v in layout if v[0] == "L5")
    l5_rot = rotation(l5[3])
    # Sacrum: tilted backwards below L5, its promontory under L5's anterior lower corner.
    sacrum_top = np.array([l5[1] + shift_x, l5[2] + shift_y]) + l5_rot @ (
        np.array([0.0, _BODY_MM["L5"][1] / 2 + 11.0]) * size
    )
    pelvis_quality = patient.skeletal_quality
    pelvis_bmd = 0.55 * LUMBAR_REFERENCE[0] * pelvis_quality
    sacrum = smooth_closed(
        np.array([[-20, 0], [22, -4], [48, 40], [62, 95], [52, 100], [25, 60], [-10, 22]])
        * size
        + sacrum_top
    )
    pelvis = [Bone(to_px(sacrum), pelvis_bmd * 1.2, pelvis_quality, grid.px(1.5))]
    # Both iliac wings superimpose over L5 and the sacrum; one outline at twice the density.
    ilium = np.array(
        [[-25, -40], [10, -58], [50, -48], [68, -10], [55, 40], [25, 90], [-8, 95], [-30, 50]],
        dtype=float,
    ) * size + sacrum_top + (rng.uniform(-8.0, 8.0), rng.uniform(-10.0, 10.0))
    ilia = [Bone(to_px(smooth_closed(ilium, 3)), pelvis_bmd * 1.4, pelvis_quality, grid.px(2.5),
                 interior=0.7)]
    ribs = []
    for name, x, y, _ in layout[:2]:
        for offset in (-6.0, 6.0):  # the two sides' ribs, not quite superimposed
            # The lowest ribs leave the spine backwards and run down behind it.
            control = np.array([[15.0, -8.0], [45.0, 15.0], [80.0, 55.0], [105.0, 100.0]])
            path = smooth_open(control * size + (x + shift_x + offset, y + shift_y + offset), 4)
            ribs.append(
                Bone(
                    band(to_px(path), grid.px(np.linspace(11, 7, len(path)) * size)),
                    0.35 * LUMBAR_REFERENCE[0] * pelvis_quality,
                    pelvis_quality,
                    grid.px(1.0),
                )
            )

    density, metal_mm = paint_spine(rng, grid, [bodies, posterior, spinous, pelvis, ilia, ribs], metal)
    soft = _soft_tissue(rng, grid, size, shift_x)
    scene = Scene(grid, soft, density, metal_mm, collimation_field(rng, grid))
    return scene, LumbarGeometry(corners)
