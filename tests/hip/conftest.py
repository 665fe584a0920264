"""Fixtures for the hip tests: phantom films and a small randomly initialised hip model folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from osteonode.config import PipelineName
from osteonode.nets import build_network
from osteonode.phantoms import PhantomRecord, make_cohort, read_cohort
from osteonode.pipelines.hip import CLASSIFIER_ROLE, LOCATOR_ROLE, HipGeometry
from osteonode.zoo import ModelCard, NetworkEntry, save_model

#: Seed of the unit tests' phantoms (the demo weights were trained on another).
UNIT_SEED = 41


@pytest.fixture(scope="session")
def hip_records(tmp_path_factory: pytest.TempPathFactory) -> list[PhantomRecord]:
    """Four small pelvis phantoms, some with a prosthesis or a cut-off side."""
    directory = tmp_path_factory.mktemp("hip_films")
    return read_cohort(make_cohort("hip", 4, directory, seed=UNIT_SEED, size=256, hard_fraction=0.5))


def write_random_model(directory: Path) -> Path:
    """A hip model folder with small randomly initialised networks (valid card, fast to run)."""
    torch.manual_seed(0)
    geometry = HipGeometry(locator_shape=(64, 96), crop_size=32)
    options = {
        LOCATOR_ROLE: ("femur_locator", {"widths": [4, 4, 8, 8, 8], "head_width": 8}),
        CLASSIFIER_ROLE: ("vgg16_nonlocal_demo", {"in_chans": 1}),
    }
    card = ModelCard(
        name="hip-test",
        version="0.0.1",
        pipeline=PipelineName.HIP,
        intended_use="tests",
        training_data="none (random weights)",
        synthetic=True,
        input_size=(geometry.crop_size, geometry.crop_size),
        normalisation="two-sigma z-transform",
        parameters=geometry.as_parameters(),
        networks=[
            NetworkEntry(role=role, architecture=name, options=opts, weights=f"{role}.safetensors")
            for role, (name, opts) in options.items()
        ],
    )
    networks = {role: build_network(name, **opts) for role, (name, opts) in options.items()}
    save_model(directory, card, networks)
    return directory


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of :func:`write_random_model`."""
    return write_random_model(tmp_path_factory.mktemp("hip_model"))
