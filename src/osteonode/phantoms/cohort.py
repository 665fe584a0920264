"""Make phantom cohorts: DICOM files plus a flat ground-truth table, and read that table back.

Coordinates in the table are source pixels of the stored image, x = column, y = row, origin at the
centre of the top-left pixel; ``spacing_mm`` is the detector pitch (Imager Pixel Spacing, or Pixel
Spacing on CR files that carry only that). Patient sides: on these frontal films the patient's
right is on the image left.

Columns of ``cohort.csv`` (one row per file):

- all parts: ``file`` (name in the folder), ``sop_instance_uid``, ``part``, ``sex``, ``age``,
  ``evaluable`` (``true``/``false``), ``hard_case`` (none/implant/scoliosis/cropped),
  ``expected_route`` (the pipeline routing must choose), ``spacing_mm``, ``magnification``,
  ``rows``, ``columns``, and the encoding: ``modality``, ``photometric``, ``bits_stored``,
  ``transfer_syntax``, ``voi``, ``body_part_examined`` (``<absent>`` when not written),
  ``view_position``, ``study_description``; then ``t_score`` and ``category`` (WHO).
- lumbar and chest: ``bmd_manufacturer`` (the DXA scale of every BMD value,
  :data:`~osteonode.phantoms.demographics.BMD_MANUFACTURER`).
- lumbar: ``bmd_T12`` ... ``bmd_L5`` (g/cm2), ``bmd_l1_l4`` (their L1-L4 mean), ``t_score`` of
  ``bmd_l1_l4`` against :data:`LUMBAR_REFERENCE`, and ``<V>_x1, <V>_y1 ... <V>_x4, <V>_y4`` per
  vertebra: body corners top-left, top-right, bottom-right, bottom-left.
- hip: per patient side ``right_``/``left_``: ``neck_bmd``, ``total_hip_bmd``, ``t_score`` (lower
  of neck and total hip), ``category``, ``evaluable``, ``prosthesis``, ``crop_x0, crop_y0, crop_x1,
  crop_y1`` (METHODS.md crop), ``neck_x, neck_y``; ``t_score``/``category`` are the lower side's.
- chest: ``bmd_l1_l4``, ``lumbar_t_score``, the hip columns of both sides without geometry,
  ``t_score`` = lowest site, and ``lung_x0, lung_y0, lung_x1, lung_y1``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog
from rich.progress import track

from osteonode.bone import Category
from osteonode.phantoms.chest import draw_chest
from osteonode.phantoms.demographics import (
    BMD_MANUFACTURER,
    VERTEBRAE,
    Patient,
    sample_patient,
    who_category,
)
from osteonode.phantoms.dicom import build_dataset, choose_variant, make_identity, write_dataset
from osteonode.phantoms.enum import HardCase, Part
from osteonode.phantoms.hip import draw_hip
from osteonode.phantoms.lumbar import draw_lumbar
from osteonode.phantoms.physics import Exposure, burn_annotations, render
from osteonode.phantoms.raster import Grid

log = structlog.get_logger(__name__)

COHORT_FILE = "cohort.csv"
#: Hard cases each part can show.
HARD_CASES = {
    Part.LUMBAR: (HardCase.IMPLANT, HardCase.SCOLIOSIS, HardCase.CROPPED),
    Part.CHEST: (HardCase.SCOLIOSIS, HardCase.CROPPED),
    Part.HIP: (HardCase.IMPLANT, HardCase.CROPPED),
}
#: Long side of the field (mm), shape (rows, columns) relative to the long side, tube voltage (kV).
_FIELD = {
    Part.LUMBAR: ((380.0, 440.0), (1.0, 0.8), (72.0, 92.0)),
    Part.CHEST: ((400.0, 440.0), (1.0, 1.0), (105.0, 125.0)),
    Part.HIP: ((400.0, 440.0), (0.8, 1.0), (70.0, 85.0)),
}
_PART_CODE = {Part.LUMBAR: 1, Part.CHEST: 2, Part.HIP: 3}
SIZE_RANGE = (128, 4096)
DEFAULT_SIZE = 2500


class PhantomError(ValueError):
    """A phantom request that cannot be carried out (bad argument, unwritable folder)."""


@dataclass(frozen=True)
class SideTruth:
    """Ground truth of one hip side as read from a cohort table."""

    neck_bmd: float
    total_hip_bmd: float
    t_score: float
    category: Category
    evaluable: bool
    prosthesis: bool
    crop_box: tuple[float, float, float, float]
    neck_centre: tuple[float, float]


@dataclass(frozen=True)
class PhantomRecord:
    """One row of a cohort table.

    Attributes
    ----------
    file:
        Absolute path of the DICOM file.
    t_score, category:
        The image's answer: L1-L4 (lumbar), lowest site (chest), lowest side (hip).
    bmd:
        Site BMD values (g/cm2) by column name (``bmd_L1``, ``bmd_l1_l4``, ``right_neck_bmd``, ...).
    bmd_manufacturer:
        The DXA scale of the lumbar BMD values (``hologic``, ``ge_lunar``), None when not given.
    corners:
        Lumbar only: vertebra name -> (4, 2) array of (x, y), top-left, top-right, bottom-right,
        bottom-left.
    sides:
        Hip only: ``"right"``/``"left"`` (patient sides) -> :class:`SideTruth`.
    row:
        The raw CSV row.
    """

    file: Path
    sop_instance_uid: str
    part: Part
    sex: str
    age: int
    evaluable: bool
    hard_case: HardCase
    spacing_mm: float
    t_score: float
    category: Category
    bmd: dict[str, float]
    bmd_manufacturer: str | None = None
    corners: dict[str, np.ndarray] = field(default_factory=dict)
    sides: dict[str, SideTruth] = field(default_factory=dict)
    row: dict[str, str] = field(default_factory=dict)


def _image_rng(seed: int, part: Part, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _PART_CODE[part], index]))


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}"


def _lumbar_columns(patient: Patient, geometry) -> dict[str, str]:
    row = {"bmd_manufacturer": BMD_MANUFACTURER}
    row.update({f"bmd_{name}": _fmt(patient.vertebra_bmd[name]) for name in VERTEBRAE})
    row["bmd_l1_l4"] = _fmt(patient.lumbar_bmd)
    row["t_score"] = _fmt(patient.lumbar_t_score, 2)
    row["category"] = who_category(patient.lumbar_t_score).value
    for name in VERTEBRAE:
        for k, (x, y) in enumerate(geometry.corners[name], start=1):
            row[f"{name}_x{k}"] = _fmt(x, 1)
            row[f"{name}_y{k}"] = _fmt(y, 1)
    return row


def _site_columns(patient: Patient) -> dict[str, str]:
    row = {}
    for side in ("right", "left"):
        truth = getattr(patient, f"{side}_hip")
        row[f"{side}_neck_bmd"] = _fmt(truth.neck_bmd)
        row[f"{side}_total_hip_bmd"] = _fmt(truth.total_hip_bmd)
        row[f"{side}_t_score"] = _fmt(truth.t_score, 2)
        row[f"{side}_category"] = truth.category.value
    return row


def _hip_columns(patient: Patient, geometry) -> dict[str, str]:
    row = _site_columns(patient)
    for side in ("right", "left"):
        g = getattr(geometry, side)
        row[f"{side}_evaluable"] = str(g.evaluable).lower()
        row[f"{side}_prosthesis"] = str(g.prosthesis).lower()
        for key, value in zip(("x0", "y0", "x1", "y1"), g.crop_box):
            row[f"{side}_crop_{key}"] = _fmt(value, 1)
        row[f"{side}_neck_x"], row[f"{side}_neck_y"] = (_fmt(v, 1) for v in g.neck_centre)
    lowest = min(patient.right_hip.t_score, patient.left_hip.t_score)
    row["t_score"] = _fmt(lowest, 2)
    row["category"] = who_category(lowest).value
    return row


def _chest_columns(patient: Patient, geometry) -> dict[str, str]:
    row = {
        "bmd_manufacturer": BMD_MANUFACTURER,
        "bmd_l1_l4": _fmt(patient.lumbar_bmd),
        "lumbar_t_score": _fmt(patient.lumbar_t_score, 2),
    }
    row.update(_site_columns(patient))
    row["t_score"] = _fmt(patient.lowest_t_score, 2)
    row["category"] = who_category(patient.lowest_t_score).value
    for key, value in zip(("x0", "y0", "x1", "y1"), geometry.lung_box):
        row[f"lung_{key}"] = _fmt(value, 1)
    return row


def make_phantom(
    part: Part, index: int, *, seed: int, size: int, hard_fraction: float, out_dir: Path
) -> dict[str, str]:
    """Draw, render and write phantom ``index`` of a cohort; return its ground-truth row."""
    rng = _image_rng(seed, part, index)
    patient = sample_patient(rng)
    hard_case = HardCase.NONE
    if rng.random() < hard_fraction:
        options = HARD_CASES[part]
        hard_case = options[int(rng.integers(len(options)))]
    field_range, shape, kvp_range = _FIELD[part]
    long_side_mm = rng.uniform(*field_range)
    grid = Grid(round(size * shape[0]), round(size * shape[1]), long_side_mm / size)
    if part is Part.LUMBAR:
        scene, geometry = draw_lumbar(rng, patient, grid, hard_case)
        evaluable = hard_case is HardCase.NONE
        columns = _lumbar_columns(patient, geometry)
    elif part is Part.HIP:
        scene, geometry = draw_hip(rng, patient, grid, hard_case)
        evaluable = geometry.right.evaluable or geometry.left.evaluable
        columns = _hip_columns(patient, geometry)
    else:
        scene, geometry = draw_chest(rng, patient, grid, hard_case)
        evaluable = geometry.evaluable
        columns = _chest_columns(patient, geometry)
    image = render(scene, Exposure.sample(rng), rng)
    variant = choose_variant(part, rng)
    kvp = float(rng.uniform(*kvp_range))
    identity = make_identity(seed, part, index, patient.sex, patient.age)
    burned_text = bool(rng.random() < 0.6)
    lines = (
        [f"{identity.acquired:%Y-%m-%d %H:%M}", f"{kvp:.0f} kV", "SYNTHETIC"] if burned_text else []
    )
    # Patient's left is on the image right for AP and PA films as displayed.
    marker_left = bool(rng.random() < 0.5)
    burn_annotations(image, rng, "R" if marker_left else "L", marker_left, lines)
    magnification = float(rng.uniform(1.05, 1.2))
    ds = build_dataset(
        image, variant, identity, part, grid.spacing_mm, magnification, burned_text, kvp
    )
    name = f"{part.value}_{index:05d}.dcm"
    write_dataset(ds, out_dir / name, variant.transfer_syntax)
    row = {
        "file": name,
        "sop_instance_uid": identity.sop_uid,
        "part": part.value,
        "sex": patient.sex.value,
        "age": str(patient.age),
        "evaluable": str(evaluable).lower(),
        "hard_case": hard_case.value,
        "expected_route": part.value,
        "spacing_mm": f"{grid.spacing_mm:.6f}",
        "magnification": _fmt(magnification),
        "rows": str(grid.rows),
        "columns": str(grid.columns),
        "modality": variant.modality.value,
        "photometric": ds.PhotometricInterpretation,
        "bits_stored": str(variant.bits_stored),
        "transfer_syntax": str(variant.transfer_syntax),
        "voi": variant.voi.value,
        "body_part_examined": "<absent>"
        if variant.header.body_part is None
        else variant.header.body_part,
        "view_position": variant.header.view_position,
        "study_description": variant.header.study_description,
    }
    row.update(columns)
    return row


def _check_request(
    part: Part | str, n: int, size: int, hard_fraction: float, workers: int, out_dir: Path
) -> Part:
    try:
        part = Part(part)
    except ValueError:
        raise PhantomError(
            f"unknown part {part!r}; choose one of {', '.join(p.value for p in Part)}"
        ) from None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PhantomError(f"n must be a positive whole number of images, got {n!r}")
    if (
        isinstance(size, bool)
        or not isinstance(size, int)
        or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]
    ):
        raise PhantomError(
            f"size must be a whole number of pixels in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}],"
            f" got {size!r}"
        )
    if not 0.0 <= hard_fraction <= 1.0:
        raise PhantomError(f"hard_fraction must lie in [0, 1], got {hard_fraction!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PhantomError(f"workers must be a positive whole number, got {workers!r}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PhantomError(f"cannot create output folder {out_dir}: {error.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise PhantomError(f"output folder {out_dir} is not writable")
    return part


def make_cohort(
    part: Part | str,
    n: int,
    out_dir: Path | str,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    hard_fraction: float = 0.0,
    progress: bool = False,
    workers: int = 1,
) -> Path:
    """Write ``n`` phantom radiographs of one part and their ground truth ``cohort.csv``.

    The same arguments give byte-identical files: every image draws from its own generator
    seeded by (seed, part, index).

    Parameters
    ----------
    part:
        ``lumbar``, ``chest`` or ``hip``.
    n:
        Number of images (>= 1).
    out_dir:
        Folder to write into; created if missing.
    seed:
        Cohort seed.
    size:
        Long side of each image in pixels; the pixel spacing shrinks as it grows so that the
        anatomy keeps its physical size.
    hard_fraction:
        Fraction of hard cases (implants, scoliosis, cropped field), flagged not evaluable.
    progress:
        Show a progress bar on the terminal.
    workers:
        Processes drawing images in parallel; the output does not depend on it.

    Returns
    -------
    pathlib.Path
        Path of the cohort table.

    Raises
    ------
    PhantomError
        If an argument is invalid or the folder cannot be written.
    """
    out_dir = Path(out_dir)
    part = _check_request(part, n, size, hard_fraction, workers, out_dir)
    make_one = functools.partial(
        make_phantom, part, seed=seed, size=size, hard_fraction=hard_fraction, out_dir=out_dir
    )
    with contextlib.ExitStack() as stack:
        if workers == 1:
            results = map(make_one, range(n))
        else:
            pool = stack.enter_context(
                concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, n))
            )
            results = pool.map(make_one, range(n))
        if progress:
            results = track(results, total=n, description=f"{part.value} phantoms")
        rows = list(results)
    table = out_dir / COHORT_FILE
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    log.info("phantom_cohort_written", part=part.value, n=n, seed=seed, size=size, table=str(table))
    return table


def _side(row: dict[str, str], side: str) -> SideTruth:
    return SideTruth(
        neck_bmd=float(row[f"{side}_neck_bmd"]),
        total_hip_bmd=float(row[f"{side}_total_hip_bmd"]),
        t_score=float(row[f"{side}_t_score"]),
        category=Category(row[f"{side}_category"]),
        evaluable=row[f"{side}_evaluable"] == "true",
        prosthesis=row[f"{side}_prosthesis"] == "true",
        crop_box=tuple(float(row[f"{side}_crop_{k}"]) for k in ("x0", "y0", "x1", "y1")),
        neck_centre=(float(row[f"{side}_neck_x"]), float(row[f"{side}_neck_y"])),
    )


def read_cohort(path: Path | str) -> list[PhantomRecord]:
    """Read a cohort table written by :func:`make_cohort`.

    Parameters
    ----------
    path:
        The ``cohort.csv`` file, or the folder holding it.

    Returns
    -------
    list[PhantomRecord]
        One record per image, file paths made absolute.
    """
    path = Path(path)
    if path.is_dir():
        path = path / COHORT_FILE
    if not path.is_file():
        raise PhantomError(f"no cohort table at {path}")
    records = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            part = Part(row["part"])
            bmd = {k: float(v) for k, v in row.items() if "bmd" in k and k != "bmd_manufacturer"}
            corners = {}
            if part is Part.LUMBAR:
                corners = {
                    name: np.array(
                        [
                            [float(row[f"{name}_x{k}"]), float(row[f"{name}_y{k}"])]
                            for k in range(1, 5)
                        ]
                    )
                    for name in VERTEBRAE
                }
            sides = {s: _side(row, s) for s in ("right", "left")} if part is Part.HIP else {}
            records.append(
                PhantomRecord(
                    file=(path.parent / row["file"]).resolve(),
                    sop_instance_uid=row["sop_instance_uid"],
                    part=part,
                    sex=row["sex"],
                    age=int(row["age"]),
                    evaluable=row["evaluable"] == "true",
                    hard_case=HardCase(row["hard_case"]),
                    spacing_mm=float(row["spacing_mm"]),
                    t_score=float(row["t_score"]),
                    category=Category(row["category"]),
                    bmd=bmd,
                    bmd_manufacturer=row.get("bmd_manufacturer") or None,
                    corners=corners,
                    sides=sides,
                    row=dict(row),
                )
            )
    return records


#: Seed, size and images per part of the fixed sample set.
SAMPLE_SEED = 20240
SAMPLE_SIZE = 512
SAMPLE_COUNT = 4


def make_sample_set(out_dir: Path | str) -> dict[Part, Path]:
    """Write the small fixed sample set (a few images per part) used by tests and ``make demo``.

    Parameters
    ----------
    out_dir:
        Folder that receives one sub-folder per part.

    Returns
    -------
    dict[Part, pathlib.Path]
        The cohort table of each part.
    """
    out_dir = Path(out_dir)
    return {
        part: make_cohort(
            part,
            SAMPLE_COUNT,
            out_dir / part.value,
            seed=SAMPLE_SEED,
            size=SAMPLE_SIZE,
            hard_fraction=0.25,
        )
        for part in Part
    }
