"""The spool purge frees old finished instances and never touches unfinished work."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from fixtures.receipts import make_receipt, new_uid
from sqlalchemy import select

from osteonode.store.db import Database
from osteonode.store.queue import Receipt, claim_job, mark_done, mark_routed, record_receipt
from osteonode.store.retention import purge_spool, remove_orphan_files
from osteonode.store.spool import Spool
from osteonode.store.tables import (
    Delivery,
    DeliveryState,
    Event,
    EventKind,
    Instance,
    Job,
    Result,
    utc_now,
)

RETENTION = timedelta(days=30)
OLD = utc_now() - timedelta(days=31)


def receive_file(database: Database, spool: Spool, *, received_at=OLD) -> Receipt:
    uid = new_uid()
    relative = spool.store_incoming(uid, b"DICM" + uid.encode())
    receipt = make_receipt(uid, received_at=received_at, spool_path=str(relative))
    with database.session() as session:
        record_receipt(session, receipt)
    return receipt


def finish_job(database: Database, uid: str) -> Job:
    with database.session() as session:
        job = claim_job(session, worker_id="w", lease_seconds=60, pipelines=[])
        assert job is not None and job.instance.sop_instance_uid == uid
    with database.session() as session:
        return mark_done(session, job)


def add_delivery(database: Database, spool: Spool, job: Job, state: DeliveryState) -> str:
    result_uid = new_uid()
    relative = spool.write_outgoing(result_uid, b"result")
    with database.session() as session:
        result = Result(
            job_id=job.id, instance_id=job.instance_id, pipeline="lumbar", payload={},
            created_at=utc_now(),
        )
        session.add(result)
        session.flush()
        session.add(
            Delivery(
                result_id=result.id, destination="pacs", sop_instance_uid=result_uid,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.22", spool_path=str(relative),
                state=state, attempts=0, created_at=utc_now(),
            )
        )
    return str(relative)


def purge(database: Database, spool: Spool):
    with database.session() as session:
        return purge_spool(session, spool, RETENTION)


def test_old_finished_instance_is_purged_with_its_result_files(
    database: Database, spool: Spool
) -> None:
    receipt = receive_file(database, spool)
    job = finish_job(database, receipt.sop_instance_uid)
    result_path = add_delivery(database, spool, job, DeliveryState.SENT)
    report = purge(database, spool)
    assert report.purged_instances == 1
    assert report.deleted_files == 2
    assert report.freed_bytes > 0
    assert not spool.path(receipt.spool_path).exists()
    assert not spool.path(result_path).exists()
    with database.session() as session:
        instance = session.scalars(select(Instance)).one()
        kinds = session.scalars(select(Event.kind).where(Event.instance_id == instance.id)).all()
    assert instance.purged_at is not None
    assert kinds[-1] is EventKind.PURGED
    assert purge(database, spool).purged_instances == 0


def test_unfinished_job_keeps_its_file(database: Database, spool: Spool) -> None:
    queued = receive_file(database, spool)
    running = receive_file(database, spool)
    with database.session() as session:
        router = claim_job(session, worker_id="w", lease_seconds=60, pipelines=[])
    with database.session() as session:
        mark_routed(session, router, "hip", "hip-ap")  # waits for a hip worker
    with database.session() as session:
        claim_job(session, worker_id="w", lease_seconds=60, pipelines=[])
    report = purge(database, spool)
    assert report.purged_instances == 0
    assert report.kept_unfinished == 2
    assert spool.path(queued.spool_path).exists()
    assert spool.path(running.spool_path).exists()


@pytest.mark.parametrize("state", [DeliveryState.PENDING, DeliveryState.FAILED])
def test_unfinished_delivery_keeps_the_files(
    database: Database, spool: Spool, state: DeliveryState
) -> None:
    receipt = receive_file(database, spool)
    job = finish_job(database, receipt.sop_instance_uid)
    result_path = add_delivery(database, spool, job, DeliveryState.SENT)
    open_path = add_delivery(database, spool, job, state)
    report = purge(database, spool)
    assert (report.purged_instances, report.kept_unfinished) == (0, 1)
    for relative in (receipt.spool_path, result_path, open_path):
        assert spool.path(relative).exists()


def test_recent_finished_instance_is_kept(database: Database, spool: Spool) -> None:
    receipt = receive_file(database, spool, received_at=utc_now() - timedelta(days=1))
    finish_job(database, receipt.sop_instance_uid)
    report = purge(database, spool)
    assert (report.purged_instances, report.kept_unfinished) == (0, 0)
    assert spool.path(receipt.spool_path).exists()


def test_purge_tolerates_a_file_already_gone(database: Database, spool: Spool) -> None:
    receipt = receive_file(database, spool)
    finish_job(database, receipt.sop_instance_uid)
    spool.delete(receipt.spool_path)
    report = purge(database, spool)
    assert (report.purged_instances, report.deleted_files) == (1, 0)


def test_negative_retention_is_refused(database: Database, spool: Spool) -> None:
    with database.session() as session, pytest.raises(ValueError, match="negative"):
        purge_spool(session, spool, timedelta(days=-1))


def _age(spool: Spool, relative: str | Path, hours: float) -> None:
    stamp = (utc_now() - timedelta(hours=hours)).timestamp()
    os.utime(spool.path(relative), (stamp, stamp))


def test_file_a_crash_left_without_a_row_is_removed_after_the_grace_period(
    database: Database, spool: Spool
) -> None:
    kept = receive_file(database, spool)
    _age(spool, kept.spool_path, hours=5)
    old_orphan = spool.store_incoming(new_uid(), b"DICM never acknowledged")
    _age(spool, old_orphan, hours=2)
    young_orphan = spool.write_outgoing(new_uid(), b"result whose row is being committed")

    with database.session() as session:
        removed = remove_orphan_files(session, spool)

    assert removed == 1
    assert not spool.path(old_orphan).exists()
    assert spool.path(young_orphan).exists()
    assert spool.path(kept.spool_path).exists()


def test_result_files_of_queued_deliveries_are_not_orphans(
    database: Database, spool: Spool
) -> None:
    receipt = receive_file(database, spool)
    job = finish_job(database, receipt.sop_instance_uid)
    result_file = add_delivery(database, spool, job, DeliveryState.PENDING)
    _age(spool, result_file, hours=3)

    with database.session() as session:
        assert remove_orphan_files(session, spool) == 0
    assert spool.path(result_file).exists()
