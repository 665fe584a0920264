"""Results reach a real Orthanc: auto-forward, analysis, SR and SC in the source study; PACS down and
node restarts; permanent rejection, dead letter and the operator's retry."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from delivery_standin import NOT_EVALUABLE_COMMENT, NOT_EVALUABLE_REASON
from fixtures.peers import DX_FOR_PRESENTATION, make_radiograph, storescu
from sqlalchemy import func, select

from osteonode.peers import OrthancModality
from osteonode.store.tables import DeliveryState, EventKind, Job

pytestmark = pytest.mark.orthanc

SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def lumbar_film(path: Path, *, evaluable: bool = True, seed: int = 0) -> tuple[Path, str]:
    """A frontal lumbar film (routed to the stand-in pipeline) and its Study Instance UID."""
    make_radiograph(path, seed=seed)
    ds = pydicom.dcmread(path)
    if not evaluable:
        ds.ImageComments = NOT_EVALUABLE_COMMENT
        ds.save_as(path)
    return path, str(ds.StudyInstanceUID)


def all_sent(deliveries) -> bool:
    return bool(deliveries) and all(d.state == DeliveryState.SENT for d in deliveries)


def osteonode_cli(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osteonode", "deliveries", *arguments, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sr_and_sc_appear_in_the_source_study_in_orthanc(delivery_world, tmp_path):
    world = delivery_world()
    world.orthanc.start()
    world.start_node()
    film, study = lumbar_film(tmp_path / "spine.dcm")
    unreadable_film, unreadable_study = lumbar_film(
        tmp_path / "blurred.dcm", evaluable=False, seed=1
    )

    world.orthanc.post_instance(film)
    world.orthanc.post_instance(unreadable_film)

    instances = world.wait_for_study(study, 3)
    by_class = {tags["SOPClassUID"]: tags for tags in instances}
    assert set(by_class) == {DX_FOR_PRESENTATION, SR_3D, SECONDARY_CAPTURE}
    report, capture = by_class[SR_3D], by_class[SECONDARY_CAPTURE]
    assert report["CompletionFlag"] == "COMPLETE" and report["VerificationFlag"] == "UNVERIFIED"
    assert "NOT FOR DIAGNOSTIC USE" in report["SeriesDescription"]
    assert capture["BurnedInAnnotation"] == "YES"
    source_series = by_class[DX_FOR_PRESENTATION]["SeriesInstanceUID"]
    assert len({source_series, report["SeriesInstanceUID"], capture["SeriesInstanceUID"]}) == 3

    not_evaluable = {
        tags["SOPClassUID"]: tags for tags in world.wait_for_study(unreadable_study, 3)
    }
    assert f"Not evaluable: {NOT_EVALUABLE_REASON}" in json.dumps(
        not_evaluable[SR_3D]["ContentSequence"]
    )
    assert not_evaluable[SR_3D]["CompletionFlag"] == "PARTIAL"

    deliveries = world.wait_for_deliveries(all_sent)
    assert len(deliveries) == 4 and all(d.attempts == 1 for d in deliveries)
    # Orthanc did not forward the node's own results back: only the two films were analysed.
    assert world.query(lambda session: session.scalar(select(func.count()).select_from(Job))) == 2


def test_results_wait_for_a_pacs_that_is_down_and_arrive_once_after_a_node_restart(
    delivery_world, tmp_path
):
    world = delivery_world()
    world.orthanc.start()
    world.start_node()
    world.orthanc.stop()  # the PACS goes down; images still arrive from the modality
    films = [lumbar_film(tmp_path / f"spine{index}.dcm", seed=index) for index in range(2)]
    sent = storescu(world.node_port, [path for path, _ in films])
    assert sent.returncode == 0, sent.stderr

    # Four deliveries (SR + SC of two films), each failing with a growing back-off.
    world.wait_for_deliveries(
        lambda ds: (
            len(ds) == 4 and all(d.state == DeliveryState.FAILED and d.attempts >= 3 for d in ds)
        ),
        timeout_s=40,
    )
    retries = world.delivery_events(EventKind.DELIVERY_RETRY)
    delays: dict[int, list[float]] = {}
    for event in retries:
        waited = (datetime.fromisoformat(event.details["retry_at"]) - event.at).total_seconds()
        delays.setdefault(event.details["delivery_id"], []).append(waited)
    for waits in delays.values():
        assert all(later > earlier for earlier, later in itertools.pairwise(waits[:3])), waits
    assert all("no connection" in event.details["error"] for event in retries)

    world.stop_node()
    pending = world.deliveries()
    assert {d.state for d in pending} == {DeliveryState.FAILED}
    world.start_node()
    world.orthanc.start()

    world.wait_for_deliveries(all_sent, timeout_s=30)
    for _, study in films:
        classes = sorted(tags["SOPClassUID"] for tags in world.wait_for_study(study, 2))
        assert classes == sorted([SR_3D, SECONDARY_CAPTURE])
    assert len(world.delivery_events(EventKind.DELIVERY_SENT)) == 4
    assert len(world.orthanc.get("/instances")) == 4


def test_permanent_rejection_is_dead_lettered_once_and_retried_by_the_operator(
    delivery_world, tmp_path
):
    world = delivery_world(
        accept_unknown_callers=False, destination={"calling_ae_title": "NODE_RESULTS"}
    )
    world.orthanc.start()
    world.start_node()
    film, study = lumbar_film(tmp_path / "spine.dcm")

    world.orthanc.post_instance(film)

    dead = world.wait_for_deliveries(
        lambda ds: len(ds) == 2 and all(d.state == DeliveryState.DEAD for d in ds)
    )
    time.sleep(1.0)  # five sending periods: a dead letter is not tried again
    assert [d.attempts for d in world.deliveries()] == [d.attempts for d in dead]
    # Dead-lettered at the first rejection (a momentary glitch of the peer before it may count once).
    assert len(world.delivery_events(EventKind.DELIVERY_DEAD)) == 2
    assert len(world.delivery_events(EventKind.DELIVERY_RETRY)) <= 1
    assert all("Calling AE title not recognised" in d.last_error for d in dead)
    assert all(d.last_error.startswith("permanent: association rejected by ORTHANC") for d in dead)
    listed = osteonode_cli(world.config_path, "list", "--state", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["state"] for row in json.loads(listed.stdout)] == ["dead", "dead"]

    world.orthanc.add_modality(OrthancModality("node-results", "NODE_RESULTS", "127.0.0.1", 1))
    retried = osteonode_cli(world.config_path, "retry", "--all-dead")
    assert retried.returncode == 0, retried.stderr
    assert "2 deliveries queued again" in retried.stdout

    world.wait_for_deliveries(all_sent)
    classes = {tags["SOPClassUID"] for tags in world.wait_for_study(study, 3)}
    assert {SR_3D, SECONDARY_CAPTURE} <= classes
