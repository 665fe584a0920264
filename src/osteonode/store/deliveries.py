"""The outbox: result objects waiting to be sent, one :class:`Delivery` row per object and destination.

Every function takes an open :class:`sqlalchemy.orm.Session` and leaves committing to the caller,
so a worker adds its Result row, the Delivery rows and marks its job done in one transaction: either
the result and everything it must send exist, or none of it does (the files are written to the spool
before that transaction; a crash in between leaves an unreferenced file, never a row without a file).

Delivery life cycle::

    pending ──claim──▶ sending ──mark_sent──▶ sent
       ▲                  │ ├──mark_retry──▶ failed / unconfirmed ──(next_attempt_at)──claim──▶ ...
       │                  │ └──mark_dead───▶ dead / maybe_sent
       │                  └──lease expired (sender died)──claim──▶ sending
       └──── requeue (operator: ``osteonode deliveries retry``) ◀── dead / maybe_sent / waiting

An *unconfirmed* try sent the whole object but lost the answer (the association was aborted or
timed out after the data went), so the destination may hold the object. The delivery records when
that first happened (``unconfirmed_at``) and waits as ``unconfirmed`` rather than ``failed``; the next
try sends the same object with the same UIDs, which the destination recognises, and its success
makes the delivery ``sent``. A delivery that may have arrived is never called ``dead``: given up, it
ends ``maybe_sent``.

A claim works like a job's lease, without extra columns: the delivery becomes ``sending``,
``attempts`` is counted and ``next_attempt_at`` is set to the end of the lease, after which another
sender may claim it again. ``attempts`` is also the fencing token: a sender records its outcome only
while the row is still ``sending`` with the attempt number it claimed (:class:`LeaseLostError`
otherwise), so a sender whose lease was taken over never overwrites the new owner's outcome.
Deliveries are claimed per destination, so one unreachable PACS never holds up another.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from osteonode.store.checks import check_text, resolve_now
from osteonode.store.history import _Record
from osteonode.store.queue import MAX_ERROR_LENGTH, LeaseLostError, record_event
from osteonode.store.spool import Spool
from osteonode.store.tables import (
    FINISHED_DELIVERY_STATES,
    UID_LENGTH,
    Delivery,
    DeliveryState,
    EventKind,
    Instance,
    Job,
    Result,
)
from osteonode.store.wakeups import Channel, wake_after_commit

__all__ = [
    "DeliveryListing",
    "DeliveryPurgeReport",
    "DeliveryStateError",
    "OutgoingObject",
    "add_deliveries",
    "claim_delivery",
    "list_deliveries",
    "mark_dead",
    "mark_retry",
    "mark_sent",
    "purge_sent_deliveries",
    "requeue_dead_deliveries",
    "requeue_delivery",
    "undelivered_by_destination",
]

log = structlog.get_logger(__name__)

#: Longest destination name (the ``destination`` column).
DESTINATION_NAME_LENGTH = 64
#: States an operator may send again.
REQUEUEABLE_STATES: frozenset[DeliveryState] = frozenset(
    {DeliveryState.DEAD, DeliveryState.MAYBE_SENT, DeliveryState.FAILED, DeliveryState.UNCONFIRMED}
)
#: States of a delivery waiting for its next try.
_WAITING_STATES = (DeliveryState.PENDING, DeliveryState.FAILED, DeliveryState.UNCONFIRMED)


class DeliveryStateError(ValueError):
    """The delivery is not in a state that allows the requested change."""


@dataclass(frozen=True, slots=True)
class OutgoingObject:
    """One result object, already durably in the spool, to be sent to one destination.

    Parameters
    ----------
    destination: str
        Name of the destination (a key of ``[destinations]``).
    sop_instance_uid: str
        SOP Instance UID of the object.
    sop_class_uid: str
        SOP Class UID of the object.
    spool_path: str | pathlib.Path
        Path of its file relative to the spool root (:meth:`Spool.write_outgoing`).
    """

    destination: str
    sop_instance_uid: str
    sop_class_uid: str
    spool_path: str | Path

    def __post_init__(self) -> None:
        check_text("destination", self.destination, DESTINATION_NAME_LENGTH)
        check_text("sop_instance_uid", self.sop_instance_uid, UID_LENGTH)
        check_text("sop_class_uid", self.sop_class_uid, UID_LENGTH)
        if not isinstance(self.spool_path, (str, Path)):
            raise TypeError(
                f"spool_path must be a str or Path, got {type(self.spool_path).__name__}"
            )
        path = Path(self.spool_path)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(
                f"spool_path must be relative to the spool root, got {self.spool_path}"
            )


def _source_job(session: Session, delivery: Delivery) -> Job | None:
    """The job whose result the delivery sends; events hang on it so an image's story includes them."""
    return session.scalar(
        select(Job).join(Result, Result.job_id == Job.id).where(Result.id == delivery.result_id)
    )


