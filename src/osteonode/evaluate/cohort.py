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
    DXA L1-L4 BMD in g/cm2, for the regression figures. A value outside the physical range
    (:data:`~osteonode.evaluate.predictions.BMD_PHYSICAL_RANGE_G_CM2`) excludes its row.
``bmd_manufacturer`` (optional)
    The DXA scanner make that measured ``bmd_l1_l4`` (``ge_lunar`` or ``hologic``; the phantom
    cohorts write it). The lumbar pipeline reports BMD on the site's scale
    (``[lumbar].site_manufacturer`` of the reference file), so the cohort's BMD is converted to that
    scale with the reference file's ``[[calibration]]`` before the two are compared; a cohort scale
    with no configured conversion stops the run before it starts. Empty or absent means the site's
    own scale (no conversion), and the run logs that it assumed so.
``right_category``/``left_category`` or ``right_t_score``/``left_t_score`` (hip)
    Per side truth (a WHO category, ``not_osteoporosis`` or a T-score); each side becomes its own
    row, osteoporosis vs not osteoporosis.

Images run in parallel worker processes, each loading the pipeline once. Every finished row is
appended to ``predictions.partial.jsonl`` in the output folder, so an interrupted run resumes where it
stopped: rows already in the journal (for the same cohort line, image and pipeline) are not analysed
again, and a last line cut short by a crash is dropped. A row that cannot be analysed (missing file,
undecodable image, routed elsewhere, not evaluable, an error inside the pipeline) is kept as an
exclusion with its reason.
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

from osteonode.bone import (
    DxaManufacturer,
    Laterality,
    Sex,
    Category,
    who_category,
)
from osteonode.config import NodeConfig
from osteonode.evaluate.predictions import (
    BMD_PHYSICAL_RANGE_G_CM2,
    NOT_OSTEOPOROSIS,
    PREDICTIONS_FILE,
    Prediction,
    Status,
    write_predictions,
)
from osteonode.pipelines.base import Result, Truth
from osteonode.reference import MissingReferenceError, ReferenceData, load_reference

__all__ = [
    "JOURNAL_FILE",
    "CohortError",
    "CohortRow",
    "on_site_calibration",
    "predictions_from_result",
    "read_cohort_rows",
    "run_cohort",
]

log = structlog.get_logger(__name__)

#: Rows finished so far, one JSON object per line; read back to resume.
JOURNAL_FILE = "predictions.partial.jsonl"

_SIDES = {"right": Laterality.RIGHT, "left": Laterality.LEFT}


class CohortError(ValueError):
    """The cohort file cannot be used at all (unreadable, no ``file`` column)."""


@dataclass(frozen=True)
class CohortRow:
    """One image of the cohort with its truth, as far as the file gives it.

    ``truth_bmd`` is on the scale of ``bmd_manufacturer``; None means the site's own scale.
    """

    line: int
    path: Path
    id: str
    sex: Sex
    age: float | None
    truth_category: str | None
    truth_bmd: float | None
    side_truth: Mapping[Laterality, str]
    problem: str | None = None
    bmd_manufacturer: DxaManufacturer | None = None


def _truth(cells: Mapping[str, str], prefix: str = "") -> str | None:
    category = cells.get(f"{prefix}category", "").strip()
    if category:
        return category
    score = cells.get(f"{prefix}t_score", "").strip()
    return who_category(float(score)).value if score else None


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _bmd(cells: Mapping[str, str]) -> tuple[float | None, DxaManufacturer | None]:
    bmd = _float(cells.get("bmd_l1_l4"))
    if bmd is None:
        return None, None
    low, high = BMD_PHYSICAL_RANGE_G_CM2
    if not low <= bmd <= high:
        raise ValueError(f"bmd_l1_l4 {bmd:g} is outside the physical range {low}-{high} g/cm2")
    manufacturer = cells.get("bmd_manufacturer")
    return bmd, DxaManufacturer(manufacturer) if manufacturer else None


