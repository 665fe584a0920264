"""Benchmark: the demo models' acceptance bars on phantoms of several seeds no training used.

For each part and each held-out seed, a phantom cohort is made at the part's demo-recipe size and
hard-case share, and the part's trainer module runs its ``validate`` on it: the written model run
as the pipeline, the same end-to-end figures its model card records. Printed: each seed's
figures, then for each bar of the issue the mean, standard deviation, minimum and maximum over
the seeds and whether the bar holds on every seed. ``--json`` also writes the figures;
``--record`` writes each bar's mean, standard deviation, minimum and maximum, as printed, into the
part's model card (``acceptance_<figure>_mean`` and so on, with the seeds and films per seed), so
the card records what the bench printed.

The bars (issue 20): lumbar Pearson r >= 0.90, NRMSE <= 0.08, WHO quadratic-weighted kappa >=
0.85; chest stage 1 AUC >= 0.90, stage 2 AUC >= 0.85, three-class quadratic-weighted kappa >=
0.80; hip per-side AUC >= 0.85. A figure that cannot be computed on a seed fails that seed.

Usage: ``python bench/acceptance.py [--seeds 3] [--lumbar-films 60] [--chest-films 80]
[--hip-films 120] [--parts lumbar chest hip] [--models models] [--json figures.json] [--record]``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import operator
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog
import torch
from rich.console import Console
from rich.table import Table

from osteonode.phantoms import make_cohort, read_cohort
from osteonode.pipelines.base import Method
from osteonode.train import DemoRecipe, trainer
from osteonode.zoo import CARD_FILE, record_metrics

#: Held-out seeds: the k-th seed of a run is FIRST_SEED + k (no demo recipe trains on them).
FIRST_SEED = 880_001


@dataclass(frozen=True)
class Bar:
    """One acceptance bar: a figure of the trainer's ``validate`` and its limit."""

    figure: str
    label: str
    compare: Callable[[float, float], bool]
    limit: float

    @property
    def text(self) -> str:
        return f"{self.label} {'>=' if self.compare is operator.ge else '<='} {self.limit:g}"

    def holds(self, value: float | None) -> bool:
        return value is not None and math.isfinite(value) and value >= 0 and self.compare(value, self.limit)


BARS = {
    Method.LUMBAR: (
        Bar("bmd_pearson_r", "BMD Pearson r", operator.ge, 0.90),
        Bar("bmd_nrmse", "BMD NRMSE", operator.le, 0.08),
        Bar("who_quadratic_kappa", "WHO quadratic kappa", operator.ge, 0.85),
    ),
    Method.CHEST: (
        Bar("stage1_auc", "stage 1 AUC", operator.ge, 0.90),
        Bar("stage2_auc", "stage 2 AUC", operator.ge, 0.85),
        Bar("three_class_kappa_quadratic", "three-class quadratic kappa", operator.ge, 0.80),
    ),
    Method.HIP: (Bar("validation_auc", "per-side AUC", operator.ge, 0.85),),
}


