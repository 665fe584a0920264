"""The chest trainer writes a loadable two-stage model folder, resumes, and checks its inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from osteonode.cli import app
from osteonode.config import PipelineSettings
from osteonode.imaging.pixels import load_radiograph
from osteonode.nets import CheckpointError
from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.chest import ChestPipeline, ChestPreprocessing, Stage
from osteonode.train.augment import CHEST_STRONG
from osteonode.train.chest import DEMO_RECIPE, ChestConfiguration, train, validate
from osteonode.train.distillation import DistillationSettings
from osteonode.train.loop import TrainingSettings
from osteonode.train.proxy import ProxyThresholds
from osteonode.zoo import ModelError, load_model, read_model_card

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


def test_the_same_settings_give_the_same_weight_bytes(cohort: Path, tmp_path: Path) -> None:
    """Every random stream (split, shuffling, albumentations, torch) follows the seeds."""
    options = {
        "device": torch.device("cpu"), "name": "same", "version": "1", "show_progress": False,
        "configuration": TINY, "augmentation": CHEST_STRONG, "resume": False,
    }
    first = train(cohort, tmp_path / "first", SETTINGS, **options)
    second = train(cohort, tmp_path / "second", SETTINGS, **options)
    assert [n.sha256 for n in first.networks] == [n.sha256 for n in second.networks]


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


# --- the paper's training regime: distillation, proxy labels, augmentation ---------------------


@pytest.fixture(scope="module")
def teacher(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "chest-teacher"
    train(
        cohort, out, SETTINGS, device=torch.device("cpu"), name="chest-teacher", version="0.0.1",
        show_progress=False, configuration=TINY,
    )
    return out


def test_a_student_distilled_from_a_teacher_records_the_teacher_temperature_and_weight(
    cohort: Path, teacher: Path, tmp_path: Path
) -> None:
    out = tmp_path / "student"
    card = train(
        cohort, out, SETTINGS, device=torch.device("cpu"), name="student", version="0.0.1",
        show_progress=False, configuration=TINY, teacher=teacher,
        distillation=DistillationSettings(temperature=2.0, weight=0.7), augmentation=CHEST_STRONG,
    )
    written = read_model_card(out)
    assert written.training["distillation_teacher"] == "chest-teacher 0.0.1"
    assert written.training["distillation_temperature"] == 2.0
    assert written.training["distillation_weight"] == 0.7
    assert "GridDropout" in str(written.training["augmentation"])
    assert "Distilled from chest-teacher 0.0.1" in card.training_data
    # Training results stay out of the algorithm parameters results carry.
    assert not any(key.startswith("distillation") for key in written.parameters)
    assert ChestPipeline.from_model(load_model(out, device="cpu"), PipelineSettings()).run(
        load_radiograph(min(cohort.parent.glob("*.dcm")))
    ).evaluable


def test_proxy_labels_from_unlabelled_films_join_training_and_are_counted(
    cohort: Path, teacher: Path, tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled"
    make_cohort("chest", 12, unlabelled, seed=78, size=128)
    (unlabelled / "notes.txt").write_text("not a film")
    # Thresholds just above one half, so the untrained tiny teacher labels some films.
    thresholds = ProxyThresholds(normal=0.51, low_bone_mass=0.51, osteoporosis=0.51)
    out = tmp_path / "with-proxies"
    train(
        cohort, out, SETTINGS, device=torch.device("cpu"), name="p", version="1",
        show_progress=False, configuration=TINY, teacher=teacher, unlabeled=unlabelled,
        proxy_thresholds=thresholds,
    )
    record = read_model_card(out).training
    # 12 films, cohort.csv and notes.txt were offered; the two text files are unreadable.
    assert record["proxy_films_offered"] == 14 and record["proxy_films_unreadable"] == 2
    accepted = sum(record[f"proxy_labels_{c}"] for c in ("normal", "low_bone_mass", "osteoporosis"))
    assert accepted + record["proxy_films_below_threshold"] == 12
    assert record["proxy_threshold_normal"] == 0.51 and record["proxy_labeller"] == "chest-teacher 0.0.1"


def test_without_a_teacher_a_supervised_first_pass_makes_the_proxy_labels(
    cohort: Path, tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled"
    make_cohort("chest", 4, unlabelled, seed=79, size=128)
    out = tmp_path / "self-labelled"
    train(
        cohort, out, SETTINGS, device=torch.device("cpu"), name="s", version="1",
        show_progress=False, configuration=TINY, unlabeled=unlabelled,
    )
    record = read_model_card(out).training
    assert record["proxy_labeller"] == "supervised first pass"
    assert record["proxy_threshold_normal"] == 0.99 and record["proxy_threshold_low_bone_mass"] == 0.75
    assert record["proxy_threshold_osteoporosis"] == "none"
    assert (out / "checkpoints" / "supervised" / "stage1.pt").is_file()


def test_a_teacher_that_is_not_a_chest_model_is_refused_before_training(
    cohort: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError):
        train(
            cohort, tmp_path / "out", SETTINGS, device=torch.device("cpu"), name="x", version="1",
            show_progress=False, configuration=TINY, teacher=tmp_path / "missing",
        )
    assert not (tmp_path / "out").exists()


def test_train_command_refuses_distillation_options_for_other_parts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "hip", "--cohort", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"),
              "--teacher", str(tmp_path)],
    )
    assert result.exit_code == 2 and "chest" in result.output


def test_train_command_refuses_fewer_epochs_than_the_recipes_warm_up_needs(
    cohort: Path, tmp_path: Path
) -> None:
    assert DEMO_RECIPE.settings.warmup_epochs == 1
    result = CliRunner().invoke(
        app, ["train", "chest", "--cohort", str(cohort), "--out", str(tmp_path / "o"),
              "--epochs", "1", "--device", "cpu"],
    )
    assert result.exit_code == 2, result.output  # an uncaught error would exit 1 with a traceback
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "1 epoch(s) leave none after the 1 warm-up epoch(s): give at least 2 epochs" in message
    assert not (tmp_path / "o").exists()


def test_train_command_refuses_settings_for_a_demo_recipe(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "chest", "--demo", "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "--demo trains the chest recipe as written; epochs apply to --cohort runs" in " ".join(
        result.output.split()
    )


def test_train_command_names_an_unusable_teacher(cohort: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "chest", "--cohort", str(cohort), "--out", str(tmp_path / "o"),
              "--teacher", str(tmp_path / "no-model"), "--device", "cpu"],
    )
    assert result.exit_code == 2 and "no-model" in result.output


@pytest.mark.slow
def test_a_resumed_distillation_run_with_strong_augmentation_ends_as_an_uninterrupted_one(
    cohort: Path, teacher: Path, tmp_path: Path
) -> None:
    options = {
        "device": torch.device("cpu"), "name": "d", "version": "1", "show_progress": False,
        "configuration": TINY, "teacher": teacher, "augmentation": CHEST_STRONG,
    }
    two = TrainingSettings(epochs=2, batch_size=8, patience=0, validation_fraction=0.25)
    train(cohort, tmp_path / "straight", two, **options)
    train(cohort, tmp_path / "resumed", SETTINGS, **options)
    train(cohort, tmp_path / "resumed", two, **options)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "stage2.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "stage2.pt", weights_only=True)
    assert straight["history"] == resumed["history"]
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_validate_gives_the_cards_figures_for_a_written_model(cohort: Path, teacher: Path) -> None:
    records = read_cohort(cohort)
    figures = validate(teacher, records)
    assert figures["validation_films"] == sum(record.evaluable for record in records)
    assert {"three_class_accuracy", "stage1_auc"} <= set(figures)
