"""A cohort is reproducible to the byte, sized like real radiographs, and its table is complete."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pydicom
import pytest

from osteonode.phantoms import (
    HardCase,
    Part,
    PhantomError,
    make_cohort,
    make_sample_set,
    read_cohort,
)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("part", list(Part))
def test_same_seed_gives_byte_identical_files(tmp_path: Path, part: Part) -> None:
    first = _digests(
        make_cohort(part, 3, tmp_path / "a", seed=7, size=256, hard_fraction=0.5).parent
    )
    second = _digests(
        make_cohort(part, 3, tmp_path / "b", seed=7, size=256, hard_fraction=0.5).parent
    )
    other = _digests(
        make_cohort(part, 3, tmp_path / "c", seed=8, size=256, hard_fraction=0.5).parent
    )
    assert first == second
    assert len(first) == 4  # three images and the table
    assert all(first[name] != other[name] for name in first if name.endswith(".dcm"))


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    serial = _digests(make_cohort(Part.HIP, 4, tmp_path / "serial", seed=2, size=200).parent)
    parallel = _digests(
        make_cohort(Part.HIP, 4, tmp_path / "parallel", seed=2, size=200, workers=2).parent
    )
    assert serial == parallel


def test_table_has_one_row_per_file_naming_its_sop_instance(
    lumbar_cohort, chest_cohort, hip_cohort
) -> None:
    for cohort in (lumbar_cohort, chest_cohort, hip_cohort):
        assert len({r.file for r in cohort}) == len(cohort)
        for record in cohort:
            ds = pydicom.dcmread(record.file, stop_before_pixels=True)
            assert ds.SOPInstanceUID == record.sop_instance_uid
            assert ds.PatientSex == record.sex
            assert ds.PatientAge == f"{record.age:03d}Y"


def test_images_have_the_physical_size_of_radiographs(
    lumbar_cohort, chest_cohort, hip_cohort
) -> None:
    for record in lumbar_cohort + chest_cohort + hip_cohort:
        long_side = max(int(record.row["rows"]), int(record.row["columns"])) * record.spacing_mm
        assert 370.0 <= long_side <= 450.0


def test_realistic_size_phantom_is_made_in_reasonable_time(tmp_path: Path) -> None:
    start = time.perf_counter()
    table = make_cohort(Part.LUMBAR, 1, tmp_path, seed=3, size=2500)
    elapsed = time.perf_counter() - start
    (record,) = read_cohort(table)
    ds = pydicom.dcmread(record.file, stop_before_pixels=True)
    assert ds.Rows == 2500 and ds.Columns == 2000
    assert 0.1 <= record.spacing_mm <= 0.2
    assert elapsed < 10.0, f"a 2500 x 2000 phantom took {elapsed:.1f} s"


@pytest.mark.parametrize("part", list(Part))
def test_hard_cases_are_flagged_not_evaluable(tmp_path: Path, part: Part) -> None:
    records = read_cohort(make_cohort(part, 4, tmp_path, seed=5, size=256, hard_fraction=1.0))
    for record in records:
        assert record.hard_case is not HardCase.NONE
        if part is Part.HIP:
            assert not all(side.evaluable for side in record.sides.values())
            assert any(side.prosthesis for side in record.sides.values()) == (
                record.hard_case is HardCase.IMPLANT
            )
        else:
            assert not record.evaluable


def test_read_cohort_takes_the_folder_or_the_table(tmp_path: Path) -> None:
    table = make_cohort(Part.CHEST, 1, tmp_path, seed=1, size=200)
    assert read_cohort(tmp_path)[0].sop_instance_uid == read_cohort(table)[0].sop_instance_uid
    with pytest.raises(PhantomError, match="no cohort table"):
        read_cohort(tmp_path / "missing")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "positive whole number"),
        ({"n": -3}, "positive whole number"),
        ({"part": "knee"}, "unknown part 'knee'"),
        ({"size": 16}, "size must be"),
        ({"hard_fraction": 1.5}, "hard_fraction"),
        ({"workers": 0}, "workers must be"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    arguments = {"part": "lumbar", "n": 2, "out_dir": tmp_path / "out", "size": 200} | kwargs
    with pytest.raises(PhantomError, match=message):
        make_cohort(**arguments)
    assert not any((tmp_path / "out").glob("*.dcm"))


def test_unwritable_output_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PhantomError, match="cannot create output folder"):
        make_cohort("hip", 1, blocker / "out", size=200)


def test_sample_set_has_a_few_small_images_per_part(tmp_path: Path) -> None:
    tables = make_sample_set(tmp_path)
    assert set(tables) == set(Part)
    for part, table in tables.items():
        records = read_cohort(table)
        assert len(records) >= 3
        assert all(r.part is part and r.file.stat().st_size < 1_000_000 for r in records)
