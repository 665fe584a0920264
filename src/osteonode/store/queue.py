"""Receipts, the job queue and the event record.

Every function takes an open :class:`sqlalchemy.orm.Session` and leaves committing to the caller
(``with database.session() as session: ...``), so a receipt, its job and its event are committed
together or not at all.

Job life cycle::

    received ──▶ pending ──claim──▶ running ──mark_routed──▶ queued ──claim──▶ running ──▶ done
                                       │                                          │
                                       ├─mark_skipped──▶ skipped                  ├─▶ pending/queued
                                       └─attempt failed / lease expired ──▶ ...   │   (next attempt)
                                                                                  └─▶ failed

A claim takes a lease; a worker that dies leaves its job ``running`` with an expired lease, and
the job is claimed again (or failed once it has had ``max_attempts`` claims). Each state change
made by a worker first re-reads the job with a row lock and checks that the worker still holds its
lease, so a worker whose lease was taken over can never overwrite the new owner's work
(:class:`LeaseLostError`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osteonode.store.checks import check_aware, check_text, resolve_now
from osteonode.store.tables import (
    UID_LENGTH,
    Event,
    EventKind,
    Instance,
    Job,
    JobState,
    utc_now,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "LeaseLostError",
    "Receipt",
    "ReceiptOutcome",
    "ReceiptStatus",
    "claim_job",
    "is_known_instance",
    "mark_done",
    "mark_failed_attempt",
    "mark_routed",
    "mark_skipped",
    "reclaim_expired_leases",
    "record_event",
    "record_receipt",
    "release_job",
]

log = structlog.get_logger(__name__)

#: Claims a job gets before it is marked failed, unless the caller says otherwise.
DEFAULT_MAX_ATTEMPTS = 3
#: Longest error text kept on a job; tracebacks beyond this are cut.
MAX_ERROR_LENGTH = 8000
_WARNING_KINDS = frozenset(
    {EventKind.REFUSED, EventKind.JOB_FAILED, EventKind.LEASE_EXPIRED, EventKind.DELIVERY_DEAD}
)
# Fields of the log event itself; details must not shadow them.
_RESERVED_DETAIL_KEYS = frozenset({"event", "event_id", "instance_id", "job_id", "level"})


class LeaseLostError(RuntimeError):
    """The worker no longer holds the lease on its job (it expired and was taken over)."""


class ReceiptStatus(enum.StrEnum):
    """What :func:`record_receipt` did with a receipt."""

    NEW = "new"
    """A new instance: its file is kept and a job was queued."""
    DUPLICATE = "duplicate"
    """The SOP Instance UID is already stored: the receipt is counted, the new file is not kept."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """One C-STORE of an instance whose file is already durably in the spool.

    Parameters
    ----------
    sop_instance_uid: str
        Affected SOP Instance UID.
    sop_class_uid: str
        Affected SOP Class UID.
    transfer_syntax_uid: str
        Transfer syntax of the accepted presentation context.
    spool_path: str | pathlib.Path
        Path of the stored file relative to the spool root.
    size_bytes: int
        Size of the stored file.
    calling_ae: str
        AE title of the sender.
    called_ae: str
        AE title the sender called.
    calling_host: str | None
        Network address of the sender.
    study_instance_uid: str | None
        Study Instance UID, if the receiver read it from the header.
    series_instance_uid: str | None
        Series Instance UID, if read.
    modality: str | None
        Modality, if read.
    received_at: datetime.datetime
        Time of receipt (aware); now by default.
    """

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    spool_path: str | Path
    size_bytes: int
    calling_ae: str
    called_ae: str
    calling_host: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None
    received_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        for name in ("sop_instance_uid", "sop_class_uid", "transfer_syntax_uid"):
            check_text(name, getattr(self, name), UID_LENGTH)
        for name in ("study_instance_uid", "series_instance_uid"):
            check_text(name, getattr(self, name), UID_LENGTH, optional=True)
        check_text("modality", self.modality, 16, optional=True)
        check_text("calling_ae", self.calling_ae, 16)
        check_text("called_ae", self.called_ae, 16)
        check_text("calling_host", self.calling_host, 255, optional=True)
        if not isinstance(self.spool_path, (str, Path)):
            kind = type(self.spool_path).__name__
            raise TypeError(f"spool_path must be a str or Path, got {kind}")
        spool_path = Path(self.spool_path)
        if spool_path.is_absolute() or ".." in spool_path.parts or not spool_path.parts:
            raise ValueError(
                f"spool_path must be relative to the spool root, got {self.spool_path}"
            )
        if isinstance(self.size_bytes, bool) or not isinstance(self.size_bytes, int):
            raise TypeError(f"size_bytes must be an int, got {type(self.size_bytes).__name__}")
        if self.size_bytes < 0:
            raise ValueError(f"size_bytes must not be negative, got {self.size_bytes}")
        check_aware("received_at", self.received_at)

    @property
    def relative_path(self) -> str:
        """The spool path as stored in the database (POSIX separators)."""
        return Path(self.spool_path).as_posix()


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    """What :func:`record_receipt` did.

    Attributes
    ----------
    status: ReceiptStatus
        New instance or duplicate.
    instance_id: int
        Row of the (new or earlier) instance.
    job_id: int | None
        The job queued for a new instance; None for a duplicate.
    receipt_count: int
        How often the instance has now been received.
    stored_spool_path: str
        Spool path of the file the database keeps for this UID (the earlier one for a duplicate).
    """

    status: ReceiptStatus
    instance_id: int
    job_id: int | None
    receipt_count: int
    stored_spool_path: str

    @property
    def is_duplicate(self) -> bool:
        """True if the UID was already stored and the receiver should discard its new file."""
        return self.status is ReceiptStatus.DUPLICATE


def _plain(value: Any) -> Any:
    """Return a JSON-ready copy of an event detail value."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    return value