def read_cohort_rows(path: Path, truth: Truth | None = None) -> list[CohortRow]:
    """Read a cohort CSV; bad cells make a row's ``problem``, never an exception mid-file.

    Parameters
    ----------
    path
        The cohort CSV.
    truth
        When given, the file must have at least one column that gives this truth (the method's
        :attr:`~osteonode.pipelines.registry.Pipeline.truth`).

    Returns
    -------
    list of CohortRow
        One per data line, in file order.

    Raises
    ------
    CohortError
        The file cannot be read, has no ``file`` column, or no column of ``truth``.
    """
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or "file" not in reader.fieldnames:
                raise CohortError(f"{path}: the cohort needs a 'file' column (got {reader.fieldnames})")
            if truth is not None and not set(truth.columns) & set(reader.fieldnames):
                kind = "per-side truth column" if truth is Truth.PER_SIDE else "truth column"
                raise CohortError(
                    f"{path}: the cohort needs a {kind}, one of {', '.join(truth.columns)}"
                    f" (got {', '.join(reader.fieldnames)})"
                )
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CohortError(f"cannot read the cohort {path}: {error}") from None
    rows: list[CohortRow] = []
    first_line: dict[str, int] = {}
    assumed = 0
    for line, cells in enumerate(records, start=2):
        cells = {key: (value or "").strip() for key, value in cells.items() if key is not None}
        file = Path(cells["file"])
        image = file if file.is_absolute() else path.parent / file
        row_id = cells.get("sop_instance_uid") or str(image)
        problem = None
        try:
            truth = _truth(cells)
            sides = {side: value for name, side in _SIDES.items() if (value := _truth(cells, f"{name}_"))}
            age, (bmd, manufacturer) = _float(cells.get("age")), _bmd(cells)
            for category in (truth, *sides.values()):
                if category is not None:
                    Category(category)
        except ValueError as error:
            truth, sides, age, bmd, manufacturer = None, {}, None, None, None
            problem = f"bad value on line {line}: {error}"
        if row_id in first_line:
            problem = f"duplicate of line {first_line[row_id]} ({row_id})"
        first_line.setdefault(row_id, line)
        if problem is None and not cells["file"]:
            problem = "empty 'file' cell"
        if bmd is not None and not cells.get("bmd_manufacturer"):
            assumed += 1
        rows.append(
            CohortRow(
                line, image, row_id, Sex.from_dicom(cells.get("sex")), age, truth, bmd, sides,
                problem, manufacturer,
            )
        )
    if assumed:
        log.warning("cohort_bmd_assumed_on_the_site_scale", rows=assumed)
    return rows


def on_site_calibration(row: CohortRow, reference: ReferenceData) -> CohortRow:
    """The row with its DXA BMD converted to the site's scale, the one the lumbar pipeline reports on.

    Parameters
    ----------
    row
        A cohort row; ``truth_bmd`` on the ``bmd_manufacturer`` scale.
    reference
        The reference data the pipeline uses: ``[lumbar].site_manufacturer`` and the
        ``[[calibration]]`` entries.

    Returns
    -------
    CohortRow
        ``truth_bmd`` converted (rounded to 0.1 mg/cm2) and ``bmd_manufacturer`` the site's; the row
        itself when it has no BMD or is already on that scale.

    Raises
    ------
    MissingReferenceError
        When the reference file has no conversion from the row's scale to the site's.
    """
    site = reference.lumbar.site_manufacturer
    if row.truth_bmd is None or row.bmd_manufacturer is None or row.bmd_manufacturer is site:
        return row
    calibration = reference.lumbar_calibration(row.bmd_manufacturer)
    return dataclasses.replace(
        row, truth_bmd=round(calibration.apply(row.truth_bmd), 4), bmd_manufacturer=site
    )


def _binary(category: str | None) -> str | None:
    if category is None:
        return None
    return Category.OSTEOPOROSIS.value if category == Category.OSTEOPOROSIS else NOT_OSTEOPOROSIS


def _excluded(row: CohortRow, reason: str, side: Laterality | None = None) -> Prediction:
    return Prediction(
        id=row.id, status=Status.EXCLUDED, exclusion_reason=reason, sex=row.sex, age=row.age,
        site="hip" if side is not None else None, side=side,
    )


def predictions_from_result(row: CohortRow, result: Result) -> list[Prediction]:
    """The predictions rows of one analysed film: one per side when its findings are per side (hip),
    each naming the model behind it.

    What is compared comes from the result itself: per-side findings against the cohort's per-side
    truth; otherwise the film's category, the probability of the finding that answers osteoporosis
    as the score, that of a later stage (low bone mass) as the second score, and the summary BMD.
    """
    model = result.model
    return [
        dataclasses.replace(
            prediction, model=model.name, model_version=model.version, synthetic=model.synthetic
        )
        for prediction in _film_predictions(row, result)
    ]