def _record(
    session: Session, kind: EventKind, message: str, delivery: Delivery, **details: Any
) -> None:
    record_event(
        session,
        kind,
        message,
        job=_source_job(session, delivery),
        delivery_id=delivery.id,
        destination=delivery.destination,
        object_uid=delivery.sop_instance_uid,
        object_class_uid=delivery.sop_class_uid,
        attempt=delivery.attempts,
        **details,
    )


def add_deliveries(
    session: Session,
    result: Result,
    objects: Sequence[OutgoingObject],
    now: datetime | None = None,
) -> list[Delivery]:
    """Queue the sending of a result's objects: one ``pending`` delivery, due now, per object.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session; commit the result row, its deliveries and the job's outcome together.
    result: Result
        The result row (added to the session; flushed here if it has no id yet).
    objects: Sequence[OutgoingObject]
        What to send where.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Returns
    -------
    list of Delivery
        The new rows, flushed.
    """
    if not isinstance(result, Result):
        raise TypeError(f"result must be a Result row, got {type(result).__name__}")
    for item in objects:
        if not isinstance(item, OutgoingObject):
            raise TypeError(f"objects must be OutgoingObject values, got {type(item).__name__}")
    now = resolve_now(now)
    if result.id is None:
        session.flush()
    deliveries = [
        Delivery(
            result_id=result.id,
            destination=item.destination,
            sop_instance_uid=item.sop_instance_uid,
            sop_class_uid=item.sop_class_uid,
            spool_path=Path(item.spool_path).as_posix(),
            state=DeliveryState.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for item in objects
    ]
    session.add_all(deliveries)
    session.flush()
    wake_after_commit(session, Channel.DELIVERIES)
    for delivery in deliveries:
        _record(session, EventKind.DELIVERY_QUEUED, f"queued for {delivery.destination}", delivery)
    return deliveries


def _due(now: datetime, destination: str) -> ColumnElement[bool]:
    """SQL condition: a delivery to ``destination`` that may be claimed now."""
    return and_(
        Delivery.destination == destination,
        Delivery.next_attempt_at <= now,
        or_(
            Delivery.state.in_(_WAITING_STATES),
            # A sender that died mid-send: its lease has run out.
            Delivery.state == DeliveryState.SENDING,
        ),
    )


def claim_delivery(
    session: Session,
    *,
    destination: str,
    lease_seconds: float,
    now: datetime | None = None,
) -> Delivery | None:
    """Claim the oldest due delivery to ``destination`` for sending, with a lease.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session; commit it before sending, so the claim is visible to other senders.
    destination: str
        The destination whose deliveries this sender handles.
    lease_seconds: float
        How long the delivery is this sender's before another may claim it again.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Returns
    -------
    Delivery | None
        The claimed delivery (``sending``, attempt counted), or None when nothing is due.
    """
    check_text("destination", destination, DESTINATION_NAME_LENGTH)
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)):
        raise TypeError(f"lease_seconds must be a number, got {type(lease_seconds).__name__}")
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
    now = resolve_now(now)
    candidate = session.execute(
        select(Delivery.id, Delivery.state)
        .where(_due(now, destination))
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if candidate is None:
        return None
    delivery = session.scalars(
        update(Delivery)
        .where(Delivery.id == candidate.id, _due(now, destination))
        .values(
            state=DeliveryState.SENDING,
            attempts=Delivery.attempts + 1,
            next_attempt_at=now + timedelta(seconds=lease_seconds),
        )
        .returning(Delivery),
        execution_options={"populate_existing": True},
    ).one_or_none()
    if delivery is not None and candidate.state == DeliveryState.SENDING:
        log.warning("delivery_lease_expired", delivery_id=delivery.id, destination=destination)
    return delivery


def _locked_sending(session: Session, delivery: Delivery) -> Delivery:
    """Re-read ``delivery`` with a row lock and check that this sender's claim still stands."""
    if not isinstance(delivery, Delivery):
        raise TypeError(f"delivery must be a Delivery, got {type(delivery).__name__}")
    attempts = delivery.attempts
    current = session.get(Delivery, delivery.id, with_for_update=True, populate_existing=True)
    if current is None or current.state != DeliveryState.SENDING or current.attempts != attempts:
        raise LeaseLostError(
            f"delivery {delivery.id} is no longer held by this sender (attempt {attempts}); "
            "its lease expired and it was taken over or changed"
        )
    return current


def _check_status(status: int | None) -> None:
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise TypeError(f"status must be an int or None, got {type(status).__name__}")


def mark_sent(
    session: Session,
    delivery: Delivery,
    *,
    status: int | None = 0,
    detail: str | None = None,
    now: datetime | None = None,
) -> Delivery:
    """Record that the destination accepted the object.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    delivery: Delivery
        The delivery as claimed by this sender.
    status: int | None
        The C-STORE response status (a warning status is kept as such).
    detail: str | None
        The destination's comment or warning, if any.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Raises
    ------
    LeaseLostError
        If this sender no longer holds the delivery.
    """
    _check_status(status)
    now = resolve_now(now)
    current = _locked_sending(session, delivery)
    current.state = DeliveryState.SENT
    current.sent_at = now
    current.next_attempt_at = None
    current.last_status = status
    current.last_error = detail[:MAX_ERROR_LENGTH] if detail else None
    _record(
        session,
        EventKind.DELIVERY_SENT,
        f"sent to {current.destination}",
        current,
        status=status,
        detail=detail,
    )
    return current


def _note_unconfirmed(delivery: Delivery, unconfirmed: bool, now: datetime) -> None:
    if not isinstance(unconfirmed, bool):
        raise TypeError(f"unconfirmed must be a bool, got {type(unconfirmed).__name__}")
    if unconfirmed and delivery.unconfirmed_at is None:
        delivery.unconfirmed_at = now


def mark_retry(
    session: Session,
    delivery: Delivery,
    *,
    retry_at: datetime,
    status: int | None,
    error: str,
    unconfirmed: bool = False,
    now: datetime | None = None,
) -> Delivery:
    """Record a try that did not deliver for sure; the delivery is due again at ``retry_at``.

    It waits as ``unconfirmed`` once any try has lost its answer after sending the whole object
    (this one, with ``unconfirmed``, or an earlier one), else as ``failed``.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    delivery: Delivery
        The delivery as claimed by this sender.
    retry_at: datetime.datetime
        When to try again (aware).
    status: int | None
        The destination's DIMSE status, if it answered with one.
    error: str
        What went wrong, in the destination's words where it gave any.
    unconfirmed: bool
        This try sent the whole object and lost the answer.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Raises
    ------
    LeaseLostError
        If this sender no longer holds the delivery.
    """
    _check_status(status)
    retry_at = resolve_now(retry_at)
    now = resolve_now(now)
    if not isinstance(error, str) or not error:
        raise ValueError("error must be a non-empty str")
    current = _locked_sending(session, delivery)
    _note_unconfirmed(current, unconfirmed, now)
    may_have_arrived = current.unconfirmed_at is not None
    current.state = DeliveryState.UNCONFIRMED if may_have_arrived else DeliveryState.FAILED
    current.next_attempt_at = retry_at
    current.last_status = status
    current.last_error = error[:MAX_ERROR_LENGTH]
    _record(
        session,
        EventKind.DELIVERY_UNCONFIRMED if unconfirmed else EventKind.DELIVERY_RETRY,
        f"attempt {current.attempts} to {current.destination} "
        f"{'lost its answer' if unconfirmed else 'failed'}: {error}; next at "
        f"{retry_at.isoformat(timespec='seconds')}",
        current,
        status=status,
        error=error,
        retry_at=retry_at,
        may_have_arrived=may_have_arrived,
    )
    return current


def mark_dead(
    session: Session,
    delivery: Delivery,
    *,
    status: int | None,
    error: str,
    unconfirmed: bool = False,
    now: datetime | None = None,
) -> Delivery:
    """Give the delivery up: a permanent failure, or the last allowed attempt did not deliver.

    It ends ``dead``, or ``maybe_sent`` when any try (this one, with ``unconfirmed``, or an earlier
    one) lost its answer after sending the whole object: then the destination may hold the object,
    and a refusal now may be its way of refusing a duplicate.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    delivery: Delivery
        The delivery as claimed by this sender.
    status: int | None
        The destination's DIMSE status, if it answered with one.
    error: str
        Why it was given up, in the destination's words where it gave any.
    unconfirmed: bool
        This try sent the whole object and lost the answer.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Raises
    ------
    LeaseLostError
        If this sender no longer holds the delivery.
    """
    _check_status(status)
    now = resolve_now(now)
    if not isinstance(error, str) or not error:
        raise ValueError("error must be a non-empty str")
    current = _locked_sending(session, delivery)
    _note_unconfirmed(current, unconfirmed, now)
    current.next_attempt_at = None
    current.last_status = status
    current.last_error = error[:MAX_ERROR_LENGTH]
    if current.unconfirmed_at is None:
        current.state = DeliveryState.DEAD
        kind, message = EventKind.DELIVERY_DEAD, "dead-lettered"
    else:
        current.state = DeliveryState.MAYBE_SENT
        kind = EventKind.DELIVERY_MAYBE_SENT
        message = (
            "given up unconfirmed (a try lost its answer after sending the whole object at "
            f"{current.unconfirmed_at.isoformat(timespec='seconds')}; the destination may have it)"
        )
    _record(
        session,
        kind,
        f"{message} after attempt {current.attempts} to {current.destination}: {error}",
        current,
        status=status,
        error=error,
    )
    return current


def requeue_delivery(session: Session, delivery_id: int, now: datetime | None = None) -> Delivery:
    """Send a given-up (or waiting) delivery again now, with a fresh budget of attempts.

    The object keeps its UIDs, so a destination that holds it already (``maybe_sent``) recognises it.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    delivery_id: int
        The delivery's id (``osteonode deliveries list``).
    now: datetime.datetime | None
        Current time (aware); now by default.

    Returns
    -------
    Delivery
        The delivery, ``pending`` and due now.

    Raises
    ------
    LookupError
        If there is no such delivery.
    DeliveryStateError
        If it is sent, pending or being sent.
    """
    if isinstance(delivery_id, bool) or not isinstance(delivery_id, int):
        raise TypeError(f"delivery_id must be an int, got {type(delivery_id).__name__}")
    now = resolve_now(now)
    delivery = session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)
    if delivery is None:
        raise LookupError(f"no delivery with id {delivery_id}")
    if delivery.state not in REQUEUEABLE_STATES:
        raise DeliveryStateError(
            f"delivery {delivery_id} is {delivery.state}; only given-up (dead, maybe_sent) or "
            "waiting (failed, unconfirmed) deliveries can be retried"
        )
    previous = delivery.state
    previous_attempts = delivery.attempts
    delivery.state = DeliveryState.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    wake_after_commit(session, Channel.DELIVERIES)
    _record(
        session,
        EventKind.DELIVERY_REQUEUED,
        f"{previous} delivery to {delivery.destination} queued again by an operator",
        delivery,
        previous_state=previous,
        previous_attempts=previous_attempts,
    )
    return delivery


