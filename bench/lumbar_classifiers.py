"""Benchmark: the lumbar AP and lateral demo classifiers (Boonrod et al. 2025) on held-out phantoms.

Prints figures; it is not a test. For each demo model (``models/lumbar-ap-demo``,
``models/lumbar-lateral-demo``), phantom cohorts of the model's film kind are drawn from several
seeds that no demo recipe trains on, and every evaluable film goes through the classifier pipeline
the node runs (:class:`~osteonode.pipelines.classifier.ClassifierPipeline` built from the card:
its input and its stage's probability of osteoporosis). Per seed and as mean and
spread over the seeds it prints the AUC, and the sensitivity and specificity at the card's
threshold (:func:`osteonode.train.classifier.screening_figures`, the project's metrics), and
whether the issue's bar, AUC >= 0.85 on every seed, holds. ``--record`` writes the mean figures
into each card's ``[metrics]`` (the weights are rewritten byte for byte).

Usage: ``python bench/lumbar_classifiers.py [--seeds 7301 7302 7303] [--films 100] [--record]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np
import structlog
import torch

from osteonode.bone import OSTEOPOROSIS_T_SCORE
from osteonode.config import PipelineSettings
from osteonode.imaging import load_radiograph
from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.classifier import ClassifierPipeline
from osteonode.train.classifier import DEMO_RECIPES, ScreeningFigures, screening_figures
from osteonode.zoo import load_model, record_metrics

#: Held-out phantom seeds: none is a demo recipe's training seed.
DEFAULT_SEEDS = (7301, 7302, 7303)
#: The issue's bar on every held-out seed.
AUC_BAR = 0.85
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def probabilities(pipeline: ClassifierPipeline, files: list[Path]) -> np.ndarray:
    """Probability of osteoporosis per film, from the classifier pipeline's own input and stage."""
    scores = []
    for path in files:
        located = pipeline.locate(load_radiograph(path))
        if not located.evaluable:
            raise SystemExit(f"{path.name} is not evaluable for {pipeline.name}: {located.regions[0].reason}")
        (outcome,) = pipeline.measure(located)
        scores.append(outcome.outputs[0].probability)
    return np.array(scores)


def evaluate(pipeline: str, seeds: tuple[int, ...], films: int, workdir: Path) -> list[ScreeningFigures]:
    """The demo model of ``pipeline`` on ``films`` phantoms of each seed."""
    recipe = DEMO_RECIPES[pipeline]
    if recipe.seed in seeds:
        raise SystemExit(f"seed {recipe.seed} trained {recipe.name}; choose held-out seeds")
    model = load_model(MODELS_DIR / recipe.name, device="cpu")
    pipeline_under_test = ClassifierPipeline.from_model(model, PipelineSettings(), name=pipeline)
    (stage,) = pipeline_under_test.stages
    threshold = stage.threshold
    results = []
    for seed in seeds:
        cohort = make_cohort(recipe.part or pipeline, films, workdir / f"{pipeline}-{seed}",
                             seed=seed, size=recipe.size, workers=2)
        records = [record for record in read_cohort(cohort) if record.evaluable]
        truth = np.array([record.t_score <= OSTEOPOROSIS_T_SCORE for record in records])
        scores = probabilities(pipeline_under_test, [record.file for record in records])
        figures = screening_figures(truth, scores, threshold)
        results.append(figures)
        print(f"  {recipe.name:<20} seed {seed}: {figures.films} films ({figures.positives}"
              f" osteoporotic)  AUC {figures.auc:.3f}  sensitivity {figures.sensitivity:.3f}"
              f"  specificity {figures.specificity:.3f}  (threshold {threshold:g})", flush=True)
    return results


def summary(results: list[ScreeningFigures]) -> dict[str, float]:
    """Mean and standard deviation over the seeds of each figure."""
    figures: dict[str, float] = {}
    for name in ("auc", "sensitivity", "specificity"):
        values = [getattr(result, name) for result in results]
        figures[f"heldout_{name}_mean"] = statistics.fmean(values)
        figures[f"heldout_{name}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    figures["heldout_auc_min"] = min(result.auc for result in results)
    figures["heldout_seeds"] = float(len(results))
    figures["heldout_films_per_seed"] = float(statistics.fmean(r.films for r in results))
    return figures


def record(pipeline: str, figures: dict[str, float]) -> None:
    """Write the held-out figures into the demo model's card."""
    record_metrics(
        MODELS_DIR / DEMO_RECIPES[pipeline].name,
        {key: round(value, 4) for key, value in figures.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--films", type=int, default=100, help="phantoms per seed")
    parser.add_argument("--pipelines", nargs="+", default=list(DEMO_RECIPES), choices=list(DEMO_RECIPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="write the figures into the cards")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    all_pass = True
    with tempfile.TemporaryDirectory(prefix="bench-lumbar-classifiers-") as workdir:
        for pipeline in arguments.pipelines:
            print(f"{pipeline}: held-out phantom seeds {arguments.seeds}", flush=True)
            results = evaluate(pipeline, tuple(arguments.seeds), arguments.films, Path(workdir))
            figures = summary(results)
            passes = all(result.auc >= AUC_BAR for result in results)
            all_pass &= passes
            print(f"  mean (sd) over seeds: AUC {figures['heldout_auc_mean']:.3f}"
                  f" ({figures['heldout_auc_sd']:.3f}), sensitivity"
                  f" {figures['heldout_sensitivity_mean']:.3f} ({figures['heldout_sensitivity_sd']:.3f}),"
                  f" specificity {figures['heldout_specificity_mean']:.3f}"
                  f" ({figures['heldout_specificity_sd']:.3f}); AUC >= {AUC_BAR} on every seed:"
                  f" {'yes' if passes else 'NO'}", flush=True)
            if arguments.record:
                record(pipeline, figures)
    print(f"issue bar (AUC >= {AUC_BAR} on every held-out seed, both models):"
          f" {'met' if all_pass else 'NOT met'}")


if __name__ == "__main__":
    main()
