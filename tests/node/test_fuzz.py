"""A small run of bench/fuzz.py: mutated files in every syntax, sent to a running node with its demo
models, neither kill the node nor its workers, and every acknowledged file ends in a final state with
a reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.peers import require_binary

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"


@pytest.mark.slow
def test_mutated_files_never_stop_the_node_and_each_acknowledged_one_ends_with_a_reason(
    tmp_path: Path,
) -> None:
    for tool in ("dcmconv", "dcmcrle", "dcmcjpeg", "dcmcjpls", "gdcmconv"):
        require_binary(tool)
    figures_path = tmp_path / "figures.json"

    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--count",
            "60",
            "--seed",
            "7",
            "--senders",
            "3",
            "--workdir",
            str(tmp_path / "fuzz"),
            "--settle-s",
            "300",
            "--json",
            str(figures_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    assert figures_path.exists(), done.stdout + done.stderr
    figures = json.loads(figures_path.read_text())
    assert figures["sent"] == 60
    assert figures["acknowledged"] + figures["refused"] + figures["no_response"] == 60
    assert figures["acknowledged"] >= 50, figures
    assert (figures["node_deaths"], figures["worker_deaths"], figures["lost"]) == (0, 0, 0), figures
    assert figures["jobs_without_final_state"] == 0 and figures["final_jobs_without_reason"] == 0, (
        figures
    )
    assert figures["decoder_rss_peak_mb"] < 1024, figures
    assert done.returncode == 0, done.stdout
