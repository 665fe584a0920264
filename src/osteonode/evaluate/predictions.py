"""The predictions file: one row per analysed (or excluded) image, read, checked and written.

``predictions.csv`` is the hand-over between running a pipeline over a cohort and the validation
report: the cohort runner writes it, ``osteonode validate --predictions`` reads it, and so can any
other tool's output once put in this shape. It is a UTF-8 CSV file with a header row; column
order does not matter, unknown columns are ignored, and cells are trimmed of surrounding spaces.

Columns
-------
``id`` (required)
    The image's SOP Instance UID or file path. Unique per row, together with ``site`` and
    ``side`` when those are given (a hip film has one row per side).
``truth_category``, ``predicted_category`` (required)
    ``normal``, ``low_bone_mass`` or ``osteoporosis`` (the WHO categories), or
    ``not_osteoporosis`` for a two-class method (hip) that does not separate normal from low bone
    mass. Either may be empty on an excluded row; an analysed row needs both.
``status`` (optional)
    ``analysed`` or ``excluded``; without the column every row is analysed.
``exclusion_reason`` (optional; required text on excluded rows)
    Why the image was not analysed, as the flow of images shall show it.
``sex`` (optional)
    ``F``, ``M``, ``O`` (or ``other``), or empty for unknown.
``age`` (optional)
    Age in years at the examination, 0-130; empty for unknown.
``score`` (optional)
    The method's probability of osteoporosis, 0-1 (the ROC curve of osteoporosis vs not).
``score_low_bone_mass`` (optional)
    The chest method's second-stage probability of low bone mass, 0-1; empty where stage 2 did
    not run (the ROC curve of low bone mass vs normal).
``truth_bmd``, ``predicted_bmd`` (optional)
    Reference (DXA) and estimated areal BMD in g/cm2. A value outside the physical range
    0.1-2.5 g/cm2 excludes its row, with the reason recorded.
``site``, ``side`` (optional)
    Measurement site (free text, e.g. ``total_hip``) and side (``R``/``L``, or ``right``/``left``).
``model``, ``model_version``, ``synthetic`` (optional)
    The model card's name and version behind the row, and whether it was trained on synthetic
    phantoms (``true``/``false``); the report names them on every page.

Malformed values (a category, status, sex or side not listed above, text where a number belongs,
a probability outside 0-1, a repeated ``id``) stop the reading with one :class:`PredictionsError`
that lists every offending line, before anything is computed or written.
"""

from __future__ import annotations

import csv
import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from osteonode.bone import Laterality, Sex
from osteonode.pipelines.base import Category

__all__ = [
    "BMD_PHYSICAL_RANGE_G_CM2",
    "COLUMNS",
    "NOT_OSTEOPOROSIS",
    "PREDICTIONS_FILE",
    "REQUIRED_COLUMNS",
    "Prediction",
    "PredictionsError",
    "Status",
    "read_predictions",
    "write_predictions",
]

log = structlog.get_logger(__name__)

PREDICTIONS_FILE = "predictions.csv"
#: The category of a two-class method's negative answer (the hip model: osteoporosis or not).
NOT_OSTEOPOROSIS = Category.NOT_OSTEOPOROSIS.value
#: Areal BMD values outside this range (g/cm2) cannot be a measurement of a living skeleton.
BMD_PHYSICAL_RANGE_G_CM2 = (0.1, 2.5)
_AGE_RANGE_YEARS = (0.0, 130.0)
#: How many bad lines an error message lists before it stops counting them out.
_MAX_LISTED_PROBLEMS = 20

REQUIRED_COLUMNS = ("id", "truth_category", "predicted_category")
COLUMNS = (
    "id",
    "site",
    "side",
    "sex",
    "age",
    "status",
    "exclusion_reason",
    "truth_category",
    "predicted_category",
    "score",
    "score_low_bone_mass",
    "truth_bmd",
    "predicted_bmd",
    "model",
    "model_version",
    "synthetic",
)
_CATEGORIES = tuple(category.value for category in Category)
_SEX_VALUES = {"f": Sex.FEMALE, "m": Sex.MALE, "o": Sex.OTHER, "other": Sex.OTHER, "": Sex.UNKNOWN,
               "unknown": Sex.UNKNOWN}
_BOOLEAN_VALUES = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False,
                   "": None}
_SIDE_VALUES = {"r": Laterality.RIGHT, "right": Laterality.RIGHT, "l": Laterality.LEFT,
                "left": Laterality.LEFT}


class Status(enum.StrEnum):
    """Whether a row's image entered the statistics."""

    ANALYSED = "analysed"
    EXCLUDED = "excluded"


