"""Acceptance of the shipped demo weights on held-out phantoms (seeds never used in training).

What is compared, exactly:

- BMD: the regressor's raw output per vertebra L1-L4 (the model card's calibration, before any
  cross-calibration) against the phantom's BMD, which is defined on that same scale; on every
  vertebra the pipeline measured on the normal (not hard) films. Pearson r and NRMSE (RMSE over
  the range of the true values) from osteonode.evaluate.metrics.
- WHO categories: the Result's category against the category of the phantom's true L1-L4 BMD
  taken along the pipeline's own path (configured cross-calibration to the site manufacturer,
  that manufacturer's reference for the patient's sex, ISCD combination of L1-L4), on the normal
  films the pipeline reported evaluable. The phantom table's own T-score (against a different
  reference) is not used. Quadratic-weighted kappa.
- Corners: the largest distance (mm) of any of the 24 corners of T12-L5 from the truth, on the
  normal films.
- Not evaluable: the Result's evaluable flag on the hard films (implants, scoliosis, cropped
  field) and on the normal films.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from osteonode.bone import MeasurementSite, Sex, Vertebra, VertebraMeasure, combine_lumbar, t_score
from osteonode.evaluate.metrics import (
    cohen_kappa,
    normalized_root_mean_squared_error,
    pearson_correlation,
)
from osteonode.imaging import load_radiograph
from osteonode.pipelines.base import Result
from osteonode.pipelines.lumbar import BODIES, LumbarPipeline, prepare_film

MEASURED = ("L1", "L2", "L3", "L4")
CATEGORIES = ("normal", "low_bone_mass", "osteoporosis")


@dataclass(frozen=True)
class Outcome:
    record: object
    result: Result
    corner_error_mm: float
    raw_bmd: dict[str, float]


def _true_category(pipeline: LumbarPipeline, record) -> str:
    sex = Sex(record.sex) if record.sex in ("F", "M") else Sex.FEMALE
    reference = pipeline.reference.young_adult(
        pipeline.site_manufacturer, MeasurementSite.LUMBAR_L1_L4, sex
    )
    measures = []
    for name in MEASURED:
        bmd = pipeline.calibration.apply(record.bmd[f"bmd_{name}"])
        measures.append(VertebraMeasure(Vertebra(name), bmd, t_score(bmd, reference)))
    return combine_lumbar(measures, reference).category.value


@pytest.fixture(scope="module")
def outcomes(demo_pipeline: LumbarPipeline, acceptance_films) -> list[Outcome]:
    found = []
    for record in acceptance_films:
        radiograph = load_radiograph(record.file)
        result = demo_pipeline.run(radiograph)
        film = prepare_film(radiograph.pixels, radiograph.spacing_mm)
        with torch.no_grad():
            detection = demo_pipeline.locate(film)
            problems, _ = demo_pipeline.decide(film, detection)
            measured = demo_pipeline.measure(
                film, detection, [b for b in MEASURED if b not in problems]
            )
        corners = film.to_source(np.stack([detection.corners[b] for b in BODIES]))
        truth = np.stack([record.corners[b] for b in BODIES])
        error = float(np.linalg.norm(corners - truth, axis=-1).max() * record.spacing_mm)
        found.append(Outcome(record, result, error, {b: m.bmd_model for b, m in measured.items()}))
    return found


def _normal(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.record.evaluable]


def test_held_out_set_has_normal_and_hard_films(outcomes: list[Outcome]) -> None:
    assert len(_normal(outcomes)) >= 70
    assert len(outcomes) - len(_normal(outcomes)) >= 20


def test_bmd_per_vertebra_correlates_with_truth(outcomes: list[Outcome]) -> None:
    truth, predicted = [], []
    for outcome in _normal(outcomes):
        for name, value in outcome.raw_bmd.items():
            truth.append(outcome.record.bmd[f"bmd_{name}"])
            predicted.append(value)
    r = pearson_correlation(truth, predicted).r
    nrmse = normalized_root_mean_squared_error(truth, predicted)
    print(f"BMD per vertebra: n={len(truth)} r={r:.3f} NRMSE={nrmse:.3f}")
    assert r >= 0.90
    assert nrmse <= 0.08


def test_reported_bmd_is_the_raw_estimate_through_the_configured_calibration(
    demo_pipeline: LumbarPipeline, outcomes: list[Outcome]
) -> None:
    for outcome in _normal(outcomes)[:20]:
        for finding in outcome.result.findings:
            if finding.name in outcome.raw_bmd and finding.bmd_g_cm2 is not None:
                expected = demo_pipeline.calibration.apply(outcome.raw_bmd[finding.name])
                assert finding.bmd_g_cm2 == pytest.approx(expected, abs=5e-4)


def test_who_categories_agree_with_truth(
    demo_pipeline: LumbarPipeline, outcomes: list[Outcome]
) -> None:
    pairs = [
        (_true_category(demo_pipeline, o.record), o.result.category.value)
        for o in _normal(outcomes)
        if o.result.evaluable
    ]
    truth, predicted = zip(*pairs)
    kappa = cohen_kappa(truth, predicted, CATEGORIES, weighting="quadratic")
    print(f"WHO three-class quadratic-weighted kappa: n={len(pairs)} kappa={kappa:.3f}")
    assert kappa >= 0.85


def test_every_corner_is_within_3_mm_on_nearly_all_normal_films(outcomes: list[Outcome]) -> None:
    errors = np.array([o.corner_error_mm for o in _normal(outcomes)])
    share = float(np.mean(errors <= 3.0))
    print(
        f"corners within 3 mm: {share:.3f} of {len(errors)} films; median worst corner {np.median(errors):.2f} mm"
    )
    assert share >= 0.97


def test_hard_films_are_reported_not_evaluable_with_a_reason(outcomes: list[Outcome]) -> None:
    hard = [o for o in outcomes if not o.record.evaluable]
    flagged = [o for o in hard if not o.result.evaluable]
    print(f"hard films not evaluable: {len(flagged)}/{len(hard)}")
    assert len(flagged) >= 0.9 * len(hard)
    assert all(o.result.reason and o.result.category is None for o in flagged)


def test_normal_films_are_rarely_reported_not_evaluable(outcomes: list[Outcome]) -> None:
    normal = _normal(outcomes)
    rejected = [o for o in normal if not o.result.evaluable]
    print(
        f"normal films not evaluable: {len(rejected)}/{len(normal)}",
        [o.result.reason for o in rejected],
    )
    assert len(rejected) <= 0.03 * len(normal)


def test_full_size_film_is_located_and_measured(
    demo_pipeline: LumbarPipeline, full_size_film
) -> None:
    radiograph = load_radiograph(full_size_film.file)
    assert max(radiograph.shape) == 2500
    result = demo_pipeline.run(radiograph)
    assert result.evaluable, result.reason
    assert result.heatmap is not None and result.heatmap.shape == radiograph.shape
    for finding in result.findings:
        if finding.name in MEASURED:
            # Regions are SCOORD (pixel-corner origin); the truth uses pixel centres.
            outline = np.array(finding.region.points) - 0.5
            error = np.linalg.norm(outline - full_size_film.corners[finding.name], axis=-1).max()
            assert error * full_size_film.spacing_mm <= 3.0
