"""Chest results become a Structured Report and a Secondary Capture that dciodvfy accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.validators import dciodvfy_errors
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from osteonode.imaging.pixels import load_radiograph
from osteonode.pipelines.chest import Stage
from osteonode.reports import DeviceInfo, build_secondary_capture, build_structured_report

DEVICE = DeviceInfo.for_node("osteonode-chest-test")


def flat_text(ds: Dataset) -> str:
    """Every text and code meaning in a dataset, nested sequences included."""
    values: list[str] = []

    def visit(dataset: Dataset, element: DataElement) -> None:
        if element.VR in ("UT", "LO", "ST", "LT", "SH") and element.value:
            values.append(str(element.value))

    ds.walk(visit)
    return "\n".join(values)


@pytest.mark.parametrize("stage1_logit", [4.0, -4.0], ids=["osteoporosis", "stage-2-ran"])
def test_evaluable_chest_result_passes_dciodvfy_as_sr_and_sc(
    make_pipeline, chest_dataset: Dataset, tmp_path: Path, stage1_logit: float
) -> None:
    radiograph = load_radiograph(chest_dataset)
    result = make_pipeline(logits={Stage.OSTEOPOROSIS: stage1_logit}).run(radiograph)
    sr = build_structured_report(result, radiograph.header, device=DEVICE)
    sc = build_secondary_capture(result, radiograph, device=DEVICE)
    for name, ds in (("sr.dcm", sr), ("sc.dcm", sc)):
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name
    text = flat_text(sr)
    assert "Stage 1: osteoporosis" in text and "Stage 2: low bone mass" in text
    assert "decision threshold: 0.5" in text
    if stage1_logit > 0:
        assert "not run: Stage 1: osteoporosis decided" in text


def test_not_evaluable_chest_result_passes_dciodvfy(
    make_pipeline, chest_dataset: Dataset, tmp_path: Path
) -> None:
    chest_dataset.ViewPosition = "LL"
    radiograph = load_radiograph(chest_dataset)
    result = make_pipeline().run(radiograph)
    assert not result.evaluable
    for name, ds in (
        ("sr.dcm", build_structured_report(result, radiograph.header, device=DEVICE)),
        ("sc.dcm", build_secondary_capture(result, radiograph, device=DEVICE)),
    ):
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name
