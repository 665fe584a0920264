"""Whether a model gives the same results in bfloat16 as in float32: measured on phantoms, kept in
its card.

``osteonode models verify-precision FOLDER`` runs the model's pipeline on phantom films of the part
it reads, once in float32 and once in bfloat16 autocast, and writes to the card's ``[metrics]``:

* ``bfloat16_max_abs_difference``: the largest absolute difference between the two runs of any
  model output in the results: a class probability (classifiers) or a BMD in g/cm2 (the lumbar
  regression). ``[inference] bfloat16_autocast = "auto"`` runs the model in bfloat16 only when
  this is within ``bfloat16_tolerance`` (default 1e-3).
* ``bfloat16_decisions_agree``: 1 when every film got the same answers (evaluable or not, each
  finding's category and counted vertebrae), else 0; a film whose probability lies at a
  threshold may flip even when the outputs agree closely.
* ``bfloat16_films``: how many films were compared.

Only the results' numbers are compared; the heat-maps are not.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch

from osteonode.config import PipelineSettings
from osteonode.imaging.pixels import Radiograph, load_radiograph
from osteonode.inference import BFLOAT16_METRIC, InferencePlan
from osteonode.pipelines.base import Finding, Result
from osteonode.pipelines.registry import IMPLEMENTATIONS, Pipeline
from osteonode.reference import load_reference
from osteonode.zoo import ModelCard, ModelError, load_model, record_metrics

__all__ = [
    "DECISIONS_METRIC",
    "FILMS_METRIC",
    "PrecisionAgreement",
    "measure_agreement",
    "result_difference",
    "verify_model_precision",
]

log = structlog.get_logger(__name__)

#: Card metric: 1.0 when float32 and bfloat16 gave every film the same answers, else 0.0.
DECISIONS_METRIC = "bfloat16_decisions_agree"
#: Card metric: the number of films compared.
FILMS_METRIC = "bfloat16_films"
#: Phantoms compared by default: enough to meet both classes of a two-class model.
DEFAULT_FILMS = 8
#: Long side of the phantom films; the networks see a fixed size, so larger films add only time.
PHANTOM_SIZE = 1024


@dataclass(frozen=True)
class PrecisionAgreement:
    """How far a model's bfloat16 results are from its float32 ones, over some films.

    Parameters
    ----------
    films
        Films compared.
    max_abs_difference
        The largest absolute difference of a probability or BMD (g/cm2).
    largest_at
        Which output it was, e.g. ``"Right hip: probability"``.
    decisions_agree
        Whether every film got the same answers.
    """

    films: int
    max_abs_difference: float
    largest_at: str
    decisions_agree: bool

    def metrics(self) -> dict[str, float]:
        """The card's ``[metrics]`` entries."""
        return {
            BFLOAT16_METRIC: round(float(self.max_abs_difference), 6),
            DECISIONS_METRIC: 1.0 if self.decisions_agree else 0.0,
            FILMS_METRIC: float(self.films),
        }


def _answers(finding: Finding) -> tuple[object, ...]:
    return (finding.evaluable, finding.included, finding.category, finding.osteoporosis_present)


def result_difference(float32: Result, bfloat16: Result) -> tuple[float, str, bool]:
    """Compare two results of one film: the largest output difference, where, and whether they agree.

    Returns
    -------
    (difference, where, decisions_agree)
        The largest absolute difference of a finding's probability or BMD (0 when none is given
        by both), its finding and quantity, and whether the answers are the same.
    """
    agree = (float32.evaluable, float32.category) == (bfloat16.evaluable, bfloat16.category)
    reduced = {finding.name: finding for finding in bfloat16.findings}
    agree &= set(reduced) == {finding.name for finding in float32.findings}
    largest, where = 0.0, ""
    for exact in float32.findings:
        other = reduced.get(exact.name)
        if other is None:
            continue
        agree &= _answers(exact) == _answers(other)
        for quantity in ("probability", "bmd_g_cm2"):
            a, b = getattr(exact, quantity), getattr(other, quantity)
            if a is not None and b is not None and abs(a - b) > largest:
                largest, where = abs(a - b), f"{exact.name}: {quantity}"
    return largest, where, agree


def measure_agreement(
    pipeline: Pipeline, radiographs: Sequence[Radiograph], device: torch.device
) -> PrecisionAgreement:
    """Run each film in float32 and in bfloat16 autocast and compare the results.

    Raises
    ------
    ValueError
        No films.
    """
    if not radiographs:
        raise ValueError("at least one film is needed to compare precisions")
    largest, largest_at, agree = 0.0, "", True
    for radiograph in radiographs:
        results = []
        for bfloat16 in (False, True):
            with InferencePlan(device=device, bfloat16=bfloat16).autocast():
                results.append(pipeline.run(radiograph))
        difference, where, same = result_difference(*results)
        agree &= same
        if difference >= largest:
            largest, largest_at = difference, where
    return PrecisionAgreement(
        films=len(radiographs), max_abs_difference=largest, largest_at=largest_at, decisions_agree=agree
    )


def verify_model_precision(
    directory: Path | str,
    *,
    films: int = DEFAULT_FILMS,
    seed: int = 2024,
    device: str = "cpu",
    record: bool = True,
) -> tuple[PrecisionAgreement, ModelCard]:
    """Measure a model folder's bfloat16 agreement on phantoms, and record it in its card.

    Parameters
    ----------
    directory
        The model folder.
    films
        Phantom films of the part the model reads.
    seed
        The phantoms' seed.
    device
        Where to run (``cpu``, ``cuda``...).
    record
        Write the figures to the card's ``[metrics]`` (the weights are not touched).

    Returns
    -------
    (agreement, card)
        The figures, and the card (as written when ``record``).

    Raises
    ------
    ModelError
        The folder does not load, or osteonode makes no phantoms of the films its model reads.
    ValueError
        ``films`` is below 1.
    """
    from osteonode.demo import phantom_part
    from osteonode.phantoms import make_cohort, read_cohort

    if isinstance(films, bool) or not isinstance(films, int) or films < 1:
        raise ValueError(f"films must be a positive int, got {films!r}")
    model = load_model(directory, device=device)
    card = model.card
    pipeline = IMPLEMENTATIONS[card.pipeline].from_model(
        model, PipelineSettings(), load_reference(), name=card.pipeline.value
    )
    part = phantom_part(pipeline)
    if part is None:
        raise ModelError(f"model {card.name!r}: osteonode makes no phantoms of the films it reads")
    with tempfile.TemporaryDirectory(prefix="osteonode-precision-") as scratch:
        cohort = make_cohort(part, films, Path(scratch), seed=seed, size=PHANTOM_SIZE)
        radiographs = [load_radiograph(phantom.file) for phantom in read_cohort(cohort)]
    agreement = measure_agreement(pipeline, radiographs, model.device)
    log.info("bfloat16_agreement_measured", model=card.name, films=agreement.films,
             max_abs_difference=agreement.max_abs_difference, largest_at=agreement.largest_at,
             decisions_agree=agreement.decisions_agree)
    if record:
        card = record_metrics(directory, agreement.metrics())
    return agreement, card