class PredictionsError(ValueError):
    """A predictions file that cannot be read: the message names every bad line and why."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """One row of a predictions file.

    Attributes
    ----------
    id : str
        SOP Instance UID or file path of the image.
    status : Status
        Analysed or excluded.
    exclusion_reason : str or None
        Why an excluded row was excluded; None for analysed rows.
    truth_category, predicted_category : str or None
        A WHO category value or :data:`NOT_OSTEOPOROSIS`; both set on analysed rows.
    sex : Sex
        ``UNKNOWN`` when not given.
    age : float or None
        Years.
    score, score_low_bone_mass : float or None
        Probabilities of osteoporosis and (chest stage 2) of low bone mass.
    truth_bmd, predicted_bmd : float or None
        g/cm2.
    site : str or None
        Measurement site.
    side : Laterality or None
        Side of a hip row.
    model, model_version : str or None
        Name and version of the model behind the row.
    synthetic : bool or None
        Whether that model was trained on synthetic phantoms; None when not recorded.
    line : int or None
        Line number in the file it was read from (the header is line 1).
    """

    id: str
    status: Status = Status.ANALYSED
    exclusion_reason: str | None = None
    truth_category: str | None = None
    predicted_category: str | None = None
    sex: Sex = Sex.UNKNOWN
    age: float | None = None
    score: float | None = None
    score_low_bone_mass: float | None = None
    truth_bmd: float | None = None
    predicted_bmd: float | None = None
    site: str | None = None
    side: Laterality | None = None
    model: str | None = None
    model_version: str | None = None
    synthetic: bool | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ValueError("id must be a non-empty string")
        if not isinstance(self.status, Status):
            raise TypeError(f"status must be a Status, got {self.status!r}")
        if not isinstance(self.sex, Sex):
            raise TypeError(f"sex must be a Sex, got {self.sex!r}")
        if self.side is not None and not isinstance(self.side, Laterality):
            raise TypeError(f"side must be a Laterality, got {self.side!r}")
        if self.synthetic is not None and not isinstance(self.synthetic, bool):
            raise TypeError(f"synthetic must be a bool or None, got {self.synthetic!r}")
        for name in ("truth_category", "predicted_category"):
            value = getattr(self, name)
            if value is not None and value not in _CATEGORIES:
                raise ValueError(f"{name} {value!r} is not one of {list(_CATEGORIES)}")
        if self.status is Status.EXCLUDED and not self.exclusion_reason:
            raise ValueError("an excluded row needs an exclusion_reason")
        if self.status is Status.ANALYSED:
            if self.exclusion_reason:
                raise ValueError("an analysed row cannot have an exclusion_reason")
            if self.truth_category is None or self.predicted_category is None:
                raise ValueError("an analysed row needs truth_category and predicted_category")
        if self.age is not None:
            _check_within("age", self.age, _AGE_RANGE_YEARS)
        for name in ("score", "score_low_bone_mass"):
            value = getattr(self, name)
            if value is not None:
                _check_within(name, value, (0.0, 1.0))
        for name in ("truth_bmd", "predicted_bmd"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")

    @property
    def key(self) -> tuple[str, str, str]:
        """The row's identity: ``id`` with ``site`` and ``side`` (empty when not given)."""
        return (self.id, self.site or "", self.side.value if self.side is not None else "")

    @property
    def label(self) -> str:
        """The row's identity as text, for messages."""
        return " ".join(part for part in self.key if part)

    def bmd_range_problem(self) -> str | None:
        """Return why a BMD value of the row is physically impossible, or None when both are fine."""
        low, high = BMD_PHYSICAL_RANGE_G_CM2
        for name in ("truth_bmd", "predicted_bmd"):
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                return f"{name} outside the physical range {low}-{high} g/cm2"
        return None


def _check_within(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must lie within {low:g}-{high:g}, got {value:g}")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _number(name: str, text: str) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} {text!r} is not a finite number")
    return value


def _choice(name: str, text: str, choices: dict[str, object]) -> object:
    try:
        return choices[text.lower()]
    except KeyError:
        shown = sorted({key for key in choices if key})
        raise ValueError(f"{name} {text!r} is not one of {shown}") from None


def _category(name: str, text: str) -> str | None:
    if text == "":
        return None
    value = text.lower()
    if value not in _CATEGORIES:
        raise ValueError(f"{name} {text!r} is not one of {list(_CATEGORIES)}")
    return value


