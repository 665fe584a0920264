"""``osteonode validate --cohort``: a phantom cohort run end to end through the command line.

The shipped demo models analyse small phantom films (the hip model for most tests, as it is the
fastest; the lumbar model where BMD is compared), so these tests see what a research team sees:
the files written, what they hold, how bad cohort rows end up, and a run resumed after interruption.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import osteonode.analysis
from osteonode.bone import DxaManufacturer
from osteonode.cli import app
from osteonode.config import load_config
from osteonode.evaluate.cohort import (
    JOURNAL_FILE,
    CohortError,
    on_site_calibration,
    read_cohort_rows,
    run_cohort,
)
from osteonode.phantoms import make_cohort
from osteonode.reference import load_reference

REPOSITORY = Path(__file__).resolve().parents[2]
FILMS = 4
SIZE = 384
runner = CliRunner()

pytestmark = pytest.mark.timeout(120)


def _config(folder: Path) -> Path:
    """A node configuration using the shipped demo models, on the CPU."""
    path = folder / "node.toml"
    models = (REPOSITORY / "models").as_posix()
    path.write_text(
        f'[models]\ndir = "{models}"\ndevice = "cpu"\n\n[pipelines.chest]\nenabled = false\n'
    )
    return path


@pytest.fixture(scope="module")
def hip_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort("hip", FILMS, tmp_path_factory.mktemp("hip") / "films", seed=91, size=SIZE)


@pytest.fixture(scope="module")
def lumbar_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort("lumbar", 3, tmp_path_factory.mktemp("lumbar") / "films", seed=92, size=SIZE)


def _cells(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _write_cells(path: Path, rows: list[dict[str, str]]) -> Path:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _validate(cohort: Path, out: Path, *extra: str, pipeline: str = "hip", workers: int = 1):
    return runner.invoke(
        app,
        [
            "validate",
            "--cohort",
            str(cohort),
            "--pipeline",
            pipeline,
            "--out",
            str(out),
            "--workers",
            str(workers),
            "--bootstrap",
            "50",
            "--config",
            str(_config(out.parent)),
            *extra,
        ],
    )


def _predictions(out: Path) -> list[dict[str, str]]:
    return _cells(out / "predictions.csv")


def test_validate_cohort_writes_predictions_metrics_and_report(
    hip_cohort: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _validate(hip_cohort, out)
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.output.replace("\n", "")
    assert sorted(path.name for path in out.iterdir()) == [
        "metrics.json",
        "predictions.csv",
        "report.html",
    ]

    cohort = _cells(hip_cohort)
    rows = _predictions(out)
    assert [(row["id"], row["side"]) for row in rows] == [
        (film["sop_instance_uid"], side) for film in cohort for side in ("R", "L")
    ]
    for film, right, left in zip(cohort, rows[::2], rows[1::2]):
        for side, row in (("right", right), ("left", left)):
            truth = (
                "osteoporosis" if film[f"{side}_category"] == "osteoporosis" else "not_osteoporosis"
            )
            assert (row["status"], row["truth_category"]) == ("analysed", truth)
            assert row["predicted_category"] in ("osteoporosis", "not_osteoporosis")
            assert 0.0 <= float(row["score"]) <= 1.0
            assert (row["sex"], float(row["age"])) == (film["sex"], float(film["age"]))

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["flow"] == {
        "received": 2 * FILMS,
        "excluded": 0,
        "analysed": 2 * FILMS,
        "excluded_by_reason": {},
    }
    assert metrics["classification"]["labels"] == ["not_osteoporosis", "osteoporosis"]
    assert sum(map(sum, metrics["classification"]["confusion_matrix"])) == 2 * FILMS
    assert "osteoporosis_vs_not" in metrics["roc"]
    html = (out / "report.html").read_text()
    for section in (
        "Flow of images",
        "Patient characteristics",
        "Classification",
        "ROC analysis",
        "Subgroups",
    ):
        assert section in html


def test_two_worker_processes_give_the_same_predictions_as_one(
    hip_cohort: Path, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert _validate(hip_cohort, one, workers=1).exit_code == 0
    result = _validate(hip_cohort, two, workers=2)
    assert result.exit_code == 0, result.output
    serial, parallel = _predictions(one), _predictions(two)
    assert [{k: v for k, v in row.items() if k != "score"} for row in parallel] == [
        {k: v for k, v in row.items() if k != "score"} for row in serial
    ]
    # Worker processes run torch single-threaded: sums may round differently in the last bits.
    assert [float(row["score"]) for row in parallel] == pytest.approx(
        [float(row["score"]) for row in serial], abs=1e-6
    )


def test_an_interrupted_run_resumes_with_only_the_films_not_yet_done(
    hip_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference"
    assert _validate(hip_cohort, reference).exit_code == 0

    real_analyse_file = osteonode.analysis.analyse_file
    analysed: list[str] = []

    def interrupted_after_two(
        path, config, pipelines=None, **options
    ):  # the operator presses Ctrl-C on film 3
        if len(analysed) == 2:
            raise KeyboardInterrupt
        analysed.append(Path(path).name)
        return real_analyse_file(path, config, pipelines, **options)

    out = tmp_path / "out"
    monkeypatch.setattr(osteonode.analysis, "analyse_file", interrupted_after_two)
    config = load_config(_config(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run_cohort(hip_cohort, "hip", out, config, workers=1, show_progress=False)
    journal = out / JOURNAL_FILE
    assert len(journal.read_text().splitlines()) == 2 and not (out / "predictions.csv").exists()
    with journal.open("a") as stream:  # and the machine died while writing the next line
        stream.write('{"line": 4, "id": "2.25.1", "pipeline": "hip", "rows": [{"id": "2.2')

    def counted(path, config, pipelines=None, **options):
        analysed.append(Path(path).name)
        return real_analyse_file(path, config, pipelines, **options)

    analysed.clear()
    monkeypatch.setattr(osteonode.analysis, "analyse_file", counted)
    result = _validate(hip_cohort, out)
    assert result.exit_code == 0, result.output
    assert analysed == [film["file"] for film in _cells(hip_cohort)[2:]]
    assert (out / "predictions.csv").read_text() == (reference / "predictions.csv").read_text()
    assert not journal.exists()


def test_bad_cohort_rows_become_exclusions_with_their_reasons(
    hip_cohort: Path, tmp_path: Path
) -> None:
    films = _cells(hip_cohort)
    for film in films:
        film["file"] = str(hip_cohort.parent / film["file"])
    unreadable = tmp_path / "unreadable.dcm"
    unreadable.write_bytes(b"not a DICOM file at all" * 40)
    cut = tmp_path / "cut.dcm"  # a transfer stopped half-way through the pixel data
    data = Path(films[1]["file"]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    rows = [
        films[0],
        {**films[1], "file": str(unreadable), "sop_instance_uid": "2.25.101"},
        {**films[1], "file": str(cut), "sop_instance_uid": "2.25.102"},
        {**films[2], "sop_instance_uid": films[0]["sop_instance_uid"]},
        {**films[3], "file": str(tmp_path / "missing.dcm"), "sop_instance_uid": "2.25.103"},
        {**films[3], "sop_instance_uid": "2.25.104", "right_category": "brittle"},
    ]
    cohort = _write_cells(tmp_path / "cohort.csv", rows)
    out = tmp_path / "out"
    result = _validate(cohort, out, workers=1)
    assert result.exit_code == 0, result.output

    predictions = _predictions(out)
    assert [row["status"] for row in predictions[:2]] == ["analysed", "analysed"]
    reasons = {row["id"]: row["exclusion_reason"] for row in predictions[2:]}
    assert all(row["status"] == "excluded" for row in predictions[2:])
    assert reasons["2.25.101"].startswith("skipped by routing")
    assert reasons["2.25.102"].startswith(
        ("image_error: truncated", "skipped by routing: unreadable")
    )
    assert (
        reasons[films[0]["sop_instance_uid"]]
        == f"duplicate of line 2 ({films[0]['sop_instance_uid']})"
    )
    assert reasons["2.25.103"].startswith("file not found")
    assert "bad value on line 7" in reasons["2.25.104"] and "brittle" in reasons["2.25.104"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["flow"]["analysed"] == 2 and metrics["flow"]["excluded"] == len(rows) - 1
    html = (out / "report.html").read_text()
    assert "file not found" in html and "duplicate of line 2" in html


def test_a_cohort_without_a_needed_column_is_refused_before_anything_runs(
    hip_cohort: Path, tmp_path: Path
) -> None:
    films = _cells(hip_cohort)
    no_file = _write_cells(
        tmp_path / "no-file.csv", [{k: v for k, v in f.items() if k != "file"} for f in films]
    )
    result = _validate(no_file, tmp_path / "a")
    assert result.exit_code == 2
    assert "needs a 'file' column" in result.output

    side_columns = ("right_category", "right_t_score", "left_category", "left_t_score")
    no_truth = _write_cells(
        tmp_path / "no-truth.csv",
        [{k: v for k, v in f.items() if k not in side_columns} for f in films],
    )
    result = _validate(no_truth, tmp_path / "b")
    assert result.exit_code == 2
    assert "the cohort needs a per-side truth column" in result.output
    assert not (tmp_path / "b" / "predictions.csv").exists()


def test_lumbar_bmd_is_compared_on_the_site_calibration(
    lumbar_cohort: Path, tmp_path: Path
) -> None:
    films = _cells(lumbar_cohort)
    for film in films:
        film["file"] = str(lumbar_cohort.parent / film["file"])
    rows = [
        {**films[0], "bmd_manufacturer": "ge_lunar"},
        {**films[1], "bmd_manufacturer": ""},  # not given: the site's own scale
        {**films[2], "bmd_l1_l4": "7.5"},
        {**films[2], "sop_instance_uid": "2.25.105", "bmd_manufacturer": "norland"},
    ]
    cohort = _write_cells(tmp_path / "cohort.csv", rows)
    out = tmp_path / "out"
    result = _validate(cohort, out, pipeline="lumbar")
    assert result.exit_code == 0, result.output

    reference = load_reference()
    assert reference.lumbar.site_manufacturer == "hologic"
    to_site = reference.lumbar_calibration(DxaManufacturer.GE_LUNAR)  # GE Lunar to Hologic
    lunar, hologic, impossible, unknown_scale = _predictions(out)
    assert float(lunar["truth_bmd"]) == pytest.approx(
        to_site.apply(float(films[0]["bmd_l1_l4"])), abs=1e-4
    )
    assert float(hologic["truth_bmd"]) == float(films[1]["bmd_l1_l4"])
    assert impossible["status"] == "excluded"
    assert "outside the physical range" in impossible["exclusion_reason"]
    assert unknown_scale["status"] == "excluded"
    assert "'norland' is not a valid DxaManufacturer" in unknown_scale["exclusion_reason"]


def test_cohort_bmd_on_a_scale_without_a_configured_conversion_stops_the_run(
    lumbar_cohort: Path, tmp_path: Path
) -> None:
    shipped = load_reference()
    lunar_site = shipped.model_copy(
        update={
            "lumbar": shipped.lumbar.model_copy(
                update={"site_manufacturer": DxaManufacturer.GE_LUNAR}
            ),
            "calibrations": [
                c for c in shipped.calibrations if c.to_manufacturer is not DxaManufacturer.GE_LUNAR
            ],
        }
    )
    film = _cells(lumbar_cohort)[0]
    film["file"] = str(lumbar_cohort.parent / film["file"])
    cohort = _write_cells(tmp_path / "hologic.csv", [{**film, "bmd_manufacturer": "hologic"}])
    config = load_config(_config(tmp_path))
    with pytest.raises(CohortError, match="no calibration from hologic to ge_lunar"):
        run_cohort(
            cohort,
            "lumbar",
            tmp_path / "out",
            config,
            show_progress=False,
            reference=lunar_site,
        )
    assert not (tmp_path / "out").exists()
    # With the shipped reference (site: Hologic) a Hologic row stays as it is, a GE Lunar one is
    # converted with the study's equation, Hologic = 0.856 x GE - 0.016 (METHODS.md section 1).
    [hologic_row] = read_cohort_rows(cohort)
    assert on_site_calibration(hologic_row, shipped) is hologic_row
    assert hologic_row.bmd_manufacturer is DxaManufacturer.HOLOGIC  # the phantoms' declared scale
    lunar = _write_cells(tmp_path / "lunar.csv", [{**film, "bmd_manufacturer": "ge_lunar"}])
    [lunar_row] = read_cohort_rows(lunar)
    converted = on_site_calibration(lunar_row, shipped)
    assert converted.bmd_manufacturer is DxaManufacturer.HOLOGIC
    assert converted.truth_bmd == pytest.approx(0.856 * lunar_row.truth_bmd - 0.016, abs=5e-5)


def test_an_unusable_reference_file_is_a_clear_error_not_a_traceback(
    lumbar_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "node_config").mkdir()
    (tmp_path / "node_config" / "reference.toml").write_text(
        "[lumbar]\nsite_manufacturer = 'norland'\n"
    )
    monkeypatch.chdir(tmp_path)  # the reference file is looked up in the working directory
    result = _validate(lumbar_cohort, tmp_path / "out", pipeline="lumbar")
    assert result.exit_code == 2, result.output
    assert "validate:" in result.output and "site_manufacturer" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
