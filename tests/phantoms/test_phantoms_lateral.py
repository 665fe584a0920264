"""Lateral lumbar phantoms: labelled as lateral films, drawn from the side, same ground truth."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from phantom_measures import display_pixels, pearson, polygon_mask

from osteonode.phantoms import Part, PhantomRecord, make_cohort, read_cohort
from osteonode.phantoms.demographics import VERTEBRAE

#: View Position values a lateral film carries, with the View Code Sequence code (SNOMED CT).
LATERAL_VIEW_CODES = {"LATERAL": "399067008", "LL": "399173006", "RL": "399198007"}


def _anterior_of(corners: np.ndarray) -> np.ndarray:
    """A box of the body's size just in front of it (the image left on a lateral film)."""
    depth_vector = corners[1] - corners[0]
    return corners - 1.1 * depth_vector


def test_headers_say_lateral_lumbar_spine(lateral_cohort: list[PhantomRecord]) -> None:
    for record in lateral_cohort:
        ds = pydicom.dcmread(record.file, stop_before_pixels=True)
        assert ds.BodyPartExamined == "LSPINE"
        assert ds.ViewPosition in LATERAL_VIEW_CODES
        assert record.row["view_position"] == ds.ViewPosition
        # Anterior on the image left, feet down.
        assert list(ds.PatientOrientation) == ["P", "F"]
        if ds.Modality == "DX":
            (view,) = ds.ViewCodeSequence
            assert (view.CodeValue, view.CodingSchemeDesignator) == (
                LATERAL_VIEW_CODES[ds.ViewPosition],
                "SCT",
            )
    assert {record.row["modality"] for record in lateral_cohort} == {"CR", "DX"}


def test_lateral_table_has_the_frontal_lumbar_truth_columns(
    lateral_cohort: list[PhantomRecord], lumbar_cohort: list[PhantomRecord]
) -> None:
    assert set(lateral_cohort[0].row) == set(lumbar_cohort[0].row)
    for record in lateral_cohort:
        assert record.part is Part.LUMBAR_LATERAL
        assert record.row["expected_route"] == "lumbar_lateral"
        assert set(record.corners) == set(VERTEBRAE)
        assert record.evaluable == (record.hard_case.value == "none")


def test_bodies_run_down_a_lordotic_curve(lateral_cohort: list[PhantomRecord]) -> None:
    for record in lateral_cohort:
        centres = np.array([record.corners[name].mean(0) for name in VERTEBRAE])
        assert list(centres[:, 1]) == sorted(centres[:, 1])
        # Lordosis: L3 lies in front of (left of) the straight line from T12 to L5.
        t12, l3, l5 = centres[0], centres[VERTEBRAE.index("L3")], centres[-1]
        along = (l3[1] - t12[1]) / (l5[1] - t12[1])
        assert l3[0] < t12[0] + along * (l5[0] - t12[0]), record.file.name


def test_each_body_is_brighter_than_the_soft_tissue_in_front(
    lateral_cohort: list[PhantomRecord],
) -> None:
    checked = 0
    for record in lateral_cohort:
        if record.hard_case.value != "none":
            continue
        pixels = display_pixels(record.file)
        for name in VERTEBRAE:
            inside = polygon_mask(pixels.shape, record.corners[name])
            front = polygon_mask(pixels.shape, _anterior_of(record.corners[name]))
            assert pixels[inside].mean() > pixels[front & ~inside].mean(), (record.file.name, name)
            checked += 1
    assert checked >= 5 * 3


@pytest.mark.slow
def test_body_contrast_against_the_soft_tissue_in_front_carries_the_density_signal(
    tmp_path, record_property
) -> None:
    records = read_cohort(make_cohort(Part.LUMBAR_LATERAL, 40, tmp_path, seed=9002, size=320))
    contrast, bmd = [], []
    for record in records:
        pixels = display_pixels(record.file)
        inside = [polygon_mask(pixels.shape, record.corners[n]) for n in ("L1", "L2", "L3", "L4")]
        front = [
            polygon_mask(pixels.shape, _anterior_of(record.corners[n]))
            for n in ("L1", "L2", "L3", "L4")
        ]
        contrast.append(
            np.mean([pixels[i].mean() - pixels[f & ~i].mean() for i, f in zip(inside, front)])
        )
        bmd.append(record.bmd["bmd_l1_l4"])
    r = pearson(contrast, bmd)
    record_property("r_lateral_contrast", round(r, 3))
    print(f"r(L1-L4 body minus soft tissue in front, L1-L4 BMD) on lateral films = {r:.3f}")
    assert 0.25 < r < 0.95
