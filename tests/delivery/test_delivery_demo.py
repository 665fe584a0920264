"""`osteonode demo` runs the whole loop through a local Orthanc and says where to open the studies."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.peers import require_binary

from osteonode.demo import run_demo

pytestmark = pytest.mark.orthanc

REPOSITORY = Path(__file__).resolve().parents[2]


def test_demo_sends_samples_through_orthanc_and_shows_what_came_back(tmp_path):
    require_binary("Orthanc")
    lines: list[str] = []

    counts = run_demo(
        tmp_path / "demo-out", REPOSITORY / "models", show=lines.append, timeout_s=240, wait=False
    )

    output = "\n".join(lines)
    assert "starting Orthanc as the PACS" in output and "which forwards them to the node" in output
    # 16 sample films (4 per phantom part); a frontal lumbar film is a job for each lumbar method.
    assert sum(counts.values()) >= 16 and counts["pending"] == counts["running"] == 0
    assert "sent to the PACS" in output
    assert "the node's admin page (queue, results, models, routing): http://127.0.0.1:" in output
    assert "stopping Orthanc, the viewer and the node" in output  # wait=False says it stopped them
    for part in ("lumbar", "chest", "hip", "lumbar_lateral"):
        assert f"{part}/{part}_00000.dcm" in output
    if counts["done"]:  # a shipped model analysed some samples: their reports are in Orthanc
        assert "SR sent" in output and "SC sent" in output
        assert "/app/explorer.html#study?uuid=" in output
        # ... and in OHIF on the node's SR, when make install has unpacked it (otherwise the demo
        # says why not)
        assert "&initialSeriesInstanceUID=" in output or "no OHIF viewer:" in output
        # ... and the demo ends with a validation report of each installed model
        reports = [line.split("report: ", 1)[1] for line in lines if "report: " in line]
        assert reports and all(Path(report).is_file() for report in reports)
    else:  # no model installed yet: every sample waits for it, and Orthanc's address is shown
        assert counts["queued"] == 12
        assert "no reports were delivered" in output and "/app/explorer.html" in output
        assert "no validation of lumbar" in output
