"""Fixtures for the report tests: the hand-made cases, built once, and the real dicom tools."""

from __future__ import annotations

from pathlib import Path

import pytest
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
