"""The ground truth matches the drawing and follows the clinical rules."""

from __future__ import annotations

import collections
from importlib.resources import files

import numpy as np
import pytest
from phantom_measures import box_and_sides, display_pixels

from osteonode.bone import WHO_CATEGORIES, DxaManufacturer, MeasurementSite, Sex
from osteonode.phantoms import LUMBAR_REFERENCE, Category
from osteonode.phantoms.demographics import VERTEBRAE, sample_patient, t_score, who_category
from osteonode.reference import load_reference


def _inside_image(corners: np.ndarray, shape: tuple[int, int]) -> bool:
    return bool(
        (corners >= 0).all()
        and (corners[:, 0] < shape[1]).all()
        and (corners[:, 1] < shape[0]).all()
    )


def test_each_vertebral_box_is_brighter_than_its_surroundings(lumbar_cohort) -> None:
    checked = 0
    for record in lumbar_cohort:
        pixels = display_pixels(record.file)
        for name in VERTEBRAE:
            corners = record.corners[name]
            if not _inside_image(corners, pixels.shape):
                continue
            inside, beside = box_and_sides(pixels.shape, corners)
            assert pixels[inside].mean() > pixels[beside & ~inside].mean(), (record.file.name, name)
            checked += 1
    assert checked >= 5 * len(lumbar_cohort)


def test_vertebrae_run_from_t12_down_to_l5(lumbar_cohort) -> None:
    for record in lumbar_cohort:
        centres = [record.corners[name].mean(0)[1] for name in VERTEBRAE]
        assert centres == sorted(centres)


def test_cropped_lumbar_films_lose_part_of_l1_to_l4(lumbar_cohort) -> None:
    for record in lumbar_cohort:
        shape = (int(record.row["rows"]), int(record.row["columns"]))
        whole = all(_inside_image(record.corners[v], shape) for v in ("L1", "L2", "L3", "L4"))
        assert whole == (record.hard_case.value != "cropped")


def test_hip_crop_box_contains_the_femoral_neck(hip_cohort) -> None:
    for record in hip_cohort:
        shape = (int(record.row["rows"]), int(record.row["columns"]))
        right, left = record.sides["right"], record.sides["left"]
        # On an AP film the patient's right is on the image left.
        assert right.neck_centre[0] < left.neck_centre[0]
        for side in (right, left):
            x0, y0, x1, y1 = side.crop_box
            assert x0 < side.neck_centre[0] < x1 and y0 < side.neck_centre[1] < y1
            if side.evaluable:
                assert 0 <= x0 and x1 < shape[1] and 0 <= y0 and y1 < shape[0]


def test_femoral_neck_is_brighter_than_the_soft_tissue_lateral_to_the_shaft(hip_cohort) -> None:
    for record in hip_cohort:
        pixels = display_pixels(record.file)
        for name, side in record.sides.items():
            if not side.evaluable:
                continue
            x0, _, x1, y1 = (round(v) for v in side.crop_box)
            nx, ny = (round(v) for v in side.neck_centre)
            r = max(2, (x1 - x0) // 25)
            neck = pixels[ny - r : ny + r + 1, nx - r : nx + r + 1].mean()
            # The lateral lower corner of the crop lies beyond the vastus ridge: soft tissue only.
            corner_x = x0 if name == "right" else x1 - 2 * r
            corner = pixels[y1 - 2 * r : y1, corner_x : corner_x + 2 * r].mean()
            assert neck > corner, (record.file.name, name)


def test_categories_follow_the_who_thresholds(lumbar_cohort, chest_cohort, hip_cohort) -> None:
    for record in lumbar_cohort + chest_cohort + hip_cohort:
        expected = (
            Category.NORMAL
            if record.t_score >= -1.0
            else Category.OSTEOPOROSIS
            if record.t_score <= -2.5
            else Category.LOW_BONE_MASS
        )
        assert record.category is expected


def test_lumbar_t_score_uses_the_l1_to_l4_mean(lumbar_cohort) -> None:
    for record in lumbar_cohort:
        mean = np.mean([record.bmd[f"bmd_{v}"] for v in ("L1", "L2", "L3", "L4")])
        assert record.bmd["bmd_l1_l4"] == pytest.approx(mean, abs=1e-4)
        assert record.t_score == round(
            (record.bmd["bmd_l1_l4"] - LUMBAR_REFERENCE[0]) / LUMBAR_REFERENCE[1], 2
        )


def test_chest_and_hip_answers_are_the_lowest_site(chest_cohort, hip_cohort) -> None:
    for record in chest_cohort:
        sites = [float(record.row[k]) for k in ("lumbar_t_score", "right_t_score", "left_t_score")]
        assert record.t_score == min(sites)
    for record in hip_cohort:
        assert record.t_score == min(side.t_score for side in record.sides.values())


def test_women_lose_more_bone_after_fifty_and_the_older_population_is_mixed() -> None:
    rng = np.random.default_rng(42)
    patients = [sample_patient(rng) for _ in range(3000)]

    def mean_bmd(sex: Sex, low: int, high: int) -> float:
        return float(
            np.mean([p.lumbar_bmd for p in patients if p.sex is sex and low <= p.age < high])
        )

    female_loss = mean_bmd(Sex.FEMALE, 40, 50) - mean_bmd(Sex.FEMALE, 75, 91)
    male_loss = mean_bmd(Sex.MALE, 40, 50) - mean_bmd(Sex.MALE, 75, 91)
    assert female_loss > male_loss + 0.05
    older = collections.Counter(who_category(p.lumbar_t_score) for p in patients if p.age >= 50)
    shares = {category: older[category] / sum(older.values()) for category in WHO_CATEGORIES}
    assert all(0.15 < share < 0.5 for share in shares.values()), shares
    ages = np.array([p.age for p in patients])
    bmd = np.array([p.lumbar_bmd for p in patients])
    assert abs(np.corrcoef(ages, bmd)[0, 1]) < 0.75  # age alone does not give the answer


def test_t_score_arithmetic() -> None:
    assert t_score(1.047 - 2 * 0.110, LUMBAR_REFERENCE) == -2.0
    assert who_category(-1.0) is Category.NORMAL
    assert who_category(-2.5) is Category.OSTEOPOROSIS
    assert who_category(-2.49) is Category.LOW_BONE_MASS


def test_lumbar_truth_is_what_the_node_computes_on_the_declared_dxa_scale(lumbar_cohort) -> None:
    """The cohort names the DXA scale of its BMD, and its T-scores are the node's on that scale."""
    shipped = load_reference(files("osteonode.defaults") / "reference.toml")
    for record in lumbar_cohort:
        manufacturer = DxaManufacturer(record.bmd_manufacturer)
        for sex in (Sex.FEMALE, Sex.MALE):
            reference = shipped.young_adult(
                manufacturer, MeasurementSite.LUMBAR_L1_L4, Sex(sex.value)
            )
            assert record.t_score == pytest.approx(
                (record.bmd["bmd_l1_l4"] - reference.mean) / reference.sd, abs=0.006
            )
