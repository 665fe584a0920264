"""A classifier card that reads regions a locator finds: the hip method as a model folder alone."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from fixtures.classifier_models import (
    HIP_CROP_SIZE,
    HIP_LOCATOR_SIZE,
    HIP_NETWORKS,
    FixedRegions,
    save_random_networks,
)

from osteonode.bone import Laterality
from osteonode.config import PipelineSettings
from osteonode.imaging.pixels import load_radiograph
from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.base import Category, FindingSite, Truth
from osteonode.pipelines.classifier import ClassifierPipeline
from osteonode.pipelines.hip import HipGeometry, HipPipeline
from osteonode.pipelines.regions import FilmRegion
from osteonode.zoo import ModelError, load_model, read_model_card

#: A site's per-side classifier card: the femur localiser finds each hip, one stage decides.
PER_SIDE = {
    "finding_site": "hip",
    "transform": "ztransform_2sigma",
    "stages": [{"network": "classifier", "name": "osteoporosis", "finding": "Osteoporosis",
                "positive": "osteoporosis", "negative": "not_osteoporosis"}],
    "views": ["AP", "PA"],
    "sexes": ["F"],
    "min_age_years": 55,
    "regions": "femur_sides",
    "locator": "locator",
    "locator_input_size": list(HIP_LOCATOR_SIZE),
}


def card(classifier: dict, **fields: object) -> dict:
    return {
        "name": "hip-site",
        "version": "1.0.0",
        "pipeline": "classifier",
        "intended_use": "tests",
        "training_data": "none (random weights)",
        "synthetic": True,
        "input_size": [HIP_CROP_SIZE, HIP_CROP_SIZE],
        "normalisation": "two-sigma z-transform",
        "classifier": classifier,
        **fields,
    }


@pytest.fixture(scope="module")
def pelvis(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pelvis")
    (record,) = read_cohort(make_cohort("hip", 1, directory, seed=41, size=256))
    return load_radiograph(record.file)


@pytest.fixture(scope="module")
def per_side_model(tmp_path_factory) -> Path:
    return save_random_networks(tmp_path_factory.mktemp("hip_site"), card(PER_SIDE), HIP_NETWORKS)


def test_a_per_side_card_gives_one_finding_per_hip_with_its_outline(per_side_model, pelvis):
    pipeline = ClassifierPipeline.from_model(
        load_model(per_side_model, device="cpu"), PipelineSettings(), name="hip_site"
    )
    assert pipeline.truth is Truth.PER_SIDE
    result = pipeline.run(pelvis)
    assert [f.name for f in result.findings] == ["Right hip", "Left hip"]
    assert [f.laterality for f in result.findings] == [Laterality.RIGHT, Laterality.LEFT]
    assert all(f.site is FindingSite.HIP for f in result.findings)
    assert any(note.startswith("femur localisation confidence") for note in result.notes)
    # The random localiser finds no femur: each side says so, and so does the film.
    assert not result.evaluable and result.reason.startswith("no evaluable hip (right hip: ")

    # Where the femurs are found, each side is classified in its outline and the worse decides.
    boxes = {Laterality.RIGHT: (20.0, 60.0, 90.0, 150.0), Laterality.LEFT: (160.0, 60.0, 230.0, 150.0)}
    pipeline.regions = FixedRegions(tuple(
        FilmRegion(name=f"{side.name.capitalize()} hip", box=box, laterality=side,
                   mirrored=side is Laterality.LEFT)
        for side, box in boxes.items()
    ))
    result = pipeline.run(pelvis)
    assert result.evaluable and ("osteoporosis_threshold", "0.5") in result.model.parameters
    assert [f.region.points[0] for f in result.findings] == [(20.5, 60.5), (160.5, 60.5)]
    worst = max(f.probability for f in result.findings)
    assert result.category is (Category.OSTEOPOROSIS if worst >= 0.5 else Category.NOT_OSTEOPOROSIS)
    assert {f.category for f in result.findings} <= {Category.OSTEOPOROSIS, Category.NOT_OSTEOPOROSIS}
    assert "weighted by the probability of each outlined region" in result.heatmap_meaning
    outside = np.ones(pelvis.shape, bool)
    outside[60:151, 20:91] = outside[60:151, 160:231] = False
    assert float(result.heatmap[outside].max()) == 0.0



def test_the_shipped_hip_method_is_the_same_card_driven_classifier(
    per_side_model, pelvis, tmp_path
):
    """The hip model folder (pipeline "hip") and the declarative card answer identically."""
    geometry = HipGeometry(locator_shape=HIP_LOCATOR_SIZE, crop_size=HIP_CROP_SIZE)
    hip_folder = save_random_networks(
        tmp_path / "hip",
        {**card(PER_SIDE), "pipeline": "hip", "classifier": None, "parameters": geometry.as_parameters()},
        HIP_NETWORKS,
    )
    settings = PipelineSettings(thresholds={"osteoporosis": 0.3})
    declared = ClassifierPipeline.from_model(load_model(per_side_model, device="cpu"), settings, name="hip")
    shipped = HipPipeline.from_model(load_model(hip_folder, device="cpu"), settings)
    assert shipped.truth is declared.truth is Truth.PER_SIDE
    a, b = declared.run(pelvis), shipped.run(pelvis)
    assert a.findings == b.findings and a.reason == b.reason and a.notes == b.notes
    regions = FixedRegions((
        FilmRegion(name="Right hip", box=(20.0, 60.0, 90.0, 150.0), laterality=Laterality.RIGHT),
        FilmRegion(name="Left hip", box=(160.0, 60.0, 230.0, 150.0), laterality=Laterality.LEFT,
                   mirrored=True),
    ))
    declared.regions = shipped.regions = regions
    a, b = declared.run(pelvis), shipped.run(pelvis)
    assert a.evaluable and a.findings == b.findings and a.category is b.category
    assert np.array_equal(a.heatmap, b.heatmap)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"locator": None}, "need a locator and its locator_input_size"),
        ({"locator_input_size": [60, 96]}, "multiples of 32"),
        ({"locator": "classifier"}, "cannot also be a stage's network"),
        ({"regions": "whole_film"}, "whole_film classifier takes no locator"),
        ({"sexes": ["unknown"]}, "not 'unknown'"),
        ({"locator": "finder"}, "names networks the card lacks: \\['finder'\\]"),
    ],
)
def test_a_card_whose_regions_cannot_be_found_is_refused_with_the_reason(tmp_path, change, message):
    folder = save_random_networks(tmp_path / "ok", card(PER_SIDE), HIP_NETWORKS)
    data = tomllib.loads((folder / "model.toml").read_text("utf-8"))
    data["classifier"].update(change)
    data["classifier"] = {k: v for k, v in data["classifier"].items() if v is not None}
    (folder / "model.toml").write_text(tomli_w.dumps(data), "utf-8")
    with pytest.raises(ModelError, match=message):
        read_model_card(folder)


def test_each_region_goes_through_the_stages_on_its_own_and_the_worse_region_decides(
    pelvis, tmp_path
):
    stages = [
        {"network": "stage1", "finding": "Osteoporosis", "positive": "osteoporosis"},
        {"network": "stage2", "finding": "Low bone mass", "positive": "low_bone_mass",
         "negative": "normal"},
    ]
    networks = {
        "locator": HIP_NETWORKS["locator"],
        "stage1": HIP_NETWORKS["classifier"],
        "stage2": HIP_NETWORKS["classifier"],
    }
    folder = save_random_networks(tmp_path / "two", card({**PER_SIDE, "stages": stages}), networks)
    regions = FixedRegions((
        FilmRegion(name="Right hip", box=(20.0, 60.0, 90.0, 150.0), laterality=Laterality.RIGHT),
        FilmRegion(name="Left hip", box=(160.0, 60.0, 230.0, 150.0), laterality=Laterality.LEFT,
                   mirrored=True),
    ))

    def run(**thresholds: float):
        pipeline = ClassifierPipeline.from_model(
            load_model(folder, device="cpu"), PipelineSettings(thresholds=thresholds), name="two"
        )
        pipeline.regions = regions
        return pipeline.analyse(pelvis)

    probe = run(stage1=0.999)  # stage 1 decides neither side: both go on to stage 2
    first = {f.name: f.probability for f in probe.result.findings if f.name.endswith("Osteoporosis")}
    assert set(first) == {"Right hip: Osteoporosis", "Left hip: Osteoporosis"}
    assert first["Right hip: Osteoporosis"] != first["Left hip: Osteoporosis"]

    # A stage-1 cut-off between the two sides: the higher side is decided at stage 1, the other
    # goes on to stage 2, and the film's answer is the worse (osteoporosis).
    split = run(stage1=sum(first.values()) / 2)
    decided = max(first, key=first.get).split(":")[0]
    passed = min(first, key=first.get).split(":")[0]
    findings = {f.name: f for f in split.result.findings}
    assert findings[f"{decided}: Osteoporosis"].category is Category.OSTEOPOROSIS
    assert findings[f"{decided}: Low bone mass"].reason == "not run: Osteoporosis decided"
    assert findings[f"{passed}: Osteoporosis"].osteoporosis_present is False
    assert findings[f"{passed}: Low bone mass"].category in (Category.LOW_BONE_MASS, Category.NORMAL)
    assert split.result.category is Category.OSTEOPOROSIS
    assert set(split.heatmaps) == {"stage1", "stage2"}
    outside = np.ones(pelvis.shape, bool)
    outside[60:151, 20:91] = outside[60:151, 160:231] = False
    for heatmap in (split.result.heatmap, *split.heatmaps.values()):
        assert float(heatmap[outside].max()) == 0.0
