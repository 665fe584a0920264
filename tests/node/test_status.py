"""``osteonode status`` answers "how many, in which state" and "what happened to this image?"."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from fixtures.peers import NodeProcess, make_radiograph, storescu


def test_status_counts_jobs_by_state_and_tells_each_image_history(
    node: NodeProcess, tmp_path: Path
) -> None:
    spines = [make_radiograph(tmp_path / f"spine{index}.dcm", seed=index) for index in range(2)]
    lateral = make_radiograph(tmp_path / "lateral.dcm", body_part="CHEST", view="LATERAL")
    assert storescu(node.port, [*spines, lateral]).returncode == 0
    assert storescu(node.port, [spines[0]], calling_ae="PACS").returncode == 0
    node.wait_until_routed(3)

    overview = node.cli("status", "--json")
    spine_uid = pydicom.dcmread(spines[0]).SOPInstanceUID
    history = node.cli("status", "--instance", spine_uid, "--json")
    lateral_history = node.cli("status", "--instance", pydicom.dcmread(lateral).SOPInstanceUID, "--json")

    assert overview.returncode == 0, overview.stderr
    summary = json.loads(overview.stdout)
    assert summary["jobs"] == {
        "pending": 0, "queued": 2, "running": 0, "done": 0, "skipped": 1, "failed": 0
    }
    assert {"received", "routed", "skipped", "duplicate_received"} <= {
        event["kind"] for event in summary["events"]
    }
    assert history.returncode == 0, history.stderr
    image = json.loads(history.stdout)
    assert image["instance"]["calling_ae"] == "MODALITY"
    header = pydicom.dcmread(spines[0], stop_before_pixels=True)
    assert (
        image["instance"]["study_instance_uid"],
        image["instance"]["series_instance_uid"],
        image["instance"]["modality"],
    ) == (header.StudyInstanceUID, header.SeriesInstanceUID, "DX")
    assert image["instance"]["receipt_count"] == 2
    assert [(job["state"], job["pipeline"], job["route_rule"]) for job in image["jobs"]] == [
        ("queued", "lumbar", "lumbar-spine")
    ]
    kinds = [event["kind"] for event in image["events"]]
    assert kinds[0] == "received" and "routed" in kinds and "duplicate_received" in kinds
    skipped = json.loads(lateral_history.stdout)["jobs"][0]
    assert (skipped["state"], skipped["skip_reason"]) == ("skipped", "lateral_view")


def test_status_prints_tables_and_says_when_an_image_is_unknown(
    node: NodeProcess, tmp_path: Path
) -> None:
    film = make_radiograph(tmp_path / "film.dcm", modality="CR")
    assert storescu(node.port, [film]).returncode == 0
    header = pydicom.dcmread(film, stop_before_pixels=True)
    tables = node.cli("status")
    one_image = node.cli("status", "--instance", header.SOPInstanceUID)
    unknown = node.cli("status", "--instance", "1.2.3.4.5")

    assert tables.returncode == 0, tables.stderr
    assert one_image.returncode == 0, one_image.stderr
    for shown in (
        f"study_instance_uid: {header.StudyInstanceUID}",
        f"series_instance_uid: {header.SeriesInstanceUID}",
        "modality: CR",
    ):
        assert shown in one_image.stdout
    assert "Jobs by state" in tables.stdout and "Latest" in tables.stdout
    assert unknown.returncode == 1
    assert "no image with SOP Instance UID 1.2.3.4.5" in unknown.stderr
