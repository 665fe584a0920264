"""What the radiologist sees, in a real viewer: OHIF opens a study the node reported on and draws
the SR's regions with its values on the film; the Secondary Captures leave the film uncovered.

Screenshots and capture pictures are kept under ``test-artifacts/viewer/``.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from chromium import Chromium
from fixtures.validators import dciodvfy_errors, write
from PIL import Image
from pydicom.dataset import Dataset
from viewer_cases import PARTS, Delivered, Reported

from osteonode.imaging.overlay import blend_heatmap
from osteonode.imaging.pixels import display_window
from osteonode.peers.ohif import OhifViewer
from osteonode.reports.capture import draw_outlines
from osteonode.reports.sr import OVERALL_TRACKING_IDENTIFIER

pytestmark = [pytest.mark.slow, pytest.mark.orthanc]

#: How long OHIF may take to show a study in headless Chromium on a busy 2-core machine.
VIEWER_TIMEOUT_S = 120
#: The browser window: a full-HD desktop display. OHIF writes a region's label from the region's
#: right edge onwards, so in a window much narrower (the harness's 1400 x 900) the labels of the
#: femur crop on the film's right run off the viewport.
WINDOW = (1920, 1080)
#: OHIF's question when it could turn the report's regions into its own measurement tools.
HYDRATION_PROMPT = "Do you want to continue tracking measurements for this study?"

_DRAWN_GROUPS = "[...document.querySelectorAll('svg.svg-layer g[data-annotation-uid]')]"
_PROMPT_SHOWN = f"document.body.innerText.includes({HYDRATION_PROMPT!r})"


def _groups(report: Dataset) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    document = hd.sr.Comprehensive3DSR.from_dataset(report, copy=True)
    return list(document.content.get_planar_roi_measurement_groups())


def _expected_labels(item: Delivered) -> list[str]:
    """The measurement labels OHIF writes for the SR: concept meaning, value to 2 decimals, unit."""
    labels = []
    for group in _groups(item.report):
        for measurement in group.get_measurements():
            labels.append(
                f"{measurement.name.meaning}: {float(measurement.value):.2f} {measurement.unit.value}"
            )
    return labels


def _tracking_uids(item: Delivered) -> set[str]:
    return {str(group.tracking_uid) for group in _groups(item.report)}


def _drawn(browser: Chromium) -> tuple[set[str], str, int]:
    """The tracking UIDs OHIF drew, the text of their labels, and the number of outlines."""
    uids = set(browser.evaluate(f"{_DRAWN_GROUPS}.map(g => g.getAttribute('data-annotation-uid'))"))
    text = browser.evaluate(
        f"{_DRAWN_GROUPS}.flatMap(g => [...g.querySelectorAll('text')])"
        ".map(t => [...t.querySelectorAll('tspan')].map(s => s.textContent).join('\\n'))"
        ".join('\\n')"
    )
    outlines = browser.evaluate("document.querySelectorAll('svg.svg-layer polyline').length")
    return uids, text, outlines


def _whole_film_uid(item: Delivered) -> str:
    """The Tracking UID of the groups outlined as the whole film (the film's result)."""
    (uid,) = {
        str(group.tracking_uid)
        for group in _groups(item.report)
        if group.tracking_identifier == OVERALL_TRACKING_IDENTIFIER
    }
    return uid


def _labels_cut_off(browser: Chromium, region_uids: set[str]) -> list[str]:
    """The label lines of these regions that do not lie wholly inside the viewport."""
    return list(
        browser.evaluate(
            "(() => { const pane = document.querySelector('[data-cy=\"viewport-pane\"]')"
            ".getBoundingClientRect();"
            f" const uids = {sorted(region_uids)!r};"
            f" return {_DRAWN_GROUPS}"
            ".filter(g => uids.includes(g.getAttribute('data-annotation-uid')))"
            ".flatMap(g => [...g.querySelectorAll('tspan')])"
            ".filter(s => { const r = s.getBoundingClientRect();"
            " return r.left < pane.left || r.right > pane.right"
            " || r.top < pane.top || r.bottom > pane.bottom; })"
            ".map(s => s.textContent); })()"
        )
    )


def _answer_no(browser: Chromium) -> None:
    browser.evaluate(
        "[...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'No').click()"
    )


@pytest.mark.parametrize("part", PARTS)
def test_ohif_draws_the_delivered_reports_regions_and_values_on_the_film(
    delivered: dict[str, Delivered], viewer: OhifViewer, artifacts: Path, tmp_path: Path, part: str
) -> None:
    """The node's SR, as Orthanc received it, opened in OHIF's basic viewer.

    OHIF draws each tracked region of the SR (groups that share a Tracking UID are one region)
    with its values as labels; the labels of outlined findings lie inside the viewport. (OHIF
    writes a region's label at its right edge, so the whole film's label starts beside the film
    and a viewport not much wider than the film, as a portrait reading monitor, cuts it off; the
    SR cannot place it, short of a private CORNERSTONEJS position code.)
    OHIF then asks whether to "continue tracking", that is to turn the SR into its own editable
    measurement tools (hydration); the radiologist answers No, and the report's values stay on
    the film.

    Why OHIF's measurement panel stays empty, and is not asserted. OHIF 3.13.2 lists only the
    measurements of its measurement service, and an SR enters it only by hydration:
    ``@cornerstonejs/adapters``' ``MeasurementReport.generateToolState`` maps each measurement
    group to a Cornerstone tool, by a tracking identifier ``Cornerstone3DTools@^0.1.0:<Tool>`` or
    by its graphic (an Image Region SCOORD, DCM 111030, POLYLINE of 4 or 5 points: RectangleROI;
    POINT: Probe), and takes the outline from the first NUM's INFERRED FROM SCOORD whenever the
    group has a NUM (the TID 300 style of OHIF's own SRs). The node's groups are TID 1410, whose
    outline belongs to the group and whose measurements may carry no coordinates (highdicom
    refuses them), so every group with a value fails ("No spatial coordinates group found") and is
    dropped. A group without values becomes a RectangleROI whose panel entry shows the statistics
    Cornerstone computes from the stored pixels (area, mean, maximum), labelled by the group's
    first Comment: OHIF never puts an SR's concept names or values in the panel (a label comes only
    from a Comment or a private ``CORNERSTONEJS`` free-text code). Hydrating also replaces the
    drawn labels with those statistics. Listing the node's BMD, T-scores and certainties there
    would take tool names as tracking identifiers and coordinates TID 1410 forbids, and would
    still show OHIF's pixel statistics instead of them.
    """
    item = delivered[part]
    url = viewer.study_url(str(item.report.StudyInstanceUID), str(item.report.SeriesInstanceUID))
    labels = _expected_labels(item)
    regions = _tracking_uids(item)
    assert labels, "the report has measurements to show"
    with Chromium(tmp_path / "profile", size=WINDOW) as browser:
        browser.open(url)
        try:
            browser.wait_for(
                f"{_DRAWN_GROUPS}.length >= {len(regions)}",
                VIEWER_TIMEOUT_S,
                "OHIF drawing every region of the report",
            )
        finally:
            browser.screenshot(artifacts / f"ohif-{part}.png")
        drawn_uids, label_text, outlines = _drawn(browser)
        cut_off = _labels_cut_off(browser, regions - {_whole_film_uid(item)})
        browser.wait_for(_PROMPT_SHOWN, VIEWER_TIMEOUT_S, "OHIF asking to track the report")
        _answer_no(browser)
        browser.wait_for(f"!({_PROMPT_SHOWN})", 30, "OHIF taking the answer No")
        browser.screenshot(artifacts / f"ohif-{part}-declined.png")
        kept_uids, kept_text, _ = _drawn(browser)
        errors = [line for line in browser.console if "Error Boundary" in line]
    # Every region of the SR is drawn, outlined on the film and labelled with its values ...
    assert drawn_uids == regions
    assert outlines >= len(regions)
    for label in labels:
        assert label in label_text
    assert cut_off == []
    # ... and stays so when the radiologist declines to turn the report into OHIF's own tools.
    assert kept_uids == regions
    assert kept_text == label_text
    assert errors == []


@pytest.mark.parametrize("part", PARTS)
def test_the_demo_captures_leave_the_film_uncovered(
    reported: list[Reported], artifacts: Path, part: str
) -> None:
    items = [item for item in reported if item.part == part]
    for item in items:
        picture = item.capture.pixel_array
        Image.fromarray(picture).save(artifacts / f"capture-{item.film.stem}.png")
        rows, columns = item.radiograph.shape
        film = blend_heatmap(
            draw_outlines(display_window(item.radiograph), item.result.findings),
            item.result.heatmap,
        )
        # The film in the capture is exactly the windowed film with its outlines and heat-map:
        # no text, legend or banner covers any of it.
        np.testing.assert_array_equal(picture[:rows, :columns], film)
        assert picture.shape[0] > rows


def test_the_demo_reports_and_captures_pass_dciodvfy(
    reported: list[Reported], tmp_path: Path
) -> None:
    for item in reported:
        for kind, dataset in (("sr", item.report), ("sc", item.capture)):
            path = write(dataset, tmp_path / f"{item.film.stem}-{kind}.dcm")
            assert dciodvfy_errors(path) == [], path.name