def _row_to_prediction(cells: dict[str, str], line: int) -> Prediction:
    status_text = cells.get("status", "")
    status = Status.ANALYSED if status_text == "" and "status" not in cells else _choice(
        "status", status_text, {status.value: status for status in Status}
    )
    side_text = cells.get("side", "")
    return Prediction(
        id=cells["id"],
        status=status,  # type: ignore[arg-type]
        exclusion_reason=cells.get("exclusion_reason") or None,
        truth_category=_category("truth_category", cells["truth_category"]),
        predicted_category=_category("predicted_category", cells["predicted_category"]),
        sex=_choice("sex", cells.get("sex", ""), _SEX_VALUES),  # type: ignore[arg-type]
        age=_number("age", cells.get("age", "")),
        score=_number("score", cells.get("score", "")),
        score_low_bone_mass=_number("score_low_bone_mass", cells.get("score_low_bone_mass", "")),
        truth_bmd=_number("truth_bmd", cells.get("truth_bmd", "")),
        predicted_bmd=_number("predicted_bmd", cells.get("predicted_bmd", "")),
        site=cells.get("site") or None,
        side=None if side_text == "" else _choice("side", side_text, _SIDE_VALUES),  # type: ignore[arg-type]
        model=cells.get("model") or None,
        model_version=cells.get("model_version") or None,
        synthetic=_choice("synthetic", cells.get("synthetic", ""), _BOOLEAN_VALUES),  # type: ignore[arg-type]
        line=line,
    )


def _exclude_impossible_bmd(prediction: Prediction) -> Prediction:
    """Turn an analysed row with a physically impossible BMD into an excluded one, saying why."""
    problem = prediction.bmd_range_problem()
    if problem is None or prediction.status is Status.EXCLUDED:
        return prediction
    log.info("prediction_excluded", id=prediction.label, reason=problem)
    return replace(prediction, status=Status.EXCLUDED, exclusion_reason=problem)


def _problem_summary(path: Path, problems: Sequence[str]) -> str:
    listed = "\n".join(f"  {problem}" for problem in problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{path}: {len(problems)} bad line(s):\n{listed}{tail}"


def read_predictions(path: str | Path) -> tuple[Prediction, ...]:
    """Read and check a predictions file.

    Analysed rows whose truth or estimated BMD lies outside :data:`BMD_PHYSICAL_RANGE_G_CM2`
    come back excluded, with the reason recorded; every other problem is an error.

    Parameters
    ----------
    path : str or pathlib.Path
        The CSV file (see the module documentation for its columns).

    Returns
    -------
    tuple of Prediction
        The rows in file order.

    Raises
    ------
    PredictionsError
        If the file cannot be read, is empty, lacks a required column, or any row holds a
        malformed value or repeats another row's identity; the message lists every such line.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise PredictionsError(f"{path}: the file is empty (no header row)")
            names = [name.strip().lower() for name in header]
            missing = [column for column in REQUIRED_COLUMNS if column not in names]
            if missing:
                raise PredictionsError(
                    f"{path}: missing required column(s) {missing}; the header has {names}"
                )
            repeated = sorted({name for name in names if names.count(name) > 1 and name})
            if repeated:
                raise PredictionsError(f"{path}: column(s) {repeated} appear more than once")
            ignored = [name for name in names if name not in COLUMNS]
            if ignored:
                log.info("predictions_columns_ignored", columns=ignored)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PredictionsError(f"{path}: cannot read the file: {error}") from None

    predictions: list[Prediction] = []
    problems: list[str] = []
    first_line_of: dict[tuple[str, str, str], int] = {}
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            problems.append(f"line {line}: {len(row)} cells, the header has {len(names)}")
            continue
        cells = {name: cell.strip() for name, cell in zip(names, row) if name in COLUMNS}
        try:
            prediction = _row_to_prediction(cells, line)
        except (TypeError, ValueError) as error:
            problems.append(f"line {line}: {error}")
            continue
        earlier = first_line_of.setdefault(prediction.key, line)
        if earlier != line:
            problems.append(f"line {line}: {prediction.label!r} repeats line {earlier}")
            continue
        predictions.append(_exclude_impossible_bmd(prediction))
    if problems:
        raise PredictionsError(_problem_summary(path, problems))
    if not predictions:
        raise PredictionsError(f"{path}: the file has a header but no rows")
    log.info("predictions_read", rows=len(predictions),
             excluded=sum(p.status is Status.EXCLUDED for p in predictions))
    return tuple(predictions)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return "" if value is Sex.UNKNOWN else str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_predictions(predictions: Iterable[Prediction], path: str | Path) -> Path:
    """Write predictions as a CSV file that :func:`read_predictions` reads back unchanged.

    Parameters
    ----------
    predictions : iterable of Prediction
        The rows, in the order to write them; their identities must be unique.
    path : str or pathlib.Path
        The file to write (its folder must exist); an existing file is replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        If an item is not a :class:`Prediction`.
    ValueError
        If two rows share an identity (``id``, ``site``, ``side``).
    """
    rows = list(predictions)
    seen: set[tuple[str, str, str]] = set()
    for prediction in rows:
        if not isinstance(prediction, Prediction):
            raise TypeError(f"expected Prediction rows, got {type(prediction).__name__}")
        if prediction.key in seen:
            raise ValueError(f"{prediction.label!r} appears more than once")
        seen.add(prediction.key)
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for prediction in rows:
            writer.writerow(_cell(getattr(prediction, column)) for column in COLUMNS)
    return path
