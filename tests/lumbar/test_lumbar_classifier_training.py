"""The classifier trainer (lumbar AP / lateral, Boonrod et al. 2025) writes a model folder whose
card drives the generic classifier pipeline, resumes, and refuses films of the wrong view."""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from osteonode.bone import Category
from osteonode.imaging.pixels import load_radiograph
from osteonode.imaging.transforms import classifier_input
from osteonode.phantoms import Part, make_cohort, read_cohort
from osteonode.pipelines.base import FindingSite, Method
from osteonode.train import trainer
from osteonode.train.classifier import (
    DEMO_RECIPES,
    LUMBAR_AP,
    LUMBAR_LATERAL,
    screening_figures,
    train,
)
from osteonode.train.loop import TrainingSettings
from osteonode.zoo import load_model

#: The AP method at a small input, so that a test trains in seconds.
TINY_AP = dataclasses.replace(LUMBAR_AP, input_size=(64, 64))
SETTINGS = TrainingSettings(epochs=1, batch_size=8, patience=0, validation_fraction=0.25)
OPTIONS = {"device": torch.device("cpu"), "version": "0.0.1", "show_progress": False}


@pytest.fixture(scope="module")
def ap_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort(Part.LUMBAR, 24, tmp_path_factory.mktemp("ap"), seed=61, size=128)


@pytest.fixture(scope="module")
def lateral_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort(Part.LUMBAR_LATERAL, 24, tmp_path_factory.mktemp("lat"), seed=62, size=128)


def test_training_writes_a_classifier_card_the_pipeline_can_follow(
    ap_cohort: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lumbar-ap-small"
    card = train(ap_cohort, out, SETTINGS, configuration=TINY_AP, name="lumbar-ap-small", **OPTIONS)
    assert card.pipeline is Method.CLASSIFIER
    assert card.synthetic and not card.diagnostic_use
    assert "narrower than the paper's resnet18" in card.description
    assert "not for diagnostic use" in card.description
    assert card.input_size == (64, 64)
    spec = card.classifier
    assert spec.finding_site is FindingSite.LUMBAR_SPINE
    assert spec.views == ["AP", "PA"] and spec.min_age_years == 50
    (stage,) = spec.stages
    assert (stage.positive, stage.negative, stage.threshold) == (
        Category.OSTEOPOROSIS, Category.NOT_OSTEOPOROSIS, 0.5,
    )
    assert card.metrics["validation_films"] == 6
    assert 0.0 <= card.metrics["validation_specificity"] <= 1.0

    # The card alone says how to feed the network: the pipeline's input is the trainer's.
    model = load_model(out, device="cpu")
    network = model[stage.network]
    assert network.in_chans == 1
    film = read_cohort(ap_cohort)[0].file
    image = classifier_input(load_radiograph(film).pixels, spec.transform, tuple(card.input_size))
    from_card = (torch.from_numpy(image)[None, None] - spec.mean[0]) / spec.std[0]
    from_trainer = TINY_AP.normalise(torch.from_numpy(image)[None])
    assert torch.equal(from_card, from_trainer)
    with torch.no_grad():
        assert network(from_card).shape == (1, 2)


def test_training_resumes_from_its_checkpoint(ap_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    train(ap_cohort, out, SETTINGS, configuration=TINY_AP, name="r", **OPTIONS)
    assert torch.load(out / "checkpoints" / "classifier.pt", weights_only=True)["epoch"] == 1
    longer = dataclasses.replace(SETTINGS, epochs=2)
    card = train(ap_cohort, out, longer, configuration=TINY_AP, name="r", **OPTIONS)
    saved = torch.load(out / "checkpoints" / "classifier.pt", weights_only=True)
    assert [record["epoch"] for record in saved["history"]] == [1, 2]
    assert card.metrics["best_epoch"] in (1.0, 2.0)


def test_lateral_films_are_refused_for_the_ap_method_with_the_reason(
    lateral_cohort: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"View Position is not one the method reads \(AP, PA\)"):
        train(lateral_cohort, tmp_path / "x", SETTINGS, configuration=TINY_AP, name="x", **OPTIONS)
    assert not (tmp_path / "x").exists()


def test_the_lateral_method_trains_a_darknet_on_lateral_films(
    lateral_cohort: Path, tmp_path: Path
) -> None:
    tiny_lateral = dataclasses.replace(LUMBAR_LATERAL, input_size=(64, 64))
    card = train(lateral_cohort, tmp_path / "lat", SETTINGS, configuration=tiny_lateral,
                 name="lat", **OPTIONS)
    assert card.network("classifier").architecture == "darknet19_demo"
    assert card.classifier.views == ["LATERAL"]
    assert "narrower than the paper's darknet19" in card.description


def test_a_cohort_without_both_classes_is_refused(ap_cohort: Path, tmp_path: Path) -> None:
    # The same films, every one given a normal T-score.
    with ap_cohort.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = tmp_path / "cohort.csv"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "file": str(ap_cohort.parent / row["file"]), "t_score": "0.00"})
    with pytest.raises(ValueError, match="0 osteoporotic and 24 other evaluable films"):
        train(table, tmp_path / "x", SETTINGS, configuration=TINY_AP, name="x", **OPTIONS)


def test_screening_figures_count_calls_at_the_threshold() -> None:
    truth = np.array([True, True, False, False, False])
    probability = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    figures = screening_figures(truth, probability, 0.5)
    assert (figures.films, figures.positives) == (5, 2)
    assert figures.sensitivity == pytest.approx(0.5)
    assert figures.specificity == pytest.approx(2 / 3)
    assert figures.auc == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="one truth and one probability per film"):
        screening_figures(truth, probability[:3], 0.5)


def test_each_classifier_pipeline_has_a_demo_recipe_on_its_own_films() -> None:
    assert trainer("lumbar_ap").DEMO_RECIPE is DEMO_RECIPES["lumbar_ap"]
    assert DEMO_RECIPES["lumbar_ap"].part == Part.LUMBAR.value
    assert DEMO_RECIPES["lumbar_lateral"].part == Part.LUMBAR_LATERAL.value
    assert DEMO_RECIPES["lumbar_ap"].name == "lumbar-ap-demo"
    assert DEMO_RECIPES["lumbar_lateral"].name == "lumbar-lateral-demo"
    assert DEMO_RECIPES["lumbar_ap"].seed != DEMO_RECIPES["lumbar_lateral"].seed


@pytest.mark.slow
def test_train_command_trains_a_classifier_pipeline(ap_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-model"
    result = subprocess.run(
        [sys.executable, "-m", "osteonode", "train", "lumbar_ap", "--cohort", str(ap_cohort),
         "--out", str(out), "--epochs", "2", "--batch-size", "8", "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env=os.environ.copy(), check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote model cli-model" in result.stdout
    assert load_model(out, device="cpu").card.classifier.views == ["AP", "PA"]
