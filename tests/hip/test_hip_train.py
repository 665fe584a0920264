"""The hip trainer: a tiny cohort trains into a loadable model folder; crops match the pipeline's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from osteonode.imaging import load_radiograph
from osteonode.imaging.transforms import ztransform_2sigma
from osteonode.phantoms import PhantomRecord, make_cohort
from osteonode.pipelines.regions import crop_window, extract_crop
from osteonode.train.hip import (
    DEMO_GEOMETRY,
    ClassifierTask,
    HipCohortError,
    _load_film,
    box_iou,
    train,
)
from osteonode.train.loop import TrainingSettings
from osteonode.zoo import load_model


def test_box_iou_of_known_boxes() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_training_crops_are_the_crops_the_pipeline_takes(hip_records: list[PhantomRecord]) -> None:
    record = next(r for r in hip_records if r.sides["right"].evaluable)
    film = _load_film(record, DEMO_GEOMETRY)
    task = ClassifierTask(film.crops, np.array([0]), np.array([0]), 1, DEMO_GEOMETRY.crop_size)
    trained = task._windows(np.array([0]), None)[0, 0].numpy()
    pixels = load_radiograph(record.file).pixels
    window = crop_window(record.sides["right"].crop_box, pixels.shape)
    inferred = ztransform_2sigma(
        extract_crop(pixels, window, DEMO_GEOMETRY.crop_size, mirror=False)
    )
    assert np.corrcoef(trained.ravel(), inferred.ravel())[0, 1] > 0.95


def test_a_small_cohort_trains_into_a_model_folder_that_loads_and_resumes(tmp_path: Path) -> None:
    table = make_cohort("hip", 12, tmp_path / "cohort", seed=43, size=256, hard_fraction=0.25)
    settings = TrainingSettings(
        epochs=1, batch_size=8, learning_rate=1e-3, weight_decay=0.0, validation_fraction=0.2
    )
    out = tmp_path / "model"
    card = train(
        table,
        out,
        settings,
        device=torch.device("cpu"),
        name="hip-tiny",
        version="0.0.1",
        show_progress=False,
    )
    assert card.synthetic and not card.diagnostic_use
    assert "not for diagnostic use" in card.description
    assert {
        "validation_crop_iou_hit_rate",
        "classifier_validation_crop_auc",
        "training_minutes",
    } <= set(card.metrics)
    # The paper's augmentation, as albumentations steps, is recorded with how it was trained.
    assert card.training["classifier_augmentation"].startswith("one_of: NoOp(p=1); GaussianBlur(")
    assert "augmentation" not in card.parameters
    model = load_model(out, device="cpu")
    assert set(model.networks) == {"locator", "classifier"}
    assert (out / "checkpoints" / "locator.pt").is_file() and (
        out / "checkpoints" / "classifier.pt"
    ).is_file()
    again = train(
        table,
        out,
        settings,
        device=torch.device("cpu"),
        name="hip-tiny",
        version="0.0.1",
        show_progress=False,
    )
    assert again.metrics["locator_best_epoch"] == card.metrics["locator_best_epoch"]


def test_a_cohort_of_another_part_is_refused(tmp_path: Path) -> None:
    table = make_cohort("chest", 2, tmp_path / "chest", seed=43, size=128)
    with pytest.raises(HipCohortError, match="other than hip"):
        train(
            table,
            tmp_path / "model",
            TrainingSettings(epochs=1),
            device=torch.device("cpu"),
            name="x",
            version="1",
            show_progress=False,
        )
