"""``osteonode status`` can tell what happened to an image, from the recorded events."""

from __future__ import annotations

import json
from collections.abc import Callable

from fixtures.receipts import new_uid

from osteonode.store.db import Database
from osteonode.store.history import counts_by_state, instance_history, latest_events
from osteonode.store.queue import (
    ReceiptOutcome,
    claim_job,
    mark_failed_attempt,
    mark_skipped,
    record_event,
)
from osteonode.store.tables import EventKind


def test_history_of_an_instance_lists_its_events_in_order(
    database: Database, receive: Callable[..., ReceiptOutcome]
) -> None:
    uid = new_uid()
    receive(uid)
    receive(uid)
    receive()  # another image, not part of this story
    with database.session() as session:
        job = claim_job(session, worker_id="w1", lease_seconds=60, pipelines=[])
    with database.session() as session:
        mark_failed_attempt(session, job, "OSError: disk hiccup")
    with database.session() as session:
        job = claim_job(session, worker_id="w2", lease_seconds=60, pipelines=[])
    with database.session() as session:
        mark_skipped(session, job, "lateral_view", "ViewPosition is LL", "default")
    with database.session() as session:
        history = instance_history(session, uid)
    assert history is not None
    assert [event.kind for event in history.events] == [
        "received", "duplicate_received", "job_claimed", "job_attempt_failed", "job_claimed",
        "skipped",
    ]
    assert [event.id for event in history.events] == sorted(event.id for event in history.events)
    assert history.instance is not None and history.instance.receipt_count == 2
    assert [(job.state, job.skip_reason) for job in history.jobs] == [("skipped", "lateral_view")]
    dumped = json.loads(json.dumps(history.to_dict()))
    assert dumped["events"][0]["kind"] == "received"


def test_history_of_a_refused_uid_has_no_instance(database: Database) -> None:
    uid = new_uid()
    with database.session() as session:
        record_event(session, EventKind.REFUSED, "spool disk full", sop_instance_uid=uid)
    with database.session() as session:
        history = instance_history(session, uid)
        unknown = instance_history(session, new_uid())
    assert history is not None and history.instance is None
    assert [event.kind for event in history.events] == ["refused"]
    assert unknown is None


def test_counts_and_latest_events(
    database: Database, receive: Callable[..., ReceiptOutcome]
) -> None:
    for _ in range(3):
        receive()
    with database.session() as session:
        claim_job(session, worker_id="w", lease_seconds=60, pipelines=[])
    with database.session() as session:
        counts = counts_by_state(session)
        events = latest_events(session, limit=2)
    assert counts["pending"] == 2 and counts["running"] == 1 and counts["failed"] == 0
    assert [event.kind for event in events] == ["job_claimed", "received"]
