"""SQLAlchemy 2 ORM models of the node's database and the coded values of their states.

No table holds patient identity (names, IDs, birth dates): the DICOM file in the spool does, and
it is read only when an image is processed. Rows hold UIDs, states, times and reasons, so that
every decision about an image can be told without opening the file.

Coded states are :class:`enum.StrEnum` members stored as plain strings (``VARCHAR``) rather than
database enum types, so a later issue can add a member without a schema migration.

All times are timezone-aware UTC :class:`datetime.datetime` values (see :class:`UTCDateTime`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "FINISHED_DELIVERY_STATES",
    "FINISHED_JOB_STATES",
    "UID_LENGTH",
    "Base",
    "Delivery",
    "DeliveryState",
    "Event",
    "EventKind",
    "Instance",
    "Job",
    "JobState",
    "Result",
    "StrEnumType",
    "UTCDateTime",
    "WorkerHeartbeat",
    "WorkerState",
    "utc_now",
]

#: Maximum length of a DICOM UID (PS3.5 section 9).
UID_LENGTH = 64
#: Maximum length of an application entity title (PS3.5 table 6.2-1, AE value representation).
AE_TITLE_LENGTH = 16


class JobState(enum.StrEnum):
    """Life cycle of the processing job of one received instance."""

    PENDING = "pending"
    """Received, not yet routed."""
    QUEUED = "queued"
    """Routed to a pipeline that must still run it."""
    RUNNING = "running"
    """Claimed by a worker that holds a lease on it."""
    DONE = "done"
    """The pipeline ran to completion."""
    SKIPPED = "skipped"
    """Routing decided the image is not for any pipeline; the reason is kept on the job."""
    FAILED = "failed"
    """Every allowed attempt failed; the last error is kept on the job."""


#: Job states after which nothing more happens to a job.
FINISHED_JOB_STATES: frozenset[JobState] = frozenset(
    {JobState.DONE, JobState.SKIPPED, JobState.FAILED}
)


class DeliveryState(enum.StrEnum):
    """Life cycle of sending one result object to one destination."""

    PENDING = "pending"
    """Not yet tried (or given back by an operator's retry)."""
    SENDING = "sending"
    """Claimed by a sender; ``next_attempt_at`` is when its lease expires and it is due again."""
    FAILED = "failed"
    """The last try failed; another is due at ``next_attempt_at``."""
    UNCONFIRMED = "unconfirmed"
    """A try sent the whole object but its answer was lost (``unconfirmed_at``): the destination
    may have it. Another try, with the same UIDs so that the destination can recognise the
    object, is due at ``next_attempt_at``."""
    SENT = "sent"
    """The destination accepted the object."""
    DEAD = "dead"
    """Given up (permanent failure or too many tries), and no try can have delivered it."""
    MAYBE_SENT = "maybe_sent"
    """Given up without a confirmation, after a try that sent the whole object lost its answer:
    the destination may have stored it; look there before sending it again."""


#: Delivery states after which nothing more is sent.
FINISHED_DELIVERY_STATES: frozenset[DeliveryState] = frozenset(
    {DeliveryState.SENT, DeliveryState.DEAD, DeliveryState.MAYBE_SENT}
)


class WorkerState(enum.StrEnum):
    """What an analysis worker is doing, as supervision and ``osteonode status`` report it."""

    STARTING = "starting"
    IDLE = "idle"
    """Waiting for a job."""
    BUSY = "busy"
    """Working on a job."""
    STUCK = "stuck"
    """On one job (or in one wait) longer than ``workers.stuck_after_s``."""
    DEAD = "dead"
    """Its thread ended on an error; supervision starts a new one."""
    STOPPED = "stopped"
    """Stopped at shutdown."""
    GONE = "gone"
    """Its process stopped sending heartbeats (killed, host down); decided when read."""


class EventKind(enum.StrEnum):
    """Kinds of decisions and happenings recorded as :class:`Event` rows."""

    RECEIVED = "received"
    DUPLICATE_RECEIVED = "duplicate_received"
    REFUSED = "refused"
    ROUTED = "routed"
    SKIPPED = "skipped"
    JOB_CLAIMED = "job_claimed"
    JOB_RELEASED = "job_released"
    JOB_ATTEMPT_FAILED = "job_attempt_failed"
    JOB_FAILED = "job_failed"
    JOB_DONE = "job_done"
    LEASE_EXPIRED = "lease_expired"
    RESULT_STORED = "result_stored"
    DELIVERY_QUEUED = "delivery_queued"
    DELIVERY_SENT = "delivery_sent"
    DELIVERY_RETRY = "delivery_retry"
    DELIVERY_UNCONFIRMED = "delivery_unconfirmed"
    DELIVERY_DEAD = "delivery_dead"
    DELIVERY_MAYBE_SENT = "delivery_maybe_sent"
    DELIVERY_REQUEUED = "delivery_requeued"
    DELIVERY_PURGED = "delivery_purged"
    PURGED = "purged"


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime(timezone=True)`` column that only accepts and returns aware UTC datetimes.

    SQLite keeps no time zone, so values are normalised to UTC before they are written (which also
    keeps SQLite's text timestamps comparable) and marked as UTC when read back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given: use an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StrEnumType(TypeDecorator[enum.StrEnum]):
    """A ``VARCHAR`` column holding the value of one :class:`enum.StrEnum` class.

    Parameters
    ----------
    enum_class: type[enum.StrEnum]
        The enumeration whose values the column holds; other strings are refused on write.
    length: int
        Length of the ``VARCHAR``.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[enum.StrEnum], length: int = 32) -> None:
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> enum.StrEnum | None:
        if value is None:
            return None
        return self.enum_class(value)


# Named constraints keep migrations reproducible across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of all osteonode tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Instance(Base):
    """One received SOP instance, stored once however often it is sent."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    study_instance_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH))
    modality: Mapped[str | None] = mapped_column(String(16))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    spool_path: Mapped[str] = mapped_column(String(512))
    """Path of the stored file, relative to the spool root."""
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str] = mapped_column(String(AE_TITLE_LENGTH))
    calling_host: Mapped[str | None] = mapped_column(String(255))
    called_ae: Mapped[str] = mapped_column(String(AE_TITLE_LENGTH))
    received_at: Mapped[datetime]
    last_received_at: Mapped[datetime]
    receipt_count: Mapped[int] = mapped_column(Integer, default=1)
    purged_at: Mapped[datetime | None]

    jobs: Mapped[list[Job]] = relationship(back_populates="instance", order_by="Job.id")

    def __repr__(self) -> str:
        return f"Instance(id={self.id!r}, sop_instance_uid={self.sop_instance_uid!r})"


class Job(Base):
    """The processing job of one instance: routing, then the pipeline it was routed to."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_id", "state", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    state: Mapped[JobState] = mapped_column(StrEnumType(JobState, 16))
    pipeline: Mapped[str | None] = mapped_column(String(64))
    route_rule: Mapped[str | None] = mapped_column(String(128))
    skip_reason: Mapped[str | None] = mapped_column(String(64))
    skip_detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Claims since the job was created or last routed (a routed job starts its run afresh)."""
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    instance: Mapped[Instance] = relationship(back_populates="jobs")

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, state={self.state!r}, attempts={self.attempts!r})"


