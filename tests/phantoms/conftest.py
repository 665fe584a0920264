"""Phantom cohorts made once per test session, at small sizes so the area stays fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from osteonode.phantoms import Part, PhantomRecord, make_cohort, read_cohort


def _cohort(
    factory: pytest.TempPathFactory, part: Part, n: int, seed: int, size: int, hard: float
) -> list[PhantomRecord]:
    folder: Path = factory.mktemp(f"{part.value}-{seed}")
    return read_cohort(make_cohort(part, n, folder, seed=seed, size=size, hard_fraction=hard))


@pytest.fixture(scope="session")
def lumbar_cohort(tmp_path_factory: pytest.TempPathFactory) -> list[PhantomRecord]:
    return _cohort(tmp_path_factory, Part.LUMBAR, 12, seed=101, size=448, hard=0.3)


@pytest.fixture(scope="session")
def chest_cohort(tmp_path_factory: pytest.TempPathFactory) -> list[PhantomRecord]:
    return _cohort(tmp_path_factory, Part.CHEST, 10, seed=102, size=448, hard=0.3)


@pytest.fixture(scope="session")
def hip_cohort(tmp_path_factory: pytest.TempPathFactory) -> list[PhantomRecord]:
    return _cohort(tmp_path_factory, Part.HIP, 12, seed=103, size=448, hard=0.3)


@pytest.fixture(scope="session")
def lateral_cohort(tmp_path_factory: pytest.TempPathFactory) -> list[PhantomRecord]:
    return _cohort(tmp_path_factory, Part.LUMBAR_LATERAL, 10, seed=104, size=448, hard=0.3)


@pytest.fixture(scope="session")
def held_out_lumbar(tmp_path_factory: pytest.TempPathFactory) -> list[PhantomRecord]:
    """Evaluable lumbar phantoms of a seed no other test uses, for the density-signal checks."""
    return _cohort(tmp_path_factory, Part.LUMBAR, 48, seed=9001, size=384, hard=0.0)
