"""The predictions file: what reads back, what is excluded with a reason, what is refused and why."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from osteonode.bone import Laterality, Sex
from osteonode.evaluate.predictions import (
    COLUMNS,
    Prediction,
    PredictionsError,
    Status,
    read_predictions,
    write_predictions,
)

HEADER = "id,sex,age,status,exclusion_reason,truth_category,predicted_category,score,truth_bmd,predicted_bmd"


def _write(tmp_path: Path, *lines: str, name: str = "predictions.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_written_predictions_read_back_unchanged(tmp_path: Path) -> None:
    rows = (
        Prediction(id="1.2.826.0.1.1", sex=Sex.FEMALE, age=67.5, truth_category="osteoporosis",
                   predicted_category="low_bone_mass", score=0.41, score_low_bone_mass=0.8,
                   truth_bmd=0.712, predicted_bmd=0.7534, site="total_hip", side=Laterality.LEFT,
                   model="hip-demo", model_version="0.1.0", synthetic=True),
        Prediction(id="1.2.826.0.1.1", truth_category="not_osteoporosis",
                   predicted_category="osteoporosis", site="total_hip", side=Laterality.RIGHT),
        Prediction(id="/data/film 3.dcm", status=Status.EXCLUDED,
                   exclusion_reason="vertebra L3: not detected, implant"),
    )
    path = write_predictions(rows, tmp_path / "predictions.csv")
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    read = read_predictions(path)
    assert tuple(replace(row, line=None) for row in read) == rows
    assert [row.line for row in read] == [2, 3, 4]


def test_a_minimal_file_from_another_tool_is_all_analysed(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeffID, Truth_Category ,predicted_category,extra",
                  "a, Normal ,osteoporosis,ignored", "b,low_bone_mass,normal,")
    rows = read_predictions(path)
    assert [row.status for row in rows] == [Status.ANALYSED, Status.ANALYSED]
    assert rows[0].truth_category == "normal" and rows[0].sex is Sex.UNKNOWN


@pytest.mark.parametrize(
    ("cell", "sex"),
    [("F", Sex.FEMALE), ("m", Sex.MALE), ("O", Sex.OTHER), ("other", Sex.OTHER), ("", Sex.UNKNOWN)],
)
def test_sex_spellings_are_understood(tmp_path: Path, cell: str, sex: Sex) -> None:
    path = _write(tmp_path, "id,sex,truth_category,predicted_category", f"a,{cell},normal,normal")
    assert read_predictions(path)[0].sex is sex


def test_hip_sides_of_one_film_are_separate_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "id,side,truth_category,predicted_category",
                  "1.2.3,R,osteoporosis,osteoporosis", "1.2.3,left,not_osteoporosis,osteoporosis")
    assert [row.side for row in read_predictions(path)] == [Laterality.RIGHT, Laterality.LEFT]


def test_bmd_outside_the_physical_range_excludes_the_row_with_the_reason(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER,
                  "a,F,70,analysed,,normal,normal,,0.95,0.93",
                  "b,F,71,analysed,,osteoporosis,osteoporosis,,0.6,3.4",
                  "c,M,72,analysed,,normal,normal,,0.05,0.9")
    rows = read_predictions(path)
    assert [row.status for row in rows] == [Status.ANALYSED, Status.EXCLUDED, Status.EXCLUDED]
    assert rows[1].exclusion_reason == "predicted_bmd outside the physical range 0.1-2.5 g/cm2"
    assert rows[2].exclusion_reason == "truth_bmd outside the physical range 0.1-2.5 g/cm2"


def test_an_excluded_row_keeps_its_own_reason(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER, "a,F,70,excluded,lateral view,,,,,")
    (row,) = read_predictions(path)
    assert row.status is Status.EXCLUDED and row.exclusion_reason == "lateral view"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["id,truth_category", "a,normal"], "missing required column(s) ['predicted_category']"),
        (["id,truth_category,predicted_category,score,score", "a,normal,normal,0.1,0.2"],
         "column(s) ['score'] appear more than once"),
        ([HEADER, "a,F,70,analysed,,normal,normal,,,", "a,M,61,analysed,,normal,normal,,,"],
         "line 3: 'a' repeats line 2"),
        ([HEADER, "a,F,70,analysed,,osteopenia,normal,,,"],
         "line 2: truth_category 'osteopenia' is not one of"),
        ([HEADER, "a,F,seventy,analysed,,normal,normal,,,"], "line 2: age 'seventy' is not a number"),
        ([HEADER, "a,F,70,analysed,,normal,normal,,0.9 g/cm2,0.8"],
         "line 2: truth_bmd '0.9 g/cm2' is not a number"),
        ([HEADER, "a,F,70,analysed,,normal,normal,nan,,"], "line 2: score 'nan' is not a finite number"),
        ([HEADER, "a,F,70,analysed,,normal,normal,1.5,,"], "line 2: score must lie within 0-1"),
        ([HEADER, "a,F,170,analysed,,normal,normal,,,"], "line 2: age must lie within 0-130"),
        ([HEADER, "a,X,70,analysed,,normal,normal,,,"], "line 2: sex 'X' is not one of"),
        ([HEADER, "a,F,70,done,,normal,normal,,,"], "line 2: status 'done' is not one of"),
        ([HEADER, "a,F,70,excluded,,,,,,"], "line 2: an excluded row needs an exclusion_reason"),
        ([HEADER, "a,F,70,analysed,,normal,,,,"],
         "line 2: an analysed row needs truth_category and predicted_category"),
        ([HEADER, "a,F,70,analysed,,normal,normal"], "line 2: 7 cells, the header has 10"),
        ([HEADER, ",F,70,analysed,,normal,normal,,,"], "line 2: id must be a non-empty string"),
        ([HEADER], "the file has a header but no rows"),
        ([""], "the file is empty"),
    ],
)
def test_bad_files_are_refused_with_the_line_and_the_reason(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = _write(tmp_path, *lines)
    if lines == [""]:
        path.write_text("")
    with pytest.raises(PredictionsError) as caught:
        read_predictions(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_every_bad_line_is_listed_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER,
                  "a,F,70,analysed,,normal,normal,,,",
                  "b,F,70,analysed,,normal,severe,,,",
                  "c,F,old,analysed,,normal,normal,,,",
                  "a,F,70,analysed,,normal,normal,,,")
    with pytest.raises(PredictionsError) as caught:
        read_predictions(path)
    text = str(caught.value)
    assert "3 bad line(s)" in text
    assert "line 3: predicted_category 'severe'" in text
    assert "line 4: age 'old'" in text
    assert "line 5: 'a' repeats line 2" in text


def test_a_missing_or_binary_file_is_a_predictions_error(tmp_path: Path) -> None:
    with pytest.raises(PredictionsError, match="cannot read the file"):
        read_predictions(tmp_path / "absent.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"id,truth_category,predicted_category\n\xff\xfe\x00bad\n")
    with pytest.raises(PredictionsError, match="cannot read the file"):
        read_predictions(binary)


def test_writing_refuses_repeated_rows(tmp_path: Path) -> None:
    row = Prediction(id="a", truth_category="normal", predicted_category="normal")
    with pytest.raises(ValueError, match="'a' appears more than once"):
        write_predictions([row, row], tmp_path / "predictions.csv")
    assert not (tmp_path / "predictions.csv").exists()
