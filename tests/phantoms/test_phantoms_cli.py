"""``osteonode phantoms make`` writes a cohort, and refuses bad arguments with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from osteonode.cli import app
from osteonode.phantoms import read_cohort

runner = CliRunner()


def test_make_writes_the_files_and_the_table(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "phantoms",
            "make",
            "--part",
            "hip",
            "--n",
            "2",
            "--out",
            str(tmp_path),
            "--seed",
            "4",
            "--size",
            "256",
        ],
    )
    assert result.exit_code == 0, result.output
    records = read_cohort(tmp_path)
    assert len(records) == 2 and all(r.file.is_file() for r in records)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--part", "lumbar", "--n", "-2"], "n must be a positive whole number"),
        (["--part", "knee", "--n", "2"], "unknown part 'knee'"),
        (["--part", "chest", "--n", "1", "--size", "5"], "size must be"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, ["phantoms", "make", *arguments, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output


def test_unwritable_folder_exits_with_a_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(
        app, ["phantoms", "make", "--part", "hip", "--n", "1", "--out", str(blocker / "sub")]
    )
    assert result.exit_code == 2
    assert "cannot create output folder" in result.output
