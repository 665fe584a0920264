"""Read-only views of the node's record for ``osteonode status``: counts and one image's story.

The functions return plain frozen dataclasses (no ORM objects), so the CLI can print them after the
session is closed and dump them as JSON with :meth:`to_dict`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from osteonode.store.tables import Delivery, DeliveryState, Event, Instance, Job, JobState, Result

__all__ = [
    "DeliveryRecord",
    "EventRecord",
    "InstanceHistory",
    "InstanceRecord",
    "JobRecord",
    "ResultRecord",
    "counts_by_state",
    "delivery_counts_by_state",
    "instance_history",
    "latest_events",
]


def _json_ready(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


class _Record:
    """Mixin giving the record dataclasses a JSON-ready ``to_dict``."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a dict of JSON-serialisable values (times as ISO 8601 text)."""
        return _json_ready(dataclasses.asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class EventRecord(_Record):
    """One recorded event."""

    id: int
    at: datetime
    kind: str
    message: str
    sop_instance_uid: str | None
    instance_id: int | None
    job_id: int | None
    details: dict[str, Any]

    @classmethod
    def from_row(cls, event: Event) -> EventRecord:
        """Copy an :class:`Event` row."""
        return cls(
            id=event.id,
            at=event.at,
            kind=str(event.kind),
            message=event.message,
            sop_instance_uid=event.sop_instance_uid,
            instance_id=event.instance_id,
            job_id=event.job_id,
            details=dict(event.details or {}),
        )


@dataclass(frozen=True, slots=True)
class InstanceRecord(_Record):
    """What the node keeps about a received instance (no patient identity)."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    modality: str | None
    transfer_syntax_uid: str
    spool_path: str
    size_bytes: int
    calling_ae: str
    calling_host: str | None
    called_ae: str
    received_at: datetime
    last_received_at: datetime
    receipt_count: int
    purged_at: datetime | None

    @classmethod
    def from_row(cls, instance: Instance) -> InstanceRecord:
        """Copy an :class:`Instance` row."""
        return cls(**{name.name: getattr(instance, name.name) for name in dataclasses.fields(cls)})


@dataclass(frozen=True, slots=True)
class JobRecord(_Record):
    """State of one job."""

    id: int
    state: str
    pipeline: str | None
    route_rule: str | None
    skip_reason: str | None
    skip_detail: str | None
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, job: Job) -> JobRecord:
        """Copy a :class:`Job` row."""
        values = {field.name: getattr(job, field.name) for field in dataclasses.fields(cls)}
        values["state"] = str(job.state)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class DeliveryRecord(_Record):
    """State of one delivery of a result object."""

    id: int
    result_id: int
    destination: str
    sop_instance_uid: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    sent_at: datetime | None

    @classmethod
    def from_row(cls, delivery: Delivery) -> DeliveryRecord:
        """Copy a :class:`Delivery` row."""
        values = {field.name: getattr(delivery, field.name) for field in dataclasses.fields(cls)}
        values["state"] = str(delivery.state)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ResultRecord(_Record):
    """The answer a pipeline gave for one image (the full payload stays in the results table)."""

    id: int
    job_id: int
    pipeline: str
    model_name: str | None
    model_version: str | None
    evaluable: bool | None
    category: str | None
    t_score: float | None
    reason: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, result: Result) -> ResultRecord:
        """Copy a :class:`Result` row, with the headline of its payload."""
        payload = result.payload or {}
        return cls(
            id=result.id,
            job_id=result.job_id,
            pipeline=result.pipeline,
            model_name=result.model_name,
            model_version=result.model_version,
            evaluable=payload.get("evaluable"),
            category=payload.get("category"),
            t_score=payload.get("t_score"),
            reason=payload.get("reason"),
            created_at=result.created_at,
        )


@dataclass(frozen=True, slots=True)
class InstanceHistory(_Record):
    """Everything the node recorded about one SOP Instance UID, events oldest first.

    ``instance`` is None for a UID that was only ever refused.
    """

    sop_instance_uid: str
    instance: InstanceRecord | None
    jobs: list[JobRecord]
    results: list[ResultRecord]
    deliveries: list[DeliveryRecord]
    events: list[EventRecord]


def counts_by_state(session: Session) -> dict[str, int]:
    """Return the number of jobs in each state (every state listed, zero included)."""
    counts = {state.value: 0 for state in JobState}
    for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        counts[str(state)] = count
    return counts


def delivery_counts_by_state(session: Session) -> dict[str, int]:
    """Return the number of deliveries in each state (every state listed, zero included)."""
    counts = {state.value: 0 for state in DeliveryState}
    rows = session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
    for state, count in rows:
        counts[str(state)] = count
    return counts


def latest_events(session: Session, limit: int = 20) -> list[EventRecord]:
    """Return the newest events, newest first.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    limit: int
        Most events to return.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    events = session.scalars(select(Event).order_by(Event.id.desc()).limit(limit))
    return [EventRecord.from_row(event) for event in events]


def instance_history(session: Session, sop_instance_uid: str) -> InstanceHistory | None:
    """Return what happened to the image with this SOP Instance UID, or None if nothing is known.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session.
    sop_instance_uid: str
        The image's SOP Instance UID.
    """
    if not isinstance(sop_instance_uid, str) or not sop_instance_uid:
        raise ValueError(f"sop_instance_uid must be a non-empty str, got {sop_instance_uid!r}")
    instance = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
    ).one_or_none()
    events = session.scalars(
        select(Event).where(Event.sop_instance_uid == sop_instance_uid).order_by(Event.id)
    ).all()
    if instance is None and not events:
        return None
    jobs: list[Job] = []
    results: list[Result] = []
    deliveries: list[Delivery] = []
    if instance is not None:
        results = list(
            session.scalars(select(Result).where(Result.instance_id == instance.id).order_by(Result.id))
        )
        jobs = list(
            session.scalars(select(Job).where(Job.instance_id == instance.id).order_by(Job.id))
        )
        deliveries = list(
            session.scalars(
                select(Delivery)
                .join(Result, Delivery.result_id == Result.id)
                .where(Result.instance_id == instance.id)
                .order_by(Delivery.id)
            )
        )
    return InstanceHistory(
        sop_instance_uid=sop_instance_uid,
        instance=InstanceRecord.from_row(instance) if instance is not None else None,
        jobs=[JobRecord.from_row(job) for job in jobs],
        results=[ResultRecord.from_row(result) for result in results],
        deliveries=[DeliveryRecord.from_row(delivery) for delivery in deliveries],
        events=[EventRecord.from_row(event) for event in events],
    )