def _film_predictions(row: CohortRow, result: Result) -> list[Prediction]:
    if any(finding.laterality is not None for finding in result.findings):
        predictions = []
        for side in (Laterality.RIGHT, Laterality.LEFT):
            finding = next((f for f in result.findings if f.laterality is side), None)
            if finding is None or not finding.evaluable or finding.osteoporosis_present is None:
                reason = finding.reason if finding is not None and finding.reason else "side not assessed"
                predictions.append(_excluded(row, reason, side))
                continue
            predictions.append(
                Prediction(
                    id=row.id, sex=row.sex, age=row.age, site=result.site.value, side=side,
                    truth_category=_binary(row.side_truth.get(side)),
                    predicted_category=(
                        Category.OSTEOPOROSIS.value if finding.osteoporosis_present else NOT_OSTEOPOROSIS
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
    scored = [finding for finding in result.findings if finding.probability is not None]
    osteoporosis = next((f for f in scored if f.osteoporosis_present is not None), None)
    later_stage = next((f for f in scored if f.osteoporosis_present is None), None)
    summary = next((f for f in result.findings if f.bmd_g_cm2 is not None and f.site is result.site), None)
    return [
        Prediction(
            id=row.id, sex=row.sex, age=row.age,
            truth_category=row.truth_category, predicted_category=result.category.value,
            score=osteoporosis.probability if osteoporosis is not None else None,
            score_low_bone_mass=later_stage.probability if later_stage is not None else None,
            truth_bmd=row.truth_bmd if summary is not None else None,
            predicted_bmd=summary.bmd_g_cm2 if summary is not None else None,
        )
    ]


# Worker processes: each loads the pipeline once (the initializer) and then analyses rows.
_WORKER_STATE: dict[str, object] = {}


def _init_worker(config_json: str, reference_json: str, pipeline: str, single_threaded: bool) -> None:
    import torch

    from osteonode.pipelines.registry import load_pipelines

    if single_threaded:  # several processes share the cores; one torch thread each
        torch.set_num_threads(1)
    config = NodeConfig.model_validate_json(config_json)
    # The reference the truth BMD was converted with, not whatever file the worker would find.
    loaded = load_pipelines(config, ReferenceData.model_validate_json(reference_json))
    _WORKER_STATE["config"] = config
    _WORKER_STATE["pipelines"] = loaded
    _WORKER_STATE["pipeline"] = pipeline


def _analyse_row(row: CohortRow) -> list[dict[str, object]]:
    from osteonode.analysis import analyse_file
    from osteonode.routing import Route

    config = _WORKER_STATE["config"]
    pipelines = _WORKER_STATE["pipelines"]
    pipeline = _WORKER_STATE["pipeline"]
    assert isinstance(config, NodeConfig) and isinstance(pipeline, str)
    if row.problem is not None:
        return [_journal(_excluded(row, row.problem))]
    if not row.path.is_file():
        return [_journal(_excluded(row, f"file not found: {row.path}"))]
    try:
        analysis = analyse_file(row.path, config, pipelines, pipeline_name=pipeline)  # type: ignore[arg-type]
    except Exception as error:  # one film's failure is its exclusion, not the end of the run
        log.exception("cohort_row_failed", line=row.line, id=row.id)
        return [_journal(_excluded(row, f"analysis failed: {type(error).__name__}: {error}"))]
    decision = analysis.decision
    if not isinstance(decision, Route):
        rows = [_excluded(row, f"skipped by routing: {decision.reason.value}")]
    elif pipeline not in decision.pipelines:
        rows = [_excluded(row, f"routed to {', '.join(decision.pipelines)}, not {pipeline}")]
    elif analysis.refusal is not None:
        rows = [_excluded(row, f"{analysis.refusal.kind.value}: {analysis.refusal.detail}")]
    else:
        assert analysis.result is not None
        rows = predictions_from_result(row, analysis.result)
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


def _entry(
    row: CohortRow, pipeline: str, predictions: list[dict[str, object]]
) -> dict[str, object]:
    return {"line": row.line, "id": row.id, "pipeline": pipeline, "rows": predictions}


def _done(
    journal: Path, rows: Sequence[CohortRow], pipeline: str
) -> dict[int, list[dict[str, object]]]:
    """Rows an earlier run of this cohort and pipeline finished; the journal is cut down to them.

    Rewriting drops a last line cut short by a crash, so that appended lines start on a line of
    their own, and entries of another cohort or pipeline left in the same folder.
    """
    if not journal.is_file():
        return {}
    ids = {row.line: row.id for row in rows}
    kept: dict[int, dict[str, object]] = {}
    dropped = 0
    for text in journal.read_text("utf-8").splitlines():
        try:
            entry = json.loads(text)
            line = int(entry["line"])
            matches = ids.get(line) == entry["id"] and entry["pipeline"] == pipeline
            predictions = entry["rows"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):  # cut short by a crash
            dropped += 1
            continue
        if matches and isinstance(predictions, list):
            kept[line] = entry
        else:
            dropped += 1
    partial = journal.with_name(journal.name + ".tmp")
    partial.write_text("".join(json.dumps(entry) + "\n" for entry in kept.values()), "utf-8")
    partial.replace(journal)
    if dropped:
        log.warning("cohort_journal_lines_dropped", lines=dropped, journal=str(journal))
    return {line: entry["rows"] for line, entry in kept.items()}  # type: ignore[misc]


def _method_truth(config: NodeConfig, pipeline: str) -> Truth:
    """What the cohort must give to judge ``pipeline``, from the card of its model folder."""
    from osteonode.pipelines.registry import IMPLEMENTATIONS
    from osteonode.zoo import ModelError, read_model_card

    settings = config.pipeline(pipeline)
    try:
        card = read_model_card(config.models.dir / settings.model_name(pipeline))
    except ModelError as error:
        raise CohortError(f"pipeline {pipeline!r} cannot run: {error}") from None
    if card.classifier is not None:
        return card.classifier.regions.truth
    return IMPLEMENTATIONS[card.pipeline].truth


def _progress(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _results(
    rows: Sequence[CohortRow],
    config: NodeConfig,
    reference: ReferenceData,
    pipeline: str,
    workers: int,
) -> Iterator[tuple[CohortRow, list[dict[str, object]]]]:
    reference_json = reference.model_dump_json(by_alias=True)
    initargs = (config.model_dump_json(), reference_json, pipeline, workers > 1)
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
    pipeline: str,
    out_dir: Path,
    config: NodeConfig,
    *,
    workers: int = 1,
    show_progress: bool = True,
    reference: ReferenceData | None = None,
) -> Path:
    """Analyse every image of ``cohort`` with ``pipeline`` and write ``out_dir/predictions.csv``.

    A journal in ``out_dir`` left by an interrupted run of the same cohort and pipeline is resumed:
    only the rows not in it are analysed.

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
    reference
        T-score references and calibrations for the pipelines and for putting the cohort's lumbar
        BMD on the site's scale; ``load_reference()`` when None.

    Returns
    -------
    Path
        The predictions file.

    Raises
    ------
    CohortError
        The cohort cannot be read, lacks a column the pipeline needs, or gives lumbar BMD on a
        scale the reference file has no conversion from.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    reference = load_reference() if reference is None else reference
    rows = read_cohort_rows(cohort, _method_truth(config, pipeline))
    try:
        rows = [on_site_calibration(row, reference) for row in rows]
    except MissingReferenceError as error:
        raise CohortError(f"{cohort}: cannot put the cohort's BMD on the site's scale: {error}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = out_dir / JOURNAL_FILE
    done = _done(journal, rows, pipeline)
    todo = [row for row in rows if row.line not in done]
    if done:
        log.info("cohort_resumed", done=len(done), remaining=len(todo))
    progress = _progress(show_progress)
    with journal.open("a", encoding="utf-8") as stream, (progress or contextlib.nullcontext()):
        task = progress.add_task(pipeline, total=len(rows), completed=len(done)) if progress else None
        for row, predictions in _results(todo, config, reference, pipeline, workers):
            done[row.line] = predictions
            stream.write(json.dumps(_entry(row, pipeline, predictions)) + "\n")
            stream.flush()
            if progress is not None and task is not None:
                progress.advance(task)
    ordered = [_from_journal(values) for row in rows for values in done[row.line]]
    path = write_predictions(ordered, out_dir / PREDICTIONS_FILE)
    journal.unlink()
    return path
