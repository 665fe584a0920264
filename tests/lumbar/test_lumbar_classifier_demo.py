"""The shipped lumbar AP and lateral demo models (Boonrod et al. 2025): what their cards say, and a
lateral film from the node's routing to the lateral pipeline's answer.

How well they classify is measured by ``bench/lumbar_classifiers.py`` on held-out phantom seeds
(figures recorded in the cards' metrics), not here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from osteonode.bone import Category
from osteonode.config import PipelineSettings
from osteonode.imaging.pixels import load_radiograph
from osteonode.phantoms import Part, make_cohort, read_cohort
from osteonode.pipelines.base import FindingSite, Method
from osteonode.pipelines.classifier import ClassifierPipeline
from osteonode.routing import Route, route_file
from osteonode.train.classifier import DEMO_RECIPES
from osteonode.zoo import load_model

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module", params=sorted(DEMO_RECIPES))
def shipped(request: pytest.FixtureRequest) -> tuple[str, ClassifierPipeline]:
    name = request.param
    model = load_model(MODELS / DEMO_RECIPES[name].name, device="cpu")
    return name, ClassifierPipeline.from_model(model, PipelineSettings(), name=name)


def test_shipped_cards_say_synthetic_narrower_and_not_diagnostic(shipped) -> None:
    name, pipeline = shipped
    card = load_model(MODELS / DEMO_RECIPES[name].name, device="cpu").card
    assert card.pipeline is Method.CLASSIFIER
    assert card.synthetic and not card.diagnostic_use
    assert "narrower than the paper's" in card.description
    assert "Boonrod" in card.description
    assert card.input_size == (192, 192)
    assert pipeline.spec.finding_site is FindingSite.LUMBAR_SPINE
    assert card.metrics["heldout_auc_min"] >= 0.85


def test_a_lateral_film_routes_to_the_lateral_pipeline_and_gets_an_answer(tmp_path: Path) -> None:
    film = read_cohort(make_cohort(Part.LUMBAR_LATERAL, 1, tmp_path, seed=4242, size=256))[0]
    decision = route_file(film.file)
    assert isinstance(decision, Route) and decision.pipelines == ("lumbar_lateral",)
    model = load_model(MODELS / DEMO_RECIPES["lumbar_lateral"].name, device="cpu")
    pipeline = ClassifierPipeline.from_model(model, PipelineSettings(), name="lumbar_lateral")
    result = pipeline.run(load_radiograph(film.file))
    assert result.evaluable and result.pipeline == "lumbar_lateral"
    assert result.category in (Category.OSTEOPOROSIS, Category.NOT_OSTEOPOROSIS)
    assert result.heatmap is not None and result.heatmap.shape == load_radiograph(film.file).shape


def test_the_ap_method_reports_a_lateral_film_not_evaluable_with_the_reason(tmp_path: Path) -> None:
    film = read_cohort(make_cohort(Part.LUMBAR_LATERAL, 1, tmp_path, seed=4243, size=256))[0]
    model = load_model(MODELS / DEMO_RECIPES["lumbar_ap"].name, device="cpu")
    pipeline = ClassifierPipeline.from_model(model, PipelineSettings(), name="lumbar_ap")
    result = pipeline.run(load_radiograph(film.file))
    assert not result.evaluable
    assert "this method reads AP/PA films" in result.reason
