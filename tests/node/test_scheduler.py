"""The node's periodic work (APScheduler): reclaiming expired leases and purging the spool."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from fixtures.peers import NodeProcess, make_radiograph, storescu

from osteonode.store.db import Database
from osteonode.store.queue import claim_job


def test_spool_purge_removes_finished_images_after_retention_and_keeps_queued_ones(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    # Retention about 0.9 s, purge every 0.6 s.
    node = node_factory(
        {"storage": {"retention_days": 1e-5, "purge_interval_minutes": 0.01}}
    ).start()
    spine = make_radiograph(tmp_path / "spine.dcm")
    lateral = make_radiograph(tmp_path / "lateral.dcm", view="LATERAL", body_part="HIP")
    assert storescu(node.port, [spine, lateral]).returncode == 0
    jobs = node.wait_until_routed(2)

    node.wait_for_log(
        lambda event: event.get("event") == "spool_purged" and event["purged_instances"] == 1
    )

    assert not jobs[pydicom.dcmread(lateral).SOPInstanceUID].spool_file.exists()
    assert jobs[pydicom.dcmread(spine).SOPInstanceUID].spool_file.exists()  # still queued
    assert "purged" in [kind for kind, _ in node.event_kinds()]


def test_lease_of_a_dead_worker_is_reclaimed_by_the_scheduler(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory({"workers": {"reclaim_interval_s": 0.3}})
    node.start("--no-workers")
    assert storescu(node.port, [make_radiograph(tmp_path / "spine.dcm")]).returncode == 0
    database = Database(node.database_url)
    try:
        with database.session() as session:
            claimed = claim_job(
                session, worker_id="gone-host:1:worker-0", lease_seconds=0.5, pipelines=()
            )
        assert claimed is not None
    finally:
        database.dispose()

    node.wait_for_log(lambda event: event.get("event") == "leases_reclaimed")

    assert [job.state for job in node.jobs().values()] == ["pending"]
    expired = [details for kind, details in node.event_kinds() if kind == "lease_expired"]
    assert expired[0]["previous_owner"] == "gone-host:1:worker-0"
