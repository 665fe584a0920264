"""Workers claim jobs with leases; lost workers' jobs come back; failing jobs end as failed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from osteonode.store.db import Database
from osteonode.store.queue import (
    LeaseLostError,
    ReceiptOutcome,
    claim_job,
    mark_done,
    mark_failed_attempt,
    mark_routed,
    mark_skipped,
    reclaim_expired_leases,
    release_job,
)
from osteonode.store.tables import Event, EventKind, Job, JobState, utc_now

Receive = Callable[..., ReceiptOutcome]
LEASE_S = 60.0


def claim(database: Database, worker: str, *, pipelines=("lumbar",), now=None) -> Job | None:
    with database.session() as session:
        return claim_job(
            session, worker_id=worker, lease_seconds=LEASE_S, pipelines=pipelines, now=now
        )


def job_kinds(database: Database, job_id: int) -> list[EventKind]:
    with database.session() as session:
        kinds = session.scalars(select(Event.kind).where(Event.job_id == job_id).order_by(Event.id))
        return list(kinds)


def test_claim_takes_the_oldest_job_with_a_lease(database: Database, receive: Receive) -> None:
    first, _ = receive(), receive()
    before = utc_now()
    job = claim(database, "worker-a")
    assert job is not None
    assert job.id == first.job_id
    assert job.state is JobState.RUNNING
    assert job.lease_owner == "worker-a"
    assert job.attempts == 1
    assert job.lease_expires_at is not None
    assert job.lease_expires_at >= before + timedelta(seconds=LEASE_S)
    assert job_kinds(database, job.id) == [EventKind.RECEIVED, EventKind.JOB_CLAIMED]


def test_claimed_job_is_not_claimed_again_while_leased(
    database: Database, receive: Receive
) -> None:
    receive()
    assert claim(database, "worker-a") is not None
    assert claim(database, "worker-b") is None


def test_queued_job_goes_only_to_a_worker_of_its_pipeline(
    database: Database, receive: Receive
) -> None:
    receive()
    job = claim(database, "router")
    with database.session() as session:
        routed = mark_routed(session, job, "hip", "hip-ap")
    assert routed.state is JobState.QUEUED
    assert routed.lease_owner is None
    assert routed.attempts == 0
    assert claim(database, "lumbar-worker", pipelines=["lumbar"]) is None
    again = claim(database, "hip-worker", pipelines=["hip", "lumbar"])
    assert again is not None and again.id == job.id
    assert again.pipeline == "hip" and again.attempts == 1


def test_routing_with_kept_lease_lets_the_router_run_the_pipeline(
    database: Database, receive: Receive
) -> None:
    receive()
    job = claim(database, "worker-a")
    with database.session() as session:
        routed = mark_routed(session, job, "lumbar", "lumbar-ap", keep_lease=True)
    assert routed.state is JobState.RUNNING and routed.lease_owner == "worker-a"
    with database.session() as session:
        done = mark_done(session, routed)
    assert done.state is JobState.DONE
    assert done.finished_at is not None
    assert job_kinds(database, job.id)[-2:] == [EventKind.ROUTED, EventKind.JOB_DONE]


def test_skipped_job_keeps_its_reason(database: Database, receive: Receive) -> None:
    receive()
    job = claim(database, "worker-a")
    with database.session() as session:
        skipped = mark_skipped(session, job, "lateral_view", "ViewPosition is LL", "default")
    assert skipped.state is JobState.SKIPPED
    assert (skipped.skip_reason, skipped.skip_detail) == ("lateral_view", "ViewPosition is LL")
    assert skipped.lease_owner is None


@pytest.mark.timeout(60)
def test_racing_workers_never_get_the_same_job(database: Database, receive: Receive) -> None:
    job_count, worker_count = 50, 4
    for _ in range(job_count):
        receive()
    claimed: dict[str, list[int]] = {f"worker-{n}": [] for n in range(worker_count)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(worker_count)

    def work(worker: str) -> None:
        try:
            barrier.wait()
            while (job := claim(database, worker)) is not None:
                claimed[worker].append(job.id)
                with database.session() as session:
                    mark_done(session, job)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    all_claims = [job_id for ids in claimed.values() for job_id in ids]
    assert len(all_claims) == job_count
    assert len(set(all_claims)) == job_count
    with database.session() as session:
        states = set(session.scalars(select(Job.state)))
    assert states == {JobState.DONE}


def test_job_of_a_dead_worker_is_claimed_again_after_its_lease(
    database: Database, receive: Receive
) -> None:
    receive()
    dead = claim(database, "worker-dead")
    assert claim(database, "worker-b") is None
    later = utc_now() + timedelta(seconds=LEASE_S + 1)
    again = claim(database, "worker-b", now=later)
    assert again is not None and again.id == dead.id
    assert again.lease_owner == "worker-b"
    assert again.attempts == 2
    assert EventKind.LEASE_EXPIRED in job_kinds(database, dead.id)
    with database.session() as session, pytest.raises(LeaseLostError):
        mark_done(session, dead)
    with database.session() as session:
        assert mark_done(session, again).state is JobState.DONE


def test_sweep_puts_expired_jobs_back_in_line(database: Database, receive: Receive) -> None:
    receive()
    job = claim(database, "worker-dead")
    with database.session() as session:
        assert reclaim_expired_leases(session, utc_now()) == 0
    with database.session() as session:
        assert reclaim_expired_leases(session, utc_now() + timedelta(seconds=LEASE_S + 1)) == 1
    with database.session() as session:
        stored = session.get_one(Job, job.id)
    assert stored.state is JobState.PENDING
    assert stored.lease_owner is None
    assert stored.attempts == 1


def test_job_failing_every_attempt_ends_failed_with_its_error(
    database: Database, receive: Receive
) -> None:
    receive(max_attempts=3)
    for attempt in range(1, 4):
        job = claim(database, "worker-a")
        assert job is not None and job.attempts == attempt
        with database.session() as session:
            after = mark_failed_attempt(session, job, f"Traceback...\nRuntimeError: boom {attempt}")
        expected = JobState.FAILED if attempt == 3 else JobState.PENDING
        assert after.state is expected
    assert claim(database, "worker-a") is None
    with database.session() as session:
        stored = session.get_one(Job, job.id)
    assert stored.error == "Traceback...\nRuntimeError: boom 3"
    assert stored.finished_at is not None
    kinds = job_kinds(database, job.id)
    assert kinds.count(EventKind.JOB_ATTEMPT_FAILED) == 2
    assert kinds[-1] is EventKind.JOB_FAILED


def test_job_whose_workers_keep_dying_fails_after_its_last_lease(
    database: Database, receive: Receive
) -> None:
    receive(max_attempts=2)
    now = utc_now()
    for attempt in range(2):
        now += timedelta(seconds=LEASE_S + 1)
        assert claim(database, f"worker-{attempt}", now=now) is not None
    now += timedelta(seconds=LEASE_S + 1)
    assert claim(database, "worker-x", now=now) is None
    with database.session() as session:
        assert reclaim_expired_leases(session, now) == 1
    with database.session() as session:
        stored = session.scalars(select(Job)).one()
    assert stored.state is JobState.FAILED
    assert "lease of worker-1 expired" in (stored.error or "")


def test_released_job_is_claimable_again_without_losing_an_attempt(
    database: Database, receive: Receive
) -> None:
    receive()
    job = claim(database, "worker-stopping")
    with database.session() as session:
        released = release_job(session, job)
    assert released.state is JobState.PENDING
    assert released.attempts == 0
    again = claim(database, "worker-b")
    assert again is not None and again.id == job.id and again.attempts == 1
    assert EventKind.JOB_RELEASED in job_kinds(database, job.id)


def test_claim_checks_its_arguments(database: Database) -> None:
    with database.session() as session:
        with pytest.raises(ValueError, match="lease_seconds"):
            claim_job(session, worker_id="w", lease_seconds=0, pipelines=[])
        with pytest.raises(TypeError, match="pipelines"):
            claim_job(session, worker_id="w", lease_seconds=1, pipelines="lumbar")
        with pytest.raises(ValueError, match="worker_id"):
            claim_job(session, worker_id="", lease_seconds=1, pipelines=[])
