"""`make demo`: a real node on the embedded defaults receives the sample set and accounts for it."""

from __future__ import annotations

from osteonode.demo import run_demo


def test_demo_receives_every_sample_and_reports_what_happened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    counts = run_demo(tmp_path / "demo-out", show=lines.append, timeout_s=240)
    output = "\n".join(lines)
    assert sum(counts.values()) == 12
    assert counts["pending"] == counts["running"] == counts["failed"] == 0
    for part in ("lumbar", "chest", "hip"):
        assert f"{part}/{part}_00000.dcm" in output
    assert "Jobs by state" in output
    assert "--instance 2.25." in output
