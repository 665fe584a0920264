"""The lumbar trainer: a model folder with a full card, resumable checkpoints, safetensors only."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from osteonode.phantoms import make_cohort
from osteonode.train.loop import TrainingSettings
from osteonode.train.lumbar import DEMO_RECIPE, LumbarCohortError, train
from osteonode.zoo import load_model, read_model_card

SETTINGS = TrainingSettings(epochs=1, batch_size=4, validation_fraction=0.25, seed=3)


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort(
        "lumbar",
        12,
        tmp_path_factory.mktemp("lumbar-train"),
        seed=4711,
        size=256,
        hard_fraction=0.2,
    )


@pytest.fixture(scope="module")
def trained(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "lumbar-tiny"
    train(
        tiny_cohort,
        out,
        SETTINGS,
        device=torch.device("cpu"),
        name="lumbar-tiny",
        version="0.0.1",
        show_progress=False,
    )
    return out


def test_training_writes_a_loadable_model_with_a_full_card(trained: Path) -> None:
    card = read_model_card(trained)
    assert (
        card.name == "lumbar-tiny" and card.version == "0.0.1" and card.pipeline.value == "lumbar"
    )
    assert card.synthetic and not card.diagnostic_use
    assert "not for diagnostic use" in card.description
    assert card.calibration == "hologic"  # the scale the phantom cohort declares
    assert {"corners_within_3mm", "bmd_pearson_r", "hard_reported_not_evaluable"} <= set(
        card.metrics
    )
    assert "12 synthetic phantom" in card.training_data
    assert sorted(p.name for p in trained.glob("*.safetensors")) == [
        "detector.safetensors",
        "refiner.safetensors",
        "regressor.safetensors",
    ]
    model = load_model(trained, device="cpu")
    assert set(model.networks) == {"detector", "refiner", "regressor"}


def test_training_resumes_from_its_checkpoints(trained: Path, tiny_cohort: Path) -> None:
    checkpoints = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert checkpoints == [
        "detector.pt",
        "refiner.pt",
        "regressor-1.pt",
        "regressor-2.pt",
        "regressor-3.pt",
        "regressor-4.pt",
    ]
    before = {p.name: p.read_bytes() for p in trained.glob("*.safetensors")}
    train(
        tiny_cohort,
        trained,
        SETTINGS,
        device=torch.device("cpu"),
        name="lumbar-tiny",
        version="0.0.1",
        show_progress=False,
    )
    after = {p.name: p.read_bytes() for p in trained.glob("*.safetensors")}
    assert before == after  # every network had finished its epochs: nothing retrained


def test_a_cohort_of_another_part_is_refused(tmp_path: Path) -> None:
    cohort = make_cohort("hip", 2, tmp_path, seed=5, size=128)
    with pytest.raises(LumbarCohortError, match="other than lumbar"):
        train(
            cohort,
            tmp_path / "out",
            SETTINGS,
            device=torch.device("cpu"),
            name="x",
            version="1",
            show_progress=False,
        )


def test_a_cohort_that_does_not_name_its_dxa_scale_is_refused(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    table = tiny_cohort / "cohort.csv" if tiny_cohort.is_dir() else tiny_cohort
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["bmd_manufacturer"] = ""
        row["file"] = str(table.parent / row["file"])
    unnamed = tmp_path / "cohort.csv"
    with unnamed.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(LumbarCohortError, match="must name the DXA scale"):
        train(
            unnamed,
            tmp_path / "out",
            SETTINGS,
            device=torch.device("cpu"),
            name="x",
            version="1",
            show_progress=False,
        )


def test_demo_recipe_uses_a_seed_the_tests_do_not() -> None:
    assert DEMO_RECIPE.name == "lumbar-demo" and DEMO_RECIPE.seed not in (4711, 7319, 7320, 5150)