def requeue_dead_deliveries(session: Session, now: datetime | None = None) -> list[Delivery]:
    """:func:`requeue_delivery` for every dead (and every given-up ``maybe_sent``) delivery."""
    now = resolve_now(now)
    ids = session.scalars(
        select(Delivery.id)
        .where(Delivery.state.in_([DeliveryState.DEAD, DeliveryState.MAYBE_SENT]))
        .order_by(Delivery.id)
    ).all()
    return [requeue_delivery(session, delivery_id, now) for delivery_id in ids]


@dataclass(frozen=True, slots=True)
class DeliveryPurgeReport:
    """What :func:`purge_sent_deliveries` removed."""

    deliveries: int
    deleted_files: int
    freed_bytes: int


def purge_sent_deliveries(
    session: Session, spool: Spool, older_than: timedelta, now: datetime | None = None
) -> DeliveryPurgeReport:
    """Remove deliveries sent before ``now - older_than``, and their files once nothing needs them.

    The rows go (their ``delivery_sent`` and ``delivery_purged`` events stay, so an image's story
    is still told); a result file is deleted only when no remaining delivery refers to it, so a dead
    delivery to another destination can still be retried.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    spool: Spool
        The spool holding the result files.
    older_than: datetime.timedelta
        How long a sent delivery is kept.
    now: datetime.datetime | None
        Current time (aware); now by default.
    """
    if not isinstance(spool, Spool):
        raise TypeError(f"spool must be a Spool, got {type(spool).__name__}")
    if not isinstance(older_than, timedelta):
        raise TypeError(f"older_than must be a timedelta, got {type(older_than).__name__}")
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    now = resolve_now(now)
    old = session.scalars(
        select(Delivery)
        .where(Delivery.state == DeliveryState.SENT, Delivery.sent_at < now - older_than)
        .order_by(Delivery.id)
        .with_for_update(skip_locked=True)
    ).all()
    if not old:
        return DeliveryPurgeReport(0, 0, 0)
    for delivery in old:
        _record(
            session,
            EventKind.DELIVERY_PURGED,
            f"sent delivery to {delivery.destination} removed after {older_than}",
            delivery,
        )
    ids = [delivery.id for delivery in old]
    paths = sorted({delivery.spool_path for delivery in old})
    session.execute(
        delete(Delivery).where(Delivery.id.in_(ids)).execution_options(synchronize_session=False)
    )
    for delivery in old:
        session.expunge(delivery)
    still_needed = set(
        session.scalars(select(Delivery.spool_path).where(Delivery.spool_path.in_(paths))).all()
    )
    deleted_files = freed_bytes = 0
    for relative in paths:
        if relative in still_needed:
            continue
        path = spool.path(relative)
        size = path.stat().st_size if path.exists() else 0
        if spool.delete(relative):
            deleted_files += 1
            freed_bytes += size
    report = DeliveryPurgeReport(len(ids), deleted_files, freed_bytes)
    log.info(
        "deliveries_purged",
        deliveries=report.deliveries,
        deleted_files=deleted_files,
        freed_bytes=freed_bytes,
    )
    return report


