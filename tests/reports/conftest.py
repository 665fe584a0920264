"""Fixtures for the report tests: the hand-made cases, built once, and the real dicom tools."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from reports_cases import CASES, Case


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Every pipeline shape, with its source file written and decoded."""
    directory = tmp_path_factory.mktemp("sources")
    return {name: make(directory) for name, make in CASES.items()}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/reports/ in the repository (git-ignored): pictures kept for a reader."""
    directory = Path(__file__).resolve().parents[2] / "test-artifacts" / "reports"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def tool(name: str) -> str:
    """The path of a dicom3tools / dcmtk program, or skip when it is genuinely not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def write(ds: Dataset, path: Path) -> Path:
    """Write `ds` as a DICOM file."""
    ds.save_as(path, enforce_file_format=True)
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dciodvfy starts with "Error" for a file."""
    completed = subprocess.run(
        [tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (completed.stdout + completed.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def rendered_text(path: Path) -> str:
    """dsr2html's rendering of an SR as plain text, whitespace collapsed to single spaces."""
    completed = subprocess.run(
        [tool("dsr2html"), str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    text = html.unescape(re.sub(r"<[^>]+>", " ", completed.stdout))
    return re.sub(r"\s+", " ", text)
