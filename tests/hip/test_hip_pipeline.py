"""The hip pipeline's pieces and its Result, with a small randomly initialised model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hip_cases import side
from pydicom.dataset import Dataset

from osteonode.bone import Laterality
from osteonode.config import IntendedUsePolicy, PipelineSettings
from osteonode.imaging import load_radiograph
from osteonode.nets.femur_locator import SideState
from osteonode.phantoms import PhantomRecord
from osteonode.pipelines.base import Category, FindingSite, OutsideIntendedUse
from osteonode.pipelines.hip import HipGeometry, HipPipeline
from osteonode.pipelines.regions import (
    _sides_from_image_laterality,
    crop_window,
    image_side_lateralities,
)
from osteonode.zoo import load_model


def _pipeline(model_dir: Path, **settings: object) -> HipPipeline:
    return HipPipeline.from_model(load_model(model_dir, device="cpu"), PipelineSettings(**settings))


def _header(orientation: list[str] | None) -> Dataset:
    ds = Dataset()
    if orientation is not None:
        ds.PatientOrientation = orientation
    return ds


@pytest.mark.parametrize(
    ("orientation", "image_left"),
    [
        (["L", "F"], Laterality.RIGHT),
        (["R", "F"], Laterality.LEFT),
        (["LH", "F"], Laterality.RIGHT),
    ],
)
def test_patient_orientation_says_which_patient_side_is_on_the_image_left(
    orientation, image_left
) -> None:
    sides, assumption = image_side_lateralities(_header(orientation))
    assert sides[0] is image_left and sides[1] is not image_left
    assert assumption is None


def test_without_patient_orientation_the_standard_ap_display_is_assumed_and_said() -> None:
    sides, assumption = image_side_lateralities(_header(None))
    assert sides == (Laterality.RIGHT, Laterality.LEFT)
    assert assumption is not None and "assumed" in assumption


def test_crop_window_is_clipped_to_the_film_and_none_when_off_it() -> None:
    window = crop_window((-10.0, 5.0, 30.0, 40.0), (50, 60))
    assert (window.row0, window.row1, window.column0, window.column1) == (5, 41, 0, 31)
    assert crop_window((70.0, 5.0, 90.0, 40.0), (50, 60)) is None


def test_geometry_refuses_sizes_the_networks_cannot_take() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        HipGeometry(locator_shape=(100, 128), crop_size=64)


def test_a_man_is_outside_the_intended_use_and_skipped_under_the_skip_policy(
    hip_records: list[PhantomRecord], random_model_dir: Path
) -> None:
    radiograph = load_radiograph(_with(hip_records[0].file, PatientSex="M", PatientAge="070Y"))
    outside, _ = _pipeline(random_model_dir).intended_use(radiograph)
    assert outside == ["male patient: the method is intended for women aged 55 or over"]
    with pytest.raises(OutsideIntendedUse, match="women aged 55"):
        _pipeline(random_model_dir, outside_intended_use=IntendedUsePolicy.SKIP).run(radiograph)
    result = _pipeline(random_model_dir).run(radiograph)
    assert any("male patient" in note for note in result.notes)


def test_a_woman_under_55_gets_a_note_and_one_over_55_none(
    hip_records: list[PhantomRecord], random_model_dir: Path
) -> None:
    pipeline = _pipeline(random_model_dir)
    young = load_radiograph(_with(hip_records[0].file, PatientSex="F", PatientAge="052Y"))
    assert pipeline.intended_use(young)[0] == [
        "patient aged 52: the method is intended for women aged 55 or over"
    ]
    older = load_radiograph(_with(hip_records[0].file, PatientSex="F", PatientAge="071Y"))
    assert pipeline.intended_use(older)[0] == []


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"PatientSex": ""}, "patient sex not recorded"),
        ({"PatientAge": "", "PatientBirthDate": ""}, "patient age unknown"),
    ],
)
def test_unrecorded_sex_or_age_is_analysed_with_a_note_or_skipped_by_policy(
    hip_records: list[PhantomRecord], random_model_dir: Path, edits: dict[str, str], expected: str
) -> None:
    radiograph = load_radiograph(
        _with(hip_records[0].file, **{"PatientSex": "F", "PatientAge": "070Y", **edits})
    )
    result = _pipeline(random_model_dir).run(radiograph)
    assert any(note.startswith(expected) for note in result.notes), result.notes
    with pytest.raises(OutsideIntendedUse, match=expected):
        _pipeline(random_model_dir, outside_intended_use=IntendedUsePolicy.SKIP).run(radiograph)


def test_a_lateral_hip_film_is_not_evaluable_and_says_why(
    hip_records: list[PhantomRecord], random_model_dir: Path
) -> None:
    radiograph = load_radiograph(_with(hip_records[0].file, ViewPosition="LL"))
    result = _pipeline(random_model_dir).run(radiograph)
    assert not result.evaluable and result.findings == ()
    assert result.reason == "lateral view; this method reads AP/PA films"


def test_result_has_one_finding_per_side_with_crop_outline_and_heatmap(
    hip_records: list[PhantomRecord], random_model_dir: Path
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    result = _pipeline(random_model_dir).run(radiograph)
    assert [f.name for f in result.findings] == ["Right hip", "Left hip"]
    assert [f.laterality for f in result.findings] == [Laterality.RIGHT, Laterality.LEFT]
    assert all(f.site is FindingSite.HIP for f in result.findings)
    assert any(note.startswith("femur localisation confidence") for note in result.notes)
    if result.evaluable:
        assert result.heatmap is not None and result.heatmap.shape == radiograph.shape
        assert 0.0 <= float(result.heatmap.min()) and float(result.heatmap.max()) <= 1.0
        measured = [f for f in result.findings if f.evaluable]
        assert all(f.threshold == 0.5 and f.probability is not None for f in measured)
        worst = max(f.probability for f in measured)
        expected = Category.OSTEOPOROSIS if worst >= 0.5 else Category.NOT_OSTEOPOROSIS
        assert result.category is expected


def test_a_film_with_no_evaluable_side_is_not_evaluable_and_says_why(
    hip_records: list[PhantomRecord], fixed_pipeline
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    locations = (
        side(Laterality.RIGHT, (20.0, 60.0, 90.0, 150.0), "hip prosthesis"),
        side(Laterality.LEFT, (230.0, 60.0, 300.0, 150.0), "femur cut off by the field of view"),
    )
    result = fixed_pipeline(locations).run(radiograph)
    assert not result.evaluable and result.category is None
    assert "hip prosthesis" in result.reason and "cut off" in result.reason
    assert [f.evaluable for f in result.findings] == [False, False]
    assert result.findings[0].region is not None  # the prosthesis side's crop is still outlined


def test_the_film_answer_is_the_worse_side(
    hip_records: list[PhantomRecord], fixed_pipeline
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    locations = (
        side(Laterality.RIGHT, (20.0, 60.0, 90.0, 150.0)),
        side(Laterality.LEFT, (160.0, 60.0, 230.0, 150.0)),
    )
    low = fixed_pipeline(locations, threshold=0.999).run(radiograph)
    assert low.category is Category.NOT_OSTEOPOROSIS
    assert all(
        f.osteoporosis_present is False and f.category is Category.NOT_OSTEOPOROSIS
        for f in low.findings
    )
    high = fixed_pipeline(locations, threshold=0.001).run(radiograph)
    assert high.category is Category.OSTEOPOROSIS
    assert all(
        f.osteoporosis_present and f.category is Category.OSTEOPOROSIS for f in high.findings
    )
    # The crop outline is the box in SCOORD (corner-origin) coordinates.
    assert high.findings[0].region.points[0] == (20.5, 60.5)


def test_one_osteoporotic_side_makes_the_film_osteoporotic_and_the_other_side_stays_not(
    hip_records: list[PhantomRecord], fixed_pipeline
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    locations = (
        side(Laterality.RIGHT, (20.0, 60.0, 90.0, 150.0)),
        side(Laterality.LEFT, (160.0, 60.0, 230.0, 150.0)),
    )
    probe = fixed_pipeline(locations).run(radiograph)
    probabilities = [f.probability for f in probe.findings]
    assert probabilities[0] != probabilities[1]
    # A threshold between the two sides: the higher one is osteoporotic, the lower one is not.
    result = fixed_pipeline(locations, threshold=sum(probabilities) / 2).run(radiograph)
    by_probability = sorted(result.findings, key=lambda f: f.probability)
    assert [f.category for f in by_probability] == [Category.NOT_OSTEOPOROSIS, Category.OSTEOPOROSIS]
    assert result.category is Category.OSTEOPOROSIS


def test_heatmap_stays_inside_the_evaluable_crops(
    hip_records: list[PhantomRecord], fixed_pipeline
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    locations = (
        side(Laterality.RIGHT, (20.0, 60.0, 90.0, 150.0)),
        side(Laterality.LEFT, (160.0, 60.0, 230.0, 150.0), "hip prosthesis"),
    )
    result = fixed_pipeline(locations, threshold=0.001).run(radiograph)
    outside = np.ones(radiograph.shape, bool)
    outside[60:151, 20:91] = False
    assert float(result.heatmap[outside].max()) == 0.0


def _with(path: Path, **attributes: str) -> Dataset:
    import pydicom

    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_without_orientation_image_laterality_names_the_single_femur() -> None:
    sides = [
        (SideState.OUTSIDE_FIELD, side(Laterality.RIGHT, (20.0, 60.0, 90.0, 150.0), "cut off")),
        (SideState.EVALUABLE, side(Laterality.LEFT, (160.0, 60.0, 230.0, 150.0))),
    ]
    relabelled, note = _sides_from_image_laterality(sides, "R", "assumed")
    assert [region.laterality for _, region in relabelled] == [Laterality.LEFT, Laterality.RIGHT]
    assert [region.name for _, region in relabelled] == ["Left hip", "Right hip"]
    assert "Image Laterality R" in note
    unchanged, note = _sides_from_image_laterality(sides, "B", "assumed")
    assert unchanged == sides and note == "assumed"
