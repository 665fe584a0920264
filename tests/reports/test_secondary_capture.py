"""The Secondary Capture: valid, the film untouched at the top left, the answer in a margin below."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures.validators import dciodvfy_errors, write
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage
from reports_cases import CASES, COLUMNS, DEVICE, ROWS, Case

from osteonode.imaging.overlay import MARGIN_BACKGROUND, MIN_CAPTURE_WIDTH, TEXT_COLOUR
from osteonode.imaging.pixels import display_window
from osteonode.pipelines.base import Finding, FindingSite, Region
from osteonode.reports import ReportError, build_secondary_capture, build_structured_report
from osteonode.reports.capture import EXCLUDED_OUTLINE, INCLUDED_OUTLINE, draw_outlines


@pytest.fixture(scope="module")
def captures(
    cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> dict[str, Path]:
    """Every case's capture as a file; each is also kept as a PNG under test-artifacts/."""
    directory = tmp_path_factory.mktemp("sc")
    written = {}
    for name, case in cases.items():
        capture = build_secondary_capture(case.result, case.radiograph, device=DEVICE)
        written[name] = write(capture, directory / f"{name}.dcm")
        Image.fromarray(capture.pixel_array).save(artifacts / f"capture-{name}.png")
    return written


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_capture_passes_dciodvfy(captures: dict[str, Path], name: str) -> None:
    assert dciodvfy_errors(captures[name]) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_capture_is_an_rgb_image_of_the_source_in_its_study(
    cases: dict[str, Case], captures: dict[str, Path], name: str
) -> None:
    source = cases[name].source
    capture = pydicom.dcmread(captures[name])
    assert capture.SOPClassUID == SecondaryCaptureImageStorage
    # The film keeps its size; a margin is added below it, and a narrow film is widened.
    assert capture.Rows > ROWS and capture.Columns == max(COLUMNS, MIN_CAPTURE_WIDTH)
    assert capture.PhotometricInterpretation == "RGB" and capture.SamplesPerPixel == 3
    assert capture.BitsAllocated == 8
    assert capture.BurnedInAnnotation == "YES"
    (reference,) = capture.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert capture.PatientID == source.PatientID
    assert capture.PatientName == source.PatientName
    assert capture.StudyInstanceUID == source.StudyInstanceUID
    assert capture.AccessionNumber == source.AccessionNumber
    assert capture.SeriesInstanceUID != source.SeriesInstanceUID


def test_orientation_and_pixel_spacing_are_carried_over_or_left_out(
    captures: dict[str, Path],
) -> None:
    with_header = pydicom.dcmread(captures["lumbar"])
    assert list(with_header.PatientOrientation) == ["L", "F"]
    assert [float(v) for v in with_header.PixelSpacing] == [0.14, 0.14]
    without = pydicom.dcmread(captures["chest"])
    assert "PatientOrientation" in without and not without.PatientOrientation
    assert "PixelSpacing" not in without


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_answer_is_written_in_a_margin_below_the_film(
    captures: dict[str, Path], name: str
) -> None:
    pixels = pydicom.dcmread(captures[name]).pixel_array
    margin = pixels[ROWS:]
    background = np.all(margin == MARGIN_BACKGROUND, axis=-1).mean()
    text = np.all(margin >= 0.6 * np.asarray(TEXT_COLOUR), axis=-1).sum()  # anti-aliased glyphs
    assert background > 0.5 and text > 200
    # Beside a film narrower than the picture there is only the dark background.
    assert np.all(pixels[:ROWS, COLUMNS:] == MARGIN_BACKGROUND)


def test_no_text_or_legend_covers_the_film(cases: dict[str, Case], captures: dict[str, Path]) -> None:
    # The chest case has neither outlines nor a heat-map: its film must be the windowed source,
    # pixel for pixel, so nothing was drawn over it.
    film = pydicom.dcmread(captures["chest"]).pixel_array[:ROWS, :COLUMNS]
    grey = display_window(cases["chest"].radiograph)
    np.testing.assert_array_equal(film, np.repeat(grey[..., None], 3, axis=2))