def record_event(
    session: Session,
    kind: EventKind | str,
    message: str,
    *,
    instance: Instance | None = None,
    job: Job | None = None,
    sop_instance_uid: str | None = None,
    **details: Any,
) -> Event:
    """Record a decision or happening as an :class:`Event` row and a structured log event.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session; the event is committed with the caller's transaction.
    kind: EventKind | str
        What happened.
    message: str
        One human-readable sentence; no patient identity.
    instance: Instance | None
        The instance concerned.
    job: Job | None
        The job concerned (its instance is taken when ``instance`` is not given).
    sop_instance_uid: str | None
        UID concerned where no instance row exists (e.g. a refused C-STORE).
    **details: Any
        JSON-serialisable key-value details (enums, datetimes and paths are converted). Keys naming
        patient data are refused.

    Returns
    -------
    Event
        The flushed event row.

    Raises
    ------
    ValueError
        If ``kind`` is unknown, a detail key names patient data or shadows a log field, or a detail
        is not JSON-serialisable.
    """
    kind = EventKind(kind)
    if not isinstance(message, str):
        raise TypeError(f"message must be a str, got {type(message).__name__}")
    for key in details:
        if "patient" in key.lower():
            raise ValueError(f"event detail {key!r} looks like patient data, which is never kept")
        if key in _RESERVED_DETAIL_KEYS:
            raise ValueError(f"event detail {key!r} is reserved for the log event itself")
    plain_details = _plain(details)
    try:
        json.dumps(plain_details)
    except (TypeError, ValueError) as error:
        raise ValueError(f"event details are not JSON-serialisable: {error}") from None
    instance_id = instance.id if instance is not None else job.instance_id if job else None
    if sop_instance_uid is None:
        if instance is not None:
            sop_instance_uid = instance.sop_instance_uid
        elif instance_id is not None:
            sop_instance_uid = session.scalar(
                select(Instance.sop_instance_uid).where(Instance.id == instance_id)
            )
    event = Event(
        instance_id=instance_id,
        job_id=job.id if job is not None else None,
        sop_instance_uid=sop_instance_uid,
        at=utc_now(),
        kind=kind,
        message=message,
        details=plain_details,
    )
    session.add(event)
    session.flush()
    emit = log.warning if kind in _WARNING_KINDS else log.info
    emit(
        kind.value,
        event_id=event.id,
        instance_id=event.instance_id,
        job_id=event.job_id,
        sop_instance_uid=sop_instance_uid,
        message=message,
        **plain_details,
    )
    return event


