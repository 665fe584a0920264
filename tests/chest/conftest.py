"""Fixtures for the chest tests: phantom films and small chest model folders made on the spot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import torch
from pydicom.dataset import Dataset

from osteonode.config import PipelineSettings
from osteonode.nets import build_network
from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.chest import ChestPipeline, ChestPreprocessing, Stage
from osteonode.zoo import ModelCard, NetworkEntry, load_model, save_model

#: Seed of the phantoms of the unit tests (the demo weights were trained on another).
UNIT_SEED = 31


@pytest.fixture(scope="session")
def chest_films(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four small chest phantoms."""
    directory = tmp_path_factory.mktemp("chest_films")
    return [
        record.file
        for record in read_cohort(make_cohort("chest", 4, directory, seed=UNIT_SEED, size=192))
    ]


@pytest.fixture()
def chest_dataset(chest_films: list[Path]) -> Dataset:
    """The first phantom as a dataset to edit (PA, patient aged 50 or over)."""
    ds = pydicom.dcmread(chest_films[0])
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.PatientAge = "067Y"
    ds.ViewPosition = "PA"
    return ds


def make_model(
    directory: Path,
    *,
    architecture: str = "convnext_demo",
    size: int = 64,
    channels: int = 1,
    logits: dict[Stage, float] | None = None,
) -> Path:
    """Write a chest model folder with randomly initialised networks.

    ``logits`` fixes a stage's output: its head then gives logit 0 for "absent" and the value for
    "present" whatever the film (so its probability is ``sigmoid(value)``).
    """
    torch.manual_seed(0)
    networks = {}
    for stage in Stage:
        network = build_network(architecture, num_classes=2, in_chans=channels)
        if logits is not None and stage in logits:
            with torch.no_grad():
                network.head.weight.zero_()
                network.head.bias.copy_(torch.tensor([0.0, logits[stage]]))
        networks[stage.value] = network
    preprocessing = ChestPreprocessing(size=size, channels=channels)
    card = ModelCard(
        name="chest-test",
        version="0.0.1",
        pipeline="chest",
        intended_use="tests",
        training_data="none",
        synthetic=True,
        input_size=(size, size),
        normalisation=preprocessing.describe(),
        networks=[
            NetworkEntry(
                role=stage.value,
                architecture=architecture,
                options={"num_classes": 2, "in_chans": channels},
                weights=f"{stage.value}.safetensors",
            )
            for stage in Stage
        ],
    )
    save_model(directory, card, networks)
    return directory


PipelineFactory = Callable[..., ChestPipeline]


@pytest.fixture()
def make_pipeline(tmp_path: Path) -> PipelineFactory:
    """Build a pipeline on a fresh small model: ``make_pipeline(logits=..., settings=...)``."""
    counter = iter(range(1000))

    def build(*, settings: PipelineSettings | None = None, **options: object) -> ChestPipeline:
        directory = make_model(tmp_path / f"model{next(counter)}", **options)  # type: ignore[arg-type]
        return ChestPipeline.from_model(
            load_model(directory, device="cpu"), settings or PipelineSettings()
        )

    return build
