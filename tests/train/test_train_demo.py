"""Demo recipes: ``make demo-weights`` repeats a recipe exactly, whatever the machine's cores."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

import osteonode.train
from osteonode.train import DemoRecipe, train_demo
from osteonode.train.loop import TrainingSettings


def _recipe(**changes: object) -> DemoRecipe:
    fields = {
        "phantoms": 2,
        "size": 128,
        "seed": 5,
        "hard_fraction": 0.0,
        "settings": TrainingSettings(epochs=1),
        "name": "fake-demo",
        "version": "0.0.1",
        "part": "chest",
        "threads": 1,
    }
    return DemoRecipe(**(fields | changes))


def test_the_recipe_trains_on_its_own_thread_count_and_restores_the_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def fake_train(cohort: Path, out: Path, settings: TrainingSettings, **options: object) -> str:
        seen.update(threads=torch.get_num_threads(), out=out, cohort=cohort)
        return "card"

    module = types.SimpleNamespace(DEMO_RECIPE=_recipe(threads=1), train=fake_train)
    monkeypatch.setattr(osteonode.train, "trainer", lambda part: module)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        card = train_demo(
            "fake",
            workdir=tmp_path / "work",
            models_dir=tmp_path / "models",
            device=torch.device("cpu"),
            show_progress=False,
        )
        assert card == "card" and seen["threads"] == 1 and torch.get_num_threads() == 2
        assert seen["out"] == tmp_path / "models" / "fake-demo" and Path(seen["cohort"]).is_file()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -2, 1.5, True])
def test_a_recipe_without_a_positive_whole_thread_count_is_refused(threads: object) -> None:
    with pytest.raises(ValueError, match="threads must be a positive whole number"):
        _recipe(threads=threads)
