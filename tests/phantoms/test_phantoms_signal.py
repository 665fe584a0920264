"""Bone density changes the image locally, but no simple global statistic reads it off.

The correlations are printed (``pytest -s``) and recorded as test properties so the validation
report can quote them.
"""

from __future__ import annotations

import numpy as np
import pytest
from phantom_measures import box_and_sides, display_pixels, pearson

L1_L4 = ("L1", "L2", "L3", "L4")


@pytest.fixture(scope="module")
def measurements(held_out_lumbar) -> dict[str, np.ndarray]:
    image_mean, box_mean, contrast, bmd = [], [], [], []
    for record in held_out_lumbar:
        pixels = display_pixels(record.file)
        inside_values, beside_values = [], []
        for name in L1_L4:
            inside, beside = box_and_sides(pixels.shape, record.corners[name])
            inside_values.append(pixels[inside].mean())
            beside_values.append(pixels[beside & ~inside].mean())
        image_mean.append(pixels.mean())
        box_mean.append(np.mean(inside_values))
        contrast.append(np.mean(inside_values) - np.mean(beside_values))
        bmd.append(record.bmd["bmd_l1_l4"])
    return {
        k: np.array(v)
        for k, v in {
            "image_mean": image_mean,
            "box_mean": box_mean,
            "contrast": contrast,
            "bmd": bmd,
        }.items()
    }


def test_image_wide_mean_intensity_correlates_weakly_with_bmd(
    measurements, record_property
) -> None:
    r = pearson(measurements["image_mean"], measurements["bmd"])
    record_property("r_image_mean", round(r, 3))
    print(f"r(image-wide mean, L1-L4 BMD) = {r:.3f}")
    assert abs(r) < 0.5


def test_bone_region_intensity_is_no_trivial_readout_of_bmd(measurements, record_property) -> None:
    r = pearson(measurements["box_mean"], measurements["bmd"])
    record_property("r_box_mean", round(r, 3))
    print(f"r(mean intensity inside L1-L4 boxes, L1-L4 BMD) = {r:.3f}")
    assert r < 0.9


def test_bone_contrast_against_adjacent_soft_tissue_carries_the_density_signal(
    measurements, record_property
) -> None:
    r = pearson(measurements["contrast"], measurements["bmd"])
    record_property("r_local_contrast", round(r, 3))
    print(f"r(L1-L4 box minus adjacent soft tissue, L1-L4 BMD) = {r:.3f}")
    assert 0.25 < r < 0.9
