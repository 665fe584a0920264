"""Receiving an instance stores it once, queues one job and records the receipt as an event."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from fixtures.receipts import make_receipt, new_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from osteonode.store import queue
from osteonode.store.db import Database
from osteonode.store.queue import (
    ReceiptStatus,
    is_known_instance,
    record_event,
    record_receipt,
)
from osteonode.store.tables import Event, EventKind, Instance, Job, JobState, utc_now


def test_new_instance_gets_a_pending_job_and_a_received_event(database: Database) -> None:
    receipt = make_receipt()
    with database.session() as session:
        assert not is_known_instance(session, receipt.sop_instance_uid)
        outcome = record_receipt(session, receipt)
    assert outcome.status is ReceiptStatus.NEW
    assert not outcome.is_duplicate
    with database.session() as session:
        assert is_known_instance(session, receipt.sop_instance_uid)
        instance = session.get_one(Instance, outcome.instance_id)
        job = session.get_one(Job, outcome.job_id)
        events = session.scalars(select(Event).where(Event.instance_id == instance.id)).all()
    assert instance.spool_path == receipt.relative_path
    assert instance.receipt_count == 1
    assert instance.received_at == receipt.received_at
    assert instance.received_at.tzinfo is not None
    assert job.state is JobState.PENDING
    assert job.attempts == 0
    assert [event.kind for event in events] == [EventKind.RECEIVED]
    assert events[0].details["calling_ae"] == "MODALITY"


def test_same_uid_twice_is_stored_once_and_the_second_receipt_counted(database: Database) -> None:
    uid = new_uid()
    first_time = utc_now() - timedelta(minutes=5)
    with database.session() as session:
        first = record_receipt(session, make_receipt(uid, received_at=first_time))
    with database.session() as session:
        second = record_receipt(
            session, make_receipt(uid, spool_path=f"incoming/00/{uid}.1.dcm")
        )
    assert second.status is ReceiptStatus.DUPLICATE
    assert second.is_duplicate
    assert second.instance_id == first.instance_id
    assert second.job_id is None
    assert second.receipt_count == 2
    assert second.stored_spool_path == first.stored_spool_path
    with database.session() as session:
        instance = session.get_one(Instance, first.instance_id)
        assert instance.received_at == first_time
        assert instance.last_received_at > first_time
        assert session.scalar(select(func.count()).select_from(Job)) == 1
        kinds = session.scalars(select(Event.kind).order_by(Event.id)).all()
    assert kinds == [EventKind.RECEIVED, EventKind.DUPLICATE_RECEIVED]


def test_simultaneous_receipts_of_one_uid_store_it_once(database: Database) -> None:
    uid = new_uid()
    barrier = threading.Barrier(4)
    outcomes = []
    errors = []

    def receive() -> None:
        try:
            barrier.wait()
            with database.session() as session:
                outcomes.append(record_receipt(session, make_receipt(uid)))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=receive) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(outcome.status for outcome in outcomes) == ["duplicate"] * 3 + ["new"]
    with database.session() as session:
        assert session.scalar(select(Instance.receipt_count)) == 4
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_losing_the_unique_uid_race_gives_a_duplicate_in_a_usable_transaction(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver whose duplicate check ran before the winner committed still gets a duplicate."""
    uid = new_uid()
    with database.session() as session:
        record_receipt(session, make_receipt(uid))
    real_find = queue._find_instance
    calls = []

    def find_missing_the_first_time(session: Session, sop_instance_uid: str) -> Instance | None:
        calls.append(sop_instance_uid)
        return None if len(calls) == 1 else real_find(session, sop_instance_uid)

    monkeypatch.setattr(queue, "_find_instance", find_missing_the_first_time)
    with database.session() as session:
        outcome = record_receipt(session, make_receipt(uid))
        record_event(session, EventKind.REFUSED, "the transaction still works", instance=None)
    assert len(calls) == 2
    assert outcome.is_duplicate
    assert outcome.receipt_count == 2
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1


def test_events_refuse_patient_details(database: Database) -> None:
    with database.session() as session, pytest.raises(ValueError, match="patient"):
        record_event(session, EventKind.REFUSED, "refused", patient_name="DOE^JANE")


def test_refused_instance_is_recorded_by_uid(database: Database) -> None:
    uid = new_uid()
    with database.session() as session:
        event = record_event(
            session, EventKind.REFUSED, "disk full", sop_instance_uid=uid, free_bytes=0
        )
    assert event.instance_id is None
    assert event.sop_instance_uid == uid
    assert event.details == {"free_bytes": 0}


def test_receipt_rejects_absolute_spool_paths() -> None:
    with pytest.raises(ValueError, match="relative"):
        make_receipt(spool_path="/var/spool/x.dcm")


def test_receipt_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_receipt(received_at=utc_now().replace(tzinfo=None))