@dataclass(frozen=True, slots=True)
class DeliveryListing(_Record):
    """One delivery as ``osteonode deliveries list`` shows it (no patient identity)."""

    id: int
    destination: str
    state: str
    attempts: int
    object_uid: str
    object_class_uid: str
    source_uid: str
    pipeline: str
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    unconfirmed_at: datetime | None


def list_deliveries(
    session: Session,
    *,
    states: Collection[DeliveryState | str] | None = None,
    limit: int | None = None,
) -> list[DeliveryListing]:
    """Deliveries, oldest first, optionally only those in ``states``.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    states: Collection[DeliveryState | str] | None
        Only these states; all when None.
    limit: int | None
        At most this many (the newest are left out).
    """
    query = (
        select(Delivery, Result.pipeline, Instance.sop_instance_uid)
        .join(Result, Delivery.result_id == Result.id)
        .join(Instance, Result.instance_id == Instance.id)
        .order_by(Delivery.id)
    )
    if states is not None:
        query = query.where(Delivery.state.in_([DeliveryState(state) for state in states]))
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        query = query.limit(limit)
    return [
        DeliveryListing(
            id=delivery.id,
            destination=delivery.destination,
            state=str(delivery.state),
            attempts=delivery.attempts,
            object_uid=delivery.sop_instance_uid,
            object_class_uid=delivery.sop_class_uid,
            source_uid=source_uid,
            pipeline=pipeline,
            next_attempt_at=delivery.next_attempt_at,
            last_status=delivery.last_status,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            sent_at=delivery.sent_at,
            unconfirmed_at=delivery.unconfirmed_at,
        )
        for delivery, pipeline, source_uid in session.execute(query)
    ]


def undelivered_by_destination(session: Session) -> dict[str, int]:
    """How many deliveries to each destination are not yet sent or dead-lettered."""
    rows = session.execute(
        select(Delivery.destination, func.count())
        .where(Delivery.state.not_in(sorted(FINISHED_DELIVERY_STATES)))
        .group_by(Delivery.destination)
    )
    return {destination: count for destination, count in rows}
