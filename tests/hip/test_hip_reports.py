"""Hip results become a Structured Report and a Secondary Capture that dciodvfy accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.validators import dciodvfy_errors
from hip_cases import side
from pydicom.dataset import Dataset

from osteonode.bone import Laterality
from osteonode.imaging import load_radiograph
from osteonode.phantoms import PhantomRecord
from osteonode.pipelines.base import Category, Result
from osteonode.reports import (
    DeviceInfo,
    banner_lines,
    build_secondary_capture,
    build_structured_report,
    codes,
)

DEVICE = DeviceInfo.for_node("osteonode-hip-test")
RIGHT_BOX = (20.0, 60.0, 90.0, 150.0)
LEFT_BOX = (160.0, 60.0, 230.0, 150.0)


def _scoord_items(ds: Dataset) -> list[Dataset]:
    found: list[Dataset] = []

    def visit(dataset: Dataset) -> None:
        for item in dataset.get("ContentSequence", []):
            if item.get("ValueType") == "SCOORD":
                found.append(item)
            visit(item)

    visit(ds)
    return found


def _code_pairs(ds: Dataset) -> list[tuple[str, str]]:
    """(concept name, coded value) of every CODE item in the content tree."""
    found: list[tuple[str, str]] = []
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "CODE":
            found.append(
                (item.ConceptNameCodeSequence[0].CodeValue, item.ConceptCodeSequence[0].CodeValue)
            )
        found += _code_pairs(item)
    return found


def _write_both(result: Result, radiograph, directory: Path) -> Dataset:
    sr = build_structured_report(result, radiograph.header, device=DEVICE)
    sc = build_secondary_capture(result, radiograph, device=DEVICE)
    for name, ds in (("sr.dcm", sr), ("sc.dcm", sc)):
        path = directory / name
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name
    return sr


@pytest.mark.parametrize("threshold", [0.001, 0.999], ids=["osteoporosis", "not-osteoporosis"])
def test_evaluable_hip_result_passes_dciodvfy_with_a_crop_outline_per_side(
    hip_records: list[PhantomRecord], fixed_pipeline, tmp_path: Path, threshold: float
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    locations = (side(Laterality.RIGHT, RIGHT_BOX), side(Laterality.LEFT, LEFT_BOX))
    result = fixed_pipeline(locations, threshold=threshold).run(radiograph)
    sr = _write_both(result, radiograph, tmp_path)
    # The overall result is outlined as the whole film, then one crop outline per side.
    whole_film, *polygons = _scoord_items(sr)
    assert [float(v) for v in whole_film.GraphicData[2:4]] == [radiograph.shape[1], 0.0]
    assert len(polygons) == 2
    # 2-D SCOORD has no POLYGON: a closed outline is a POLYLINE ending where it starts.
    assert all(item.GraphicType == "POLYLINE" for item in polygons)
    assert all(list(item.GraphicData[:2]) == list(item.GraphicData[-2:]) for item in polygons)
    # The right crop's outline, in corner-origin coordinates.
    assert [float(v) for v in polygons[0].GraphicData[:2]] == [20.5, 60.5]


def test_a_hip_without_osteoporosis_reports_osteoporosis_absent_and_no_osteopenia(
    hip_records: list[PhantomRecord], fixed_pipeline, tmp_path: Path
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    locations = (side(Laterality.RIGHT, RIGHT_BOX), side(Laterality.LEFT, LEFT_BOX))
    result = fixed_pipeline(locations, threshold=0.999).run(radiograph)
    assert result.category is Category.NOT_OSTEOPOROSIS
    sr = _write_both(result, radiograph, tmp_path)
    pairs = _code_pairs(sr)
    absent = (codes.OSTEOPOROSIS.value, codes.ABSENT.value)
    assert pairs.count(absent) == 3  # the film and each side
    values = {value for _, value in pairs}
    assert codes.OSTEOPENIA.value not in values and codes.NORMAL.value not in values
    assert codes.CLASSIFICATION.value not in {name for name, _ in pairs}
    lines = banner_lines(result)
    assert lines[0] == "Not osteoporosis"
    assert not any("osteopenia" in line.lower() or "low bone mass" in line.lower() for line in lines)


def test_not_evaluable_hip_result_passes_dciodvfy(
    hip_records: list[PhantomRecord], fixed_pipeline, tmp_path: Path
) -> None:
    radiograph = load_radiograph(hip_records[0].file)
    locations = (
        side(Laterality.RIGHT, RIGHT_BOX, "hip prosthesis"),
        side(Laterality.LEFT, LEFT_BOX, "femur cut off by the field of view"),
    )
    result = fixed_pipeline(locations).run(radiograph)
    assert not result.evaluable
    _write_both(result, radiograph, tmp_path)