def _figures(part: Method, model: Path, films: int, seed: int) -> dict[str, float]:
    module = trainer(part)
    recipe: DemoRecipe = module.DEMO_RECIPE
    if seed == recipe.seed:
        raise ValueError(f"seed {seed} is the {part.value} demo recipe's training seed")
    with tempfile.TemporaryDirectory() as folder:
        cohort = make_cohort(
            part.value, films, folder, seed=seed, size=recipe.size,
            hard_fraction=recipe.hard_fraction, workers=2,
        )
        return module.validate(model, read_cohort(cohort))


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation, minimum and maximum of one figure over the seeds."""

    mean: float
    sd: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float | None]) -> Spread | None:
        """The spread of the values that could be computed; None when none could."""
        finite = [v for v in values if v is not None and math.isfinite(v) and v >= 0]
        if not finite:
            return None
        sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
        return cls(statistics.mean(finite), sd, min(finite), max(finite))


def _summary_row(bar: Bar, values: list[float | None]) -> list[str]:
    spread = Spread.of(values)
    if spread is None:
        return [bar.text, "–", "–", "–", "–", "[red]no[/red]"]
    every = all(bar.holds(v) for v in values)
    return [
        bar.text, *(f"{value:.3f}" for value in (spread.mean, spread.sd, spread.min, spread.max)),
        "[green]yes[/green]" if every else "[red]no[/red]",
    ]


def _card_figures(part: Method, by_seed: dict[int, dict[str, float]], films: int) -> dict[str, float]:
    """The part's bar figures over the seeds, rounded as printed, for the model card."""
    seeds = sorted(by_seed)
    figures = {
        "acceptance_seeds": float(len(seeds)),
        "acceptance_first_seed": float(seeds[0]),
        "acceptance_films_per_seed": float(films),
    }
    for bar in BARS[part]:
        spread = Spread.of([by_seed[s].get(bar.figure) for s in seeds])
        if spread is not None:
            figures |= {
                f"acceptance_{bar.figure}_{name}": round(value, 3)
                for name, value in asdict(spread).items()
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="Held-out seeds per part.")
    parser.add_argument("--lumbar-films", type=int, default=60)
    parser.add_argument("--chest-films", type=int, default=80)
    parser.add_argument("--hip-films", type=int, default=120)
    parser.add_argument("--parts", nargs="+", default=[p.value for p in BARS], choices=[p.value for p in BARS])
    parser.add_argument("--models", type=Path, default=Path("models"), help="Folder of the demo models.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="Also write every figure to this file.")
    parser.add_argument(
        "--record", action="store_true", help="Write each bar's figures into the part's model card."
    )
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    torch.set_num_threads(arguments.threads)
    # Wide enough for the tables when the output goes to a file.
    console = Console(width=None if sys.stdout.isatty() else 110)
    seeds = [FIRST_SEED + k for k in range(arguments.seeds)]
    films = {Method.LUMBAR: arguments.lumbar_films, Method.CHEST: arguments.chest_films,
             Method.HIP: arguments.hip_films}
    everything: dict[str, dict] = {}
    for part in (Method(name) for name in arguments.parts):
        model = arguments.models / trainer(part).DEMO_RECIPE.name
        started = time.monotonic()
        by_seed = {seed: _figures(part, model, films[part], seed) for seed in seeds}
        bars = BARS[part]
        per_seed = Table("seed", *(bar.label for bar in bars),
                         title=f"{part.value}: {model} on {films[part]} phantoms per seed")
        for seed, figures in by_seed.items():
            per_seed.add_row(str(seed), *(
                f"{figures.get(bar.figure, math.nan):.3f}" + ("" if bar.holds(figures.get(bar.figure)) else " ✗")
                for bar in bars
            ))
        console.print(per_seed)
        summary = Table("bar", "mean", "SD", "min", "max", "holds on every seed",
                        title=f"{part.value}: {len(seeds)} seeds ({time.monotonic() - started:.0f} s)")
        for bar in bars:
            summary.add_row(*_summary_row(bar, [by_seed[s].get(bar.figure) for s in seeds]))
        console.print(summary)
        everything[part.value] = {
            "model": str(model), "films_per_seed": films[part],
            "seeds": {str(seed): figures for seed, figures in by_seed.items()},
            "bars": {bar.figure: {"bar": bar.text,
                                  "holds_on_every_seed": all(bar.holds(by_seed[s].get(bar.figure)) for s in seeds)}
                     for bar in bars},
        }
        if arguments.record:
            record_metrics(model, _card_figures(part, by_seed, films[part]))
            console.print(f"recorded the {part.value} figures in {model / CARD_FILE}")
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(everything, indent=2, allow_nan=True) + "\n")
        console.print(f"wrote {arguments.json}")


if __name__ == "__main__":
    main()
