"""Run a pipeline over a local cohort and write its ``predictions.csv``.

A cohort is a CSV file with one row per image: ``file`` (a path, relative to the CSV's folder or
absolute) and the site's reference values. The phantom ``cohort.csv`` is one such file. Columns read:

``file`` (required)
    The DICOM file.
``sop_instance_uid`` (optional)
    Used as the row's ``id`` (else the file path); a repeated UID excludes the later row.
``sex``, ``age`` (optional)
    As DICOM Patient's Sex (F/M/O) and years.
``category`` or ``t_score``
    The DXA truth of the film: a WHO category, or the lowest T-score it is derived from.
``bmd_l1_l4`` (lumbar, optional)
    DXA L1-L4 BMD in g/cm2, in the site's DXA calibration, for the regression figures.
``right_category``/``left_category`` or ``right_t_score``/``left_t_score`` (hip)
    Per side truth (a WHO category, ``not_osteoporosis`` or a T-score); each side becomes its own
    row, osteoporosis vs not osteoporosis.

Images run in parallel worker processes, each loading the pipeline once. Every finished row is
appended to ``predictions.partial.jsonl`` in the output folder, so an interrupted run resumes where it
stopped; a row that cannot be analysed (missing file, undecodable image, routed elsewhere, not
evaluable) is kept as an exclusion with its reason.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from osteonode.bone import Laterality, Sex, WhoCategory, who_category
from osteonode.config import NodeConfig, PipelineName
from osteonode.evaluate.predictions import (
    NOT_OSTEOPOROSIS,
    PREDICTIONS_FILE,
    Prediction,
    Status,
    write_predictions,
)
from osteonode.pipelines.base import Category, FindingSite, Result

__all__ = ["JOURNAL_FILE", "CohortError", "CohortRow", "predictions_from_result", "read_cohort_rows", "run_cohort"]

log = structlog.get_logger(__name__)

#: Rows finished so far, one JSON object per line; read back to resume.
JOURNAL_FILE = "predictions.partial.jsonl"

_SIDES = {"right": Laterality.RIGHT, "left": Laterality.LEFT}


class CohortError(ValueError):
    """The cohort file cannot be used at all (unreadable, no ``file`` column)."""


@dataclass(frozen=True)
class CohortRow:
    """One image of the cohort with its truth, as far as the file gives it."""

    line: int
    path: Path
    id: str
    sex: Sex
    age: float | None
    truth_category: str | None
    truth_bmd: float | None
    side_truth: Mapping[Laterality, str]
    problem: str | None = None


def _truth(cells: Mapping[str, str], prefix: str = "") -> str | None:
    category = cells.get(f"{prefix}category", "").strip()
    if category:
        return category
    score = cells.get(f"{prefix}t_score", "").strip()
    return who_category(float(score)).value if score else None


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def read_cohort_rows(path: Path) -> list[CohortRow]:
    """Read a cohort CSV; bad cells make a row's ``problem``, never an exception mid-file.

    Raises
    ------
    CohortError
        The file cannot be read or has no ``file`` column.
    """
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or "file" not in reader.fieldnames:
                raise CohortError(f"{path}: the cohort needs a 'file' column (got {reader.fieldnames})")
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CohortError(f"cannot read the cohort {path}: {error}") from None
    rows: list[CohortRow] = []
    first_line: dict[str, int] = {}
    for line, cells in enumerate(records, start=2):
        cells = {key: (value or "").strip() for key, value in cells.items() if key is not None}
        file = Path(cells["file"])
        image = file if file.is_absolute() else path.parent / file
        row_id = cells.get("sop_instance_uid") or str(image)
        problem = None
        try:
            truth = _truth(cells)
            sides = {side: value for name, side in _SIDES.items() if (value := _truth(cells, f"{name}_"))}
            age, bmd = _float(cells.get("age")), _float(cells.get("bmd_l1_l4"))
            for category in (truth, *sides.values()):
                if category is not None:
                    Category(category)
        except ValueError as error:
            truth, sides, age, bmd, problem = None, {}, None, None, f"bad value on line {line}: {error}"
        if row_id in first_line:
            problem = f"duplicate of line {first_line[row_id]} ({row_id})"
        first_line.setdefault(row_id, line)
        if problem is None and not cells["file"]:
            problem = "empty 'file' cell"
        rows.append(
            CohortRow(line, image, row_id, Sex.from_dicom(cells.get("sex")), age, truth, bmd, sides, problem)
        )
    return rows


def _binary(category: str | None) -> str | None:
    if category is None:
        return None
    return WhoCategory.OSTEOPOROSIS.value if category == WhoCategory.OSTEOPOROSIS else NOT_OSTEOPOROSIS


def _excluded(row: CohortRow, reason: str, side: Laterality | None = None) -> Prediction:
    return Prediction(
        id=row.id, status=Status.EXCLUDED, exclusion_reason=reason, sex=row.sex, age=row.age,
        site="hip" if side is not None else None, side=side,
    )


def predictions_from_result(row: CohortRow, pipeline: PipelineName, result: Result) -> list[Prediction]:
    """The predictions rows of one analysed film (two for a hip film, one per side)."""
    if pipeline is PipelineName.HIP:
        predictions = []
        for side in (Laterality.RIGHT, Laterality.LEFT):
            finding = next(
                (f for f in result.findings if f.site is FindingSite.HIP and f.laterality is side), None
            )
            if finding is None or not finding.evaluable or finding.osteoporosis_present is None:
                reason = finding.reason if finding is not None and finding.reason else "side not assessed"
                predictions.append(_excluded(row, reason, side))
                continue
            predictions.append(
                Prediction(
                    id=row.id, sex=row.sex, age=row.age, site="hip", side=side,
                    truth_category=_binary(row.side_truth.get(side)),
                    predicted_category=(
                        WhoCategory.OSTEOPOROSIS.value if finding.osteoporosis_present else NOT_OSTEOPOROSIS
                    ),
                    score=finding.probability,
                )
            )
        return [p for p in predictions if p.status is Status.EXCLUDED or p.truth_category is not None] or [
            _excluded(row, "no per-side truth in the cohort")
        ]
    if not result.evaluable or result.category is None:
        return [_excluded(row, f"not evaluable: {result.reason}")]
    if row.truth_category is None:
        return [_excluded(row, "no truth category or T-score in the cohort")]
    stage = {f.name.split(":")[0]: f for f in result.findings if f.site is FindingSite.CHEST}
    summary = next((f for f in result.findings if f.site is FindingSite.LUMBAR_SPINE), None)
    return [
        Prediction(
            id=row.id, sex=row.sex, age=row.age,
            truth_category=row.truth_category, predicted_category=result.category.value,
            score=stage["Stage 1"].probability if "Stage 1" in stage else None,
            score_low_bone_mass=stage["Stage 2"].probability if "Stage 2" in stage else None,
            truth_bmd=row.truth_bmd if pipeline is PipelineName.LUMBAR else None,
            predicted_bmd=summary.bmd_g_cm2 if summary is not None else None,
        )
    ]


# Worker processes: each loads the pipeline once (the initializer) and then analyses rows.
_WORKER_STATE: dict[str, object] = {}


def _init_worker(config_json: str, pipeline: str, single_threaded: bool) -> None:
    import torch

    from osteonode.pipelines import load_pipelines

    if single_threaded:  # several processes share the cores; one torch thread each
        torch.set_num_threads(1)
    config = NodeConfig.model_validate_json(config_json)
    loaded = load_pipelines(config)
    name = PipelineName(pipeline)
    _WORKER_STATE["config"] = config
    _WORKER_STATE["pipelines"] = loaded
    _WORKER_STATE["pipeline"] = name


def _analyse_row(row: CohortRow) -> list[dict[str, object]]:
    from osteonode.analysis import analyse_file
    from osteonode.routing import Route

    config = _WORKER_STATE["config"]
    pipelines = _WORKER_STATE["pipelines"]
    pipeline = _WORKER_STATE["pipeline"]
    assert isinstance(config, NodeConfig) and isinstance(pipeline, PipelineName)
    if row.problem is not None:
        return [_journal(_excluded(row, row.problem))]
    if not row.path.is_file():
        return [_journal(_excluded(row, f"file not found: {row.path}"))]
    analysis = analyse_file(row.path, config, pipelines)  # type: ignore[arg-type]
    decision = analysis.decision
    if not isinstance(decision, Route):
        rows = [_excluded(row, f"skipped by routing: {decision.reason.value}")]
    elif decision.pipeline is not pipeline:
        rows = [_excluded(row, f"routed to {decision.pipeline.value}, not {pipeline.value}")]
    elif analysis.refusal is not None:
        rows = [_excluded(row, f"{analysis.refusal.kind.value}: {analysis.refusal.detail}")]
    else:
        assert analysis.result is not None
        rows = predictions_from_result(row, pipeline, analysis.result)
    return [_journal(prediction) for prediction in rows]


def _journal(prediction: Prediction) -> dict[str, object]:
    values = dataclasses.asdict(prediction)
    values["status"] = prediction.status.value
    values["sex"] = prediction.sex.value
    values["side"] = prediction.side.value if prediction.side is not None else None
    values.pop("line")
    return values


def _from_journal(values: Mapping[str, object]) -> Prediction:
    data = dict(values)
    data["status"] = Status(data["status"])
    data["sex"] = Sex(data["sex"])
    data["side"] = Laterality(data["side"]) if data.get("side") else None
    return Prediction(**data)  # type: ignore[arg-type]


def _done(journal: Path) -> dict[int, list[dict[str, object]]]:
    done: dict[int, list[dict[str, object]]] = {}
    if journal.is_file():
        for text in journal.read_text("utf-8").splitlines():
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:  # a line cut short by the interruption
                continue
            done[int(entry["line"])] = entry["rows"]
    return done


def _progress(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _results(
    rows: Sequence[CohortRow], config: NodeConfig, pipeline: PipelineName, workers: int
) -> Iterator[tuple[CohortRow, list[dict[str, object]]]]:
    initargs = (config.model_dump_json(), pipeline.value, workers > 1)
    if workers == 1:
        _init_worker(*initargs)
        for row in rows:
            yield row, _analyse_row(row)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=initargs) as pool:
        yield from zip(rows, pool.map(_analyse_row, rows, chunksize=1))


def run_cohort(
    cohort: Path,
    pipeline: PipelineName,
    out_dir: Path,
    config: NodeConfig,
    *,
    workers: int = 1,
    show_progress: bool = True,
) -> Path:
    """Analyse every image of ``cohort`` with ``pipeline`` and write ``out_dir/predictions.csv``.

    Parameters
    ----------
    cohort
        The cohort CSV.
    pipeline
        Which pipeline to run (images routed elsewhere are excluded with the reason).
    out_dir
        Output folder; holds the resume journal while running.
    config
        Node configuration (routing, models, pipeline settings).
    workers
        Parallel worker processes.
    show_progress
        Show a progress bar.

    Returns
    -------
    Path
        The predictions file.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rows = read_cohort_rows(cohort)
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = out_dir / JOURNAL_FILE
    done = _done(journal)
    todo = [row for row in rows if row.line not in done]
    if done:
        log.info("cohort_resumed", done=len(done), remaining=len(todo))
    progress = _progress(show_progress)
    with journal.open("a", encoding="utf-8") as stream, (progress or contextlib.nullcontext()):
        task = progress.add_task(f"{pipeline.value}", total=len(rows), completed=len(done)) if progress else None
        for row, predictions in _results(todo, config, pipeline, workers):
            done[row.line] = predictions
            stream.write(json.dumps({"line": row.line, "rows": predictions}) + "\n")
            stream.flush()
            if progress is not None and task is not None:
                progress.advance(task)
    ordered = [_from_journal(values) for row in rows for values in done[row.line]]
    path = write_predictions(ordered, out_dir / PREDICTIONS_FILE)
    journal.unlink()
    return path