def test_the_legend_says_what_the_colours_mean_only_when_colours_are_shown(
    captures: dict[str, Path],
) -> None:
    def has_colour_bar(name: str) -> bool:
        margin = pydicom.dcmread(captures[name]).pixel_array[ROWS:].astype(int)
        return bool(((margin.max(axis=-1) - margin.min(axis=-1)) > 60).sum() > 100)

    assert has_colour_bar("lumbar") and has_colour_bar("hip")
    assert not has_colour_bar("chest") and not has_colour_bar("not_evaluable")


def test_capture_has_a_series_date_so_pacs_file_it_under_a_day(captures: dict[str, Path]) -> None:
    for path in captures.values():
        capture = pydicom.dcmread(path)
        assert capture.SeriesDate and capture.SeriesTime
        assert capture.SeriesDate == capture.ContentDate


def test_capture_laterality_names_the_one_side_analysed_else_stays_empty(
    cases: dict[str, Case],
) -> None:
    hip = cases["hip"]
    right_only = dataclasses.replace(hip.result, findings=hip.result.findings[:1])
    assert build_secondary_capture(right_only, hip.radiograph, device=DEVICE).Laterality == "R"
    both = build_secondary_capture(hip.result, hip.radiograph, device=DEVICE)
    assert "Laterality" in both and not both.Laterality  # Type 2: present, side unknown


def test_heat_map_colours_the_hot_spot_and_its_absence_leaves_the_film_grey(
    cases: dict[str, Case], captures: dict[str, Path]
) -> None:
    hip = pydicom.dcmread(captures["hip"]).pixel_array.astype(int)
    hot = hip[220, 65]
    assert hot.max() - hot.min() > 40  # coloured, not grey
    chest = pydicom.dcmread(captures["chest"]).pixel_array.astype(int)
    film = chest[:ROWS, :COLUMNS]
    assert np.all(film[..., 0] == film[..., 1]) and np.all(film[..., 1] == film[..., 2])


def test_excluded_sites_are_outlined_black_and_included_white() -> None:
    grey = np.full((100, 100), 128, np.uint8)
    findings = (
        Finding("In", FindingSite.L1, region=Region.box(10, 10, 40, 40)),
        Finding(
            "Out",
            FindingSite.L2,
            included=False,
            reason="artefact",
            region=Region.box(60, 60, 90, 90),
        ),
        Finding("None", FindingSite.L3),
    )
    drawn = draw_outlines(grey, findings)
    assert drawn[25, 10] == INCLUDED_OUTLINE and drawn[75, 90] == EXCLUDED_OUTLINE
    assert drawn[50, 50] == 128 and grey[25, 10] == 128  # inside untouched, input not modified


def test_capture_uids_are_stable_and_differ_from_the_report(cases: dict[str, Case]) -> None:
    case = cases["hip"]
    first = build_secondary_capture(case.result, case.radiograph, device=DEVICE)
    again = build_secondary_capture(case.result, case.radiograph, device=DEVICE)
    report = build_structured_report(case.result, case.source, device=DEVICE)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
        again.SOPInstanceUID,
        again.SeriesInstanceUID,
    )
    assert first.SOPInstanceUID != report.SOPInstanceUID
    assert first.SeriesInstanceUID != report.SeriesInstanceUID


def test_series_description_carries_the_disclaimer(captures: dict[str, Path]) -> None:
    description = pydicom.dcmread(captures["lumbar"]).SeriesDescription
    assert "lumbar-demo 1.2.0" in description and "not for diagnostic use" in description.lower()
    assert "diagnostic" not in pydicom.dcmread(captures["hip"]).SeriesDescription.lower()


def test_a_capture_of_another_image_is_refused(cases: dict[str, Case]) -> None:
    with pytest.raises(ReportError, match="not the image the result describes"):
        build_secondary_capture(cases["lumbar"].result, cases["chest"].radiograph, device=DEVICE)
    with pytest.raises(TypeError, match="Radiograph"):
        build_secondary_capture(cases["lumbar"].result, cases["lumbar"].source, device=DEVICE)  # type: ignore[arg-type]
