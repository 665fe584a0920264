"""Fixtures for the hip tests: phantom films and a small randomly initialised hip model folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fixtures.classifier_models import FixedRegions
from hip_cases import write_random_model

from osteonode.config import PipelineSettings
from osteonode.phantoms import PhantomRecord, make_cohort, read_cohort
from osteonode.pipelines.hip import HipPipeline
from osteonode.pipelines.regions import FilmRegion
from osteonode.zoo import load_model

#: Seed of the unit tests' phantoms (the demo weights were trained on another).
UNIT_SEED = 41


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run the hip tests' small networks on one thread, restoring the setting afterwards.

    On a busy shared machine torch's intra-op threads spin-wait for each other: the pipeline then
    took 1.2 s of CPU per film on two threads and 0.02 s on one. Results do not depend on it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hip_records(tmp_path_factory: pytest.TempPathFactory) -> list[PhantomRecord]:
    """Four small pelvis phantoms, some with a prosthesis or a cut-off side."""
    directory = tmp_path_factory.mktemp("hip_films")
    return read_cohort(
        make_cohort("hip", 4, directory, seed=UNIT_SEED, size=256, hard_fraction=0.5)
    )


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of :func:`write_random_model`."""
    return write_random_model(tmp_path_factory.mktemp("hip_model"))


@pytest.fixture()
def fixed_pipeline(random_model_dir: Path):
    """Factory: the random model's pipeline with fixed femur regions instead of its localiser's."""

    def make(regions: tuple[FilmRegion, ...], threshold: float = 0.5) -> HipPipeline:
        pipeline = HipPipeline.from_model(
            load_model(random_model_dir, device="cpu"),
            PipelineSettings(thresholds={"osteoporosis": threshold}),
        )
        pipeline.regions = FixedRegions(regions)
        return pipeline

    return make
