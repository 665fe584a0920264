"""The report opens offline in headless Chromium: every figure loads and every section is there.

The screenshot is kept under the test's tmp path and, when ``OSTEONODE_TEST_ARTIFACTS`` is set,
copied to ``test-artifacts/`` at the repository root for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from osteonode.bone import Sex
from osteonode.evaluate.predictions import Prediction, Status, write_predictions
from osteonode.evaluate.report import ValidationSettings, validate_predictions_file

CHROMIUM = shutil.which("chromium")
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("flow", "characteristics", "regression", "classification", "roc", "subgroups")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")


def _chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def _cohort() -> list[Prediction]:
    rng = np.random.default_rng(21)
    categories = ("normal", "low_bone_mass", "osteoporosis")
    rows = [Prediction(id="excluded-1", status=Status.EXCLUDED, exclusion_reason="implant over L3")]
    for index in range(100):
        truth_bmd = float(rng.uniform(0.55, 1.25))
        predicted_bmd = truth_bmd + float(rng.normal(0.0, 0.06))
        truth = categories[0 if truth_bmd > 0.95 else 1 if truth_bmd > 0.75 else 2]
        predicted = categories[0 if predicted_bmd > 0.95 else 1 if predicted_bmd > 0.75 else 2]
        rows.append(Prediction(
            id=f"2.25.{index}", sex=(Sex.FEMALE, Sex.MALE)[index % 2], age=float(45 + index % 45),
            truth_category=truth, predicted_category=predicted,
            score=float(np.clip(1.5 - 1.3 * predicted_bmd, 0, 1)), truth_bmd=truth_bmd,
            predicted_bmd=predicted_bmd, model="lumbar-demo", model_version="0.3.1", synthetic=True,
        ))
    return rows


def test_report_opens_offline_with_every_image_loaded(tmp_path: Path) -> None:
    predictions = write_predictions(_cohort(), tmp_path / "predictions.csv")
    files = validate_predictions_file(predictions, tmp_path / "report", ValidationSettings(n_resamples=200))
    url = files.html.resolve().as_uri()

    dom = _chromium(tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", url).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    assert total is not None and loaded is not None, body.group(0)
    # Scatter, Bland-Altman, confusion matrix, ROC and precision-recall.
    assert int(total.group(1)) == 5
    assert loaded.group(1) == total.group(1)
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom

    screenshot = tmp_path / "report.png"
    _chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1280,4000", url)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("OSTEONODE_TEST_ARTIFACTS"):
        artifacts = REPOSITORY_ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, artifacts / "validation-report.png")


def test_the_pages_image_check_notices_a_broken_image(tmp_path: Path) -> None:
    rows = [Prediction(id=f"a{index}", truth_category=category, predicted_category=category)
            for index, category in enumerate(("normal", "low_bone_mass", "osteoporosis") * 3)]
    predictions = write_predictions(rows, tmp_path / "predictions.csv")
    files = validate_predictions_file(predictions, tmp_path / "report")
    page = files.html.read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,AAAA", page))

    dom = _chromium(tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", broken.as_uri()).stdout
    assert 'data-images-total="1"' in dom and 'data-images-loaded="0"' in dom


PDFTOTEXT = shutil.which("pdftotext")
#: A4 width less the report's 12 mm print margins, in CSS pixels (96 per inch).
A4_PRINTABLE_WIDTH_PX = round((210 - 2 * 12) / 25.4 * 96)


@pytest.mark.skipif(PDFTOTEXT is None, reason="Debian package poppler-utils is not installed")
def test_every_printed_page_names_the_model_and_no_table_is_wider_than_the_page(
    tmp_path: Path,
) -> None:
    predictions = write_predictions(_cohort(), tmp_path / "predictions.csv")
    files = validate_predictions_file(predictions, tmp_path / "report", ValidationSettings(n_resamples=200))
    url = files.html.resolve().as_uri()

    pdf = tmp_path / "report.pdf"
    _chromium(tmp_path / "profile-pdf", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url)
    text = subprocess.run([str(PDFTOTEXT), "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    pages = [page for page in text.split("\f") if page.strip()]
    assert len(pages) >= 3
    for number, page in enumerate(pages, start=1):
        assert "lumbar-demo 0.3.1" in page and "SYNTHETIC" in page, f"page {number}: {page[:300]}"
    if os.environ.get("OSTEONODE_TEST_ARTIFACTS"):
        artifacts = REPOSITORY_ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copyfile(pdf, artifacts / "validation-report.pdf")

    dom = _chromium(tmp_path / "profile-narrow", "--virtual-time-budget=5000",
                    f"--window-size={A4_PRINTABLE_WIDTH_PX},2000", "--dump-dom", url).stdout
    assert 'data-tables-too-wide="0"' in dom, re.search(r"<body[^>]*>", dom)
