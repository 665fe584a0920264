"""The chest trainer writes a loadable two-stage model folder, resumes, and checks its inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from osteonode.config import PipelineSettings
from osteonode.imaging.pixels import load_radiograph
from osteonode.nets import CheckpointError
from osteonode.phantoms import make_cohort
from osteonode.pipelines.chest import ChestPipeline, ChestPreprocessing, Stage
from osteonode.train.chest import ChestConfiguration, train
from osteonode.train.loop import TrainingSettings
from osteonode.zoo import load_model

TINY = ChestConfiguration(
    "convnext_demo", ChestPreprocessing(size=32, channels=3, mean=(0.25, 0.5, 0.75))
)
SETTINGS = TrainingSettings(epochs=1, batch_size=8, patience=0, validation_fraction=0.25)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort("chest", 24, tmp_path_factory.mktemp("chest_cohort"), seed=77, size=128)


def test_training_writes_a_model_the_pipeline_runs(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "chest-small"
    card = train(
        cohort,
        out,
        SETTINGS,
        device=torch.device("cpu"),
        name="chest-small",
        version="0.0.1",
        show_progress=False,
        configuration=TINY,
    )
    assert card.synthetic and not card.diagnostic_use
    assert "not for diagnostic use" in card.description
    assert (
        card.input_size == (32, 32) and card.normalisation == "x/255, mean 0.25 0.5 0.75, std 0.25"
    )
    assert {network.role for network in card.networks} == {stage.value for stage in Stage}
    assert (
        card.metrics["validation_films"] == 6 and 0.0 <= card.metrics["three_class_accuracy"] <= 1.0
    )
    assert (out / "checkpoints" / "stage1.pt").is_file() and (
        out / "checkpoints" / "stage2.pt"
    ).is_file()

    pipeline = ChestPipeline.from_model(load_model(out, device="cpu"), PipelineSettings())
    assert pipeline.preprocessing == TINY.preprocessing
    first = min(cohort.parent.glob("*.dcm"))
    assert pipeline.run(load_radiograph(first)).evaluable


def test_training_resumes_from_its_checkpoints(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "chest-resume"
    options = {
        "device": torch.device("cpu"),
        "name": "r",
        "version": "1",
        "show_progress": False,
        "configuration": TINY,
    }
    train(cohort, out, SETTINGS, **options)
    saved = torch.load(out / "checkpoints" / "stage1.pt", weights_only=True)
    assert saved["epoch"] == 1
    longer = TrainingSettings(epochs=2, batch_size=8, patience=0, validation_fraction=0.25)
    train(cohort, out, longer, **options)
    resumed = torch.load(out / "checkpoints" / "stage1.pt", weights_only=True)
    assert resumed["epoch"] == 2 and [r["epoch"] for r in resumed["history"]] == [1, 2]


def test_pretrained_checkpoint_that_does_not_fit_is_refused_with_its_keys(
    cohort: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "imagenet.safetensors"
    save_file({"not_a_convnext.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError):
        train(
            cohort,
            tmp_path / "out",
            SETTINGS,
            device=torch.device("cpu"),
            name="x",
            version="1",
            init=bad,
            show_progress=False,
            configuration=TINY,
        )


def test_cohort_of_another_part_is_refused(tmp_path: Path) -> None:
    hips = make_cohort("hip", 2, tmp_path / "hips", seed=1, size=128)
    with pytest.raises(ValueError, match="hip"):
        train(
            hips,
            tmp_path / "out",
            SETTINGS,
            device=torch.device("cpu"),
            name="x",
            version="1",
            show_progress=False,
            configuration=TINY,
        )


def test_stage_targets_are_soft_near_the_cut_off_and_hard_far_from_it() -> None:
    from osteonode.bone import Category
    from osteonode.train.chest import _Films

    t_scores = torch.tensor([-4.0, -2.5, -1.8, -1.0, 0.5])
    films = _Films(
        images=torch.zeros(5, 8, 8),
        categories=(
            Category.OSTEOPOROSIS,
            Category.OSTEOPOROSIS,
            Category.LOW_BONE_MASS,
            Category.NORMAL,
            Category.NORMAL,
        ),
        t_scores=t_scores,
        synthetic=True,
    )
    stage1 = films.soft_targets(Stage.OSTEOPOROSIS)
    stage2 = films.soft_targets(Stage.LOW_BONE_MASS)
    assert stage1[0] > 0.99 and stage1[1] == pytest.approx(0.5) and stage1[4] < 0.01
    assert stage2[2] > 0.9 and stage2[3] == pytest.approx(0.5) and stage2[4] < 0.01
    # The hard labels the validation AUC uses stay the categories.
    assert films.targets(Stage.OSTEOPOROSIS).tolist() == [1, 1, 0, 0, 0]