def is_known_instance(session: Session, sop_instance_uid: str) -> bool:
    """Return whether an instance with this SOP Instance UID is already stored.

    A cheap check before a receiver writes a file; :func:`record_receipt` stays the authority when
    two associations send the same UID at the same time.
    """
    check_text("sop_instance_uid", sop_instance_uid, UID_LENGTH)
    return bool(
        session.scalar(select(exists().where(Instance.sop_instance_uid == sop_instance_uid)))
    )


def _find_instance(session: Session, sop_instance_uid: str) -> Instance | None:
    return session.scalars(
        select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
    ).one_or_none()


def record_receipt(
    session: Session, receipt: Receipt, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> ReceiptOutcome:
    """Record a received instance: a new instance with a pending job, or a counted duplicate.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session; commit it before acknowledging the C-STORE.
    receipt: Receipt
        The receipt; its file must already be durably in the spool.
    max_attempts: int
        Claims the new job gets before it is marked failed.

    Returns
    -------
    ReceiptOutcome
        For a duplicate the caller should delete its new file (never the stored one; the spool
        gives each copy its own name).
    """
    if not isinstance(receipt, Receipt):
        raise TypeError(f"receipt must be a Receipt, got {type(receipt).__name__}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive int, got {max_attempts!r}")
    existing = _find_instance(session, receipt.sop_instance_uid)
    if existing is None:
        instance = Instance(
            sop_instance_uid=receipt.sop_instance_uid,
            sop_class_uid=receipt.sop_class_uid,
            study_instance_uid=receipt.study_instance_uid,
            series_instance_uid=receipt.series_instance_uid,
            modality=receipt.modality,
            transfer_syntax_uid=receipt.transfer_syntax_uid,
            spool_path=receipt.relative_path,
            size_bytes=receipt.size_bytes,
            calling_ae=receipt.calling_ae,
            calling_host=receipt.calling_host,
            called_ae=receipt.called_ae,
            received_at=receipt.received_at,
            last_received_at=receipt.received_at,
            receipt_count=1,
        )
        try:
            # A savepoint, so losing a race on the unique UID keeps the caller's transaction usable.
            with session.begin_nested():
                session.add(instance)
                session.flush()
        except IntegrityError:
            existing = _find_instance(session, receipt.sop_instance_uid)
            if existing is None:
                raise
        else:
            return _record_new(session, instance, receipt, max_attempts)
    return _record_duplicate(session, existing, receipt)


def _record_new(
    session: Session, instance: Instance, receipt: Receipt, max_attempts: int
) -> ReceiptOutcome:
    job = Job(
        instance_id=instance.id,
        state=JobState.PENDING,
        attempts=0,
        max_attempts=max_attempts,
        created_at=receipt.received_at,
        updated_at=receipt.received_at,
    )
    session.add(job)
    session.flush()
    record_event(
        session,
        EventKind.RECEIVED,
        f"received from {receipt.calling_ae}",
        instance=instance,
        job=job,
        calling_ae=receipt.calling_ae,
        calling_host=receipt.calling_host,
        called_ae=receipt.called_ae,
        sop_class_uid=receipt.sop_class_uid,
        transfer_syntax_uid=receipt.transfer_syntax_uid,
        size_bytes=receipt.size_bytes,
        spool_path=receipt.relative_path,
    )
    return ReceiptOutcome(
        status=ReceiptStatus.NEW,
        instance_id=instance.id,
        job_id=job.id,
        receipt_count=1,
        stored_spool_path=instance.spool_path,
    )


def _record_duplicate(session: Session, instance: Instance, receipt: Receipt) -> ReceiptOutcome:
    session.execute(
        update(Instance)
        .where(Instance.id == instance.id)
        .values(
            receipt_count=Instance.receipt_count + 1,
            last_received_at=receipt.received_at,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(instance, ["receipt_count", "last_received_at"])
    record_event(
        session,
        EventKind.DUPLICATE_RECEIVED,
        f"received again from {receipt.calling_ae}; already stored, new copy discarded",
        instance=instance,
        calling_ae=receipt.calling_ae,
        calling_host=receipt.calling_host,
        called_ae=receipt.called_ae,
        receipt_count=instance.receipt_count,
        already_purged=instance.purged_at is not None,
    )
    return ReceiptOutcome(
        status=ReceiptStatus.DUPLICATE,
        instance_id=instance.id,
        job_id=None,
        receipt_count=instance.receipt_count,
        stored_spool_path=instance.spool_path,
    )


def _claimable(now: datetime, pipelines: Collection[str]) -> ColumnElement[bool]:
    """SQL condition: the job may be claimed now by a worker that runs ``pipelines``."""
    return or_(
        Job.state == JobState.PENDING,
        and_(Job.state == JobState.QUEUED, Job.pipeline.in_(pipelines)),
        and_(
            Job.state == JobState.RUNNING,
            Job.lease_expires_at < now,
            Job.attempts < Job.max_attempts,
            or_(Job.pipeline.is_(None), Job.pipeline.in_(pipelines)),
        ),
    )


def claim_job(
    session: Session,
    *,
    worker_id: str,
    lease_seconds: float,
    pipelines: Collection[str],
    now: datetime | None = None,
) -> Job | None:
    """Claim the oldest job this worker can do, with a lease.

    A job is claimable if it is ``pending`` (needs routing), ``queued`` for one of ``pipelines``, or
    ``running`` with an expired lease and attempts left. PostgreSQL skips rows other workers have
    locked (``FOR UPDATE SKIP LOCKED``); the update itself is guarded by the same condition, so two
    workers never get the same job on either back-end.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session; commit it promptly, the claim is visible to others only then.
    worker_id: str
        Identifies the worker (e.g. ``host:pid:thread``); kept as lease owner.
    lease_seconds: float
        How long the job is the worker's before others may claim it again.
    pipelines: Collection[str]
        Pipelines this worker can run.
    now: datetime.datetime | None
        Current time (aware); for tests.

    Returns
    -------
    Job | None
        The claimed job (state ``running``, attempts counted), or None if there is none.
    """
    check_text("worker_id", worker_id, 128)
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)):
        raise TypeError(f"lease_seconds must be a number, got {type(lease_seconds).__name__}")
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
    if isinstance(pipelines, str) or not all(isinstance(name, str) for name in pipelines):
        raise TypeError("pipelines must be a collection of pipeline names")
    now = resolve_now(now)
    pipelines = sorted(set(pipelines))
    candidate = session.execute(
        select(Job.id, Job.state, Job.lease_owner)
        .where(_claimable(now, pipelines))
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if candidate is None:
        return None
    job = session.scalars(
        update(Job)
        .where(Job.id == candidate.id, _claimable(now, pipelines))
        .values(
            state=JobState.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            updated_at=now,
        )
        .returning(Job),
        execution_options={"populate_existing": True},
    ).one_or_none()
    if job is None:
        return None
    if candidate.state == JobState.RUNNING:
        record_event(
            session,
            EventKind.LEASE_EXPIRED,
            f"lease of {candidate.lease_owner} expired; job taken over by {worker_id}",
            job=job,
            previous_owner=candidate.lease_owner,
        )
    record_event(
        session,
        EventKind.JOB_CLAIMED,
        f"claimed by {worker_id} (attempt {job.attempts} of {job.max_attempts})",
        job=job,
        worker_id=worker_id,
        attempt=job.attempts,
        state_before=candidate.state,
        pipeline=job.pipeline,
    )
    return job


def _locked_running_job(session: Session, job: Job) -> Job:
    """Re-read ``job`` with a row lock and check that its claimer still holds the lease."""
    if not isinstance(job, Job):
        raise TypeError(f"job must be a Job, got {type(job).__name__}")
    owner, attempts = job.lease_owner, job.attempts
    current = session.get(Job, job.id, with_for_update=True, populate_existing=True)
    if (
        current is None
        or current.state != JobState.RUNNING
        or current.lease_owner != owner
        or current.attempts != attempts
    ):
        raise LeaseLostError(
            f"job {job.id} is no longer held by {owner} (attempt {attempts}); "
            "its lease expired and it was taken over or finished"
        )
    return current


def _wait_again(job: Job, now: datetime) -> None:
    """Put a running job back in line: ``queued`` if routed, else ``pending``; lease dropped."""
    job.state = JobState.PENDING if job.pipeline is None else JobState.QUEUED
    job.lease_owner = None
    job.lease_expires_at = None
    job.updated_at = now


def _finish(job: Job, state: JobState, now: datetime) -> None:
    job.state = state
    job.lease_owner = None
    job.lease_expires_at = None
    job.updated_at = now
    job.finished_at = now


def mark_routed(
    session: Session,
    job: Job,
    pipeline: str,
    rule: str,
    *,
    keep_lease: bool = False,
    also: Sequence[str] = (),
) -> Job:
    """Record that routing sent the job to ``pipeline`` (and the same image to ``also``).

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    job: Job
        The job as claimed by this worker.
    pipeline: str
        Pipeline that must run the image.
    rule: str
        Name of the routing rule that decided.
    keep_lease: bool
        False (default): the job becomes ``queued`` for a worker of that pipeline and its attempts
        start afresh. True: this worker keeps the lease and runs the pipeline itself.
    also: Sequence[str]
        Further pipelines the rule sends the image to: each gets a job of its own, ``queued``, in
        the same transaction, so the image is analysed by every one of them or by none.

    Returns
    -------
    Job
        The job as now stored.

    Raises
    ------
    LeaseLostError
        If this worker no longer holds the job.
    """
    check_text("pipeline", pipeline, 64)
    check_text("rule", rule, 128)
    current = _locked_running_job(session, job)
    now = utc_now()
    current.pipeline = pipeline
    current.route_rule = rule
    if keep_lease:
        current.updated_at = now
    else:
        _wait_again(current, now)
        current.attempts = 0
    record_event(
        session, EventKind.ROUTED, f"routed to {pipeline} by rule {rule}", job=current,
        pipeline=pipeline, rule=rule,
    )
    for other in also:
        check_text("pipeline", other, 64)
        sibling = Job(
            instance_id=current.instance_id,
            state=JobState.QUEUED,
            pipeline=other,
            route_rule=rule,
            attempts=0,
            max_attempts=current.max_attempts,
            created_at=now,
            updated_at=now,
        )
        session.add(sibling)
        session.flush()
        record_event(
            session, EventKind.ROUTED, f"routed to {other} by rule {rule}", job=sibling,
            pipeline=other, rule=rule,
        )
    return current


def mark_skipped(
    session: Session, job: Job, reason: str, detail: str, rule: str | None = None
) -> Job:
    """Record that routing decided the image is for no pipeline, and why.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    job: Job
        The job as claimed by this worker.
    reason: str
        Coded reason (a ``routing.SkipReason`` value).
    detail: str
        Human-readable explanation (no patient identity).
    rule: str | None
        Routing rule that decided, if any.

    Raises
    ------
    LeaseLostError
        If this worker no longer holds the job.
    """
    check_text("reason", reason, 64)
    if not isinstance(detail, str):
        raise TypeError(f"detail must be a str, got {type(detail).__name__}")
    check_text("rule", rule, 128, optional=True)
    current = _locked_running_job(session, job)
    _finish(current, JobState.SKIPPED, utc_now())
    current.skip_reason = str(reason)
    current.skip_detail = detail
    current.route_rule = rule
    record_event(
        session, EventKind.SKIPPED, f"skipped: {reason}: {detail}", job=current,
        reason=reason, detail=detail, rule=rule,
    )
    return current


def mark_done(session: Session, job: Job) -> Job:
    """Record that the job's pipeline ran to completion.

    Raises
    ------
    LeaseLostError
        If this worker no longer holds the job.
    """
    current = _locked_running_job(session, job)
    _finish(current, JobState.DONE, utc_now())
    current.error = None
    record_event(
        session, EventKind.JOB_DONE, f"done ({current.pipeline or 'no pipeline'})", job=current,
        pipeline=current.pipeline, attempts=current.attempts,
    )
    return current


def mark_failed_attempt(session: Session, job: Job, error: str) -> Job:
    """Record a failed attempt: the job waits for another claim, or fails after its last attempt.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    job: Job
        The job as claimed by this worker.
    error: str
        What went wrong (kept on the job, cut to ``MAX_ERROR_LENGTH`` characters).

    Returns
    -------
    Job
        The job as now stored: ``pending``/``queued`` again, or ``failed``.

    Raises
    ------
    LeaseLostError
        If this worker no longer holds the job.
    """
    if not isinstance(error, str):
        raise TypeError(f"error must be a str, got {type(error).__name__}")
    current = _locked_running_job(session, job)
    now = utc_now()
    current.error = error[:MAX_ERROR_LENGTH]
    if current.attempts >= current.max_attempts:
        _finish(current, JobState.FAILED, now)
        kind, message = EventKind.JOB_FAILED, f"failed after {current.attempts} attempts"
    else:
        _wait_again(current, now)
        kind, message = EventKind.JOB_ATTEMPT_FAILED, f"attempt {current.attempts} failed"
    last_line = (current.error.strip().splitlines() or ["(no message)"])[-1]
    record_event(
        session, kind, f"{message}: {last_line}", job=current,
        attempt=current.attempts, max_attempts=current.max_attempts, error=current.error,
    )
    return current


def release_job(session: Session, job: Job) -> Job:
    """Give a claimed job back (worker shutting down) without counting the attempt.

    Raises
    ------
    LeaseLostError
        If this worker no longer holds the job.
    """
    current = _locked_running_job(session, job)
    owner = current.lease_owner
    _wait_again(current, utc_now())
    current.attempts = max(current.attempts - 1, 0)
    record_event(
        session, EventKind.JOB_RELEASED, f"released by {owner}", job=current, worker_id=owner
    )
    return current


def reclaim_expired_leases(session: Session, now: datetime | None = None) -> int:
    """Put running jobs whose lease expired back in line, or fail them if no attempt is left.

    Claiming takes over expired leases by itself; this periodic sweep also covers jobs no running
    worker can claim (their pipeline's workers are gone, or their attempts are used up).

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Returns
    -------
    int
        Number of jobs reclaimed or failed.
    """
    now = resolve_now(now)
    expired = session.scalars(
        select(Job)
        .where(Job.state == JobState.RUNNING, Job.lease_expires_at < now)
        .order_by(Job.id)
        .with_for_update(skip_locked=True)
    ).all()
    for job in expired:
        owner = job.lease_owner
        if job.attempts >= job.max_attempts:
            job.error = f"lease of {owner} expired on attempt {job.attempts}; worker stopped"
            _finish(job, JobState.FAILED, now)
            kind, message = EventKind.JOB_FAILED, f"failed: {job.error}"
        else:
            _wait_again(job, now)
            kind, message = EventKind.LEASE_EXPIRED, f"lease of {owner} expired; job back in line"
        record_event(session, kind, message, job=job, previous_owner=owner, attempt=job.attempts)
    return len(expired)