class Event(Base):
    """One decision or happening, for ``osteonode status``; never holds patient identity."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_instance_id_id", "instance_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH), index=True)
    """Kept also where no instance row exists (e.g. a refused C-STORE)."""
    at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[EventKind] = mapped_column(StrEnumType(EventKind, 32))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, kind={self.kind!r}, instance_id={self.instance_id!r})"


class Result(Base):
    """The plain-data outcome of a pipeline run on one instance."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"), index=True)
    pipeline: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="result", order_by="Delivery.id"
    )


class Delivery(Base):
    """Sending one result object (a file in the spool) to one destination."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    spool_path: Mapped[str] = mapped_column(String(512))
    state: Mapped[DeliveryState] = mapped_column(StrEnumType(DeliveryState, 16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    """DIMSE status of the last try, if the peer answered."""
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    unconfirmed_at: Mapped[datetime | None]
    """When a try first sent the whole object without getting an answer (it may be there since)."""

    result: Mapped[Result] = relationship(back_populates="deliveries")


class WorkerHeartbeat(Base):
    """The last reported state of one analysis worker, written by its process's supervisor."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The lease owner name, ``host:pid:worker-N``."""
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[WorkerState] = mapped_column(StrEnumType(WorkerState, 16))
    job_id: Mapped[int | None] = mapped_column(Integer)
    """The job it works on (no foreign key: a heartbeat must never fail on a purged job)."""
    state_since: Mapped[datetime]
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime] = mapped_column(index=True)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"WorkerHeartbeat(worker_id={self.worker_id!r}, state={self.state!r})"
