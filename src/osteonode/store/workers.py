"""Worker heartbeats: each process's supervisor writes what its workers do; anyone reads it back.

One row per worker (``host:pid:worker-N``). A process that dies stops writing; a reader decides from
the age of the last heartbeat that its workers are ``gone``, which is how ``osteonode status`` (and
a health endpoint) sees a dead node process from outside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from osteonode.store.checks import check_aware, check_text, resolve_now
from osteonode.store.tables import WorkerHeartbeat, WorkerState

__all__ = [
    "WorkerHealth",
    "forget_workers",
    "last_report",
    "record_heartbeat",
    "silent_after",
    "worker_health",
]

#: Missed heartbeats after which a worker's process counts as gone.
MISSED_HEARTBEATS = 3

#: States after which a worker sends no more heartbeats on purpose.
_FINAL_STATES = frozenset({WorkerState.STOPPED})
#: States a caller may record; ``gone`` is only ever decided when reading.
_RECORDED_STATES = frozenset(WorkerState) - {WorkerState.GONE}


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """What one worker was last reported doing.

    Attributes
    ----------
    worker_id
        ``host:pid:worker-N``.
    host, pid
        Where it runs.
    state
        As reported, or ``gone`` when its process stopped sending heartbeats.
    job_id
        The job it works on, if any.
    state_since
        When it entered ``state`` (for ``gone``: its last heartbeat).
    started_at
        When its process started it.
    seen_at
        Its last heartbeat.
    restarts
        How often supervision restarted its thread.
    last_error
        What ended its thread the last time it died.
    """

    worker_id: str
    host: str
    pid: int
    state: WorkerState
    job_id: int | None
    state_since: datetime
    started_at: datetime
    seen_at: datetime
    restarts: int
    last_error: str | None

    @property
    def healthy(self) -> bool:
        """Idle, busy or starting: able to take work."""
        return self.state in (WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 text, the state as its value."""
        plain = dataclasses.asdict(self)
        plain["state"] = self.state.value
        for key in ("state_since", "started_at", "seen_at"):
            plain[key] = plain[key].isoformat()
        plain["healthy"] = self.healthy
        return plain


def silent_after(heartbeat_interval_s: float) -> timedelta:
    """How long without a heartbeat before a worker's process counts as gone."""
    if isinstance(heartbeat_interval_s, bool) or not heartbeat_interval_s > 0:
        raise ValueError(f"heartbeat_interval_s must be positive, got {heartbeat_interval_s!r}")
    return timedelta(seconds=MISSED_HEARTBEATS * heartbeat_interval_s)


def record_heartbeat(
    session: Session,
    *,
    worker_id: str,
    host: str,
    pid: int,
    state: WorkerState,
    job_id: int | None,
    state_since: datetime,
    started_at: datetime,
    restarts: int,
    last_error: str | None,
    now: datetime | None = None,
) -> None:
    """Insert or update the heartbeat of one worker.

    Raises
    ------
    ValueError
        If ``state`` is ``gone`` (readers decide that) or a value is out of range.
    """
    check_text("worker_id", worker_id, 128)
    check_text("host", host, 255)
    state = WorkerState(state)
    if state not in _RECORDED_STATES:
        raise ValueError(f"state {state.value!r} is decided by readers and never recorded")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ValueError(f"restarts must be a non-negative int, got {restarts!r}")
    check_aware("state_since", state_since)
    check_aware("started_at", started_at)
    now = resolve_now(now)
    row = session.get(WorkerHeartbeat, worker_id)
    if row is None:
        row = WorkerHeartbeat(worker_id=worker_id)
        session.add(row)
    row.host, row.pid, row.state, row.job_id = host, pid, state, job_id
    row.state_since, row.started_at, row.seen_at = state_since, started_at, now
    row.restarts, row.last_error = restarts, last_error
    session.flush()


def worker_health(
    session: Session,
    *,
    silent_after: timedelta,
    seen_within: timedelta = timedelta(days=1),
    now: datetime | None = None,
) -> list[WorkerHealth]:
    """The workers seen lately, with the ones whose process went silent marked ``gone``.

    Parameters
    ----------
    session
        Open session.
    silent_after
        A worker not stopped on purpose whose last heartbeat is older than this is ``gone``
        (a few heartbeat intervals).
    seen_within
        Workers last seen longer ago than this are left out.
    now
        Current time (aware); now by default.

    Returns
    -------
    list of WorkerHealth
        Ordered by worker id.
    """
    if not isinstance(silent_after, timedelta) or silent_after <= timedelta(0):
        raise ValueError(f"silent_after must be a positive timedelta, got {silent_after!r}")
    now = resolve_now(now)
    rows = session.scalars(
        select(WorkerHeartbeat)
        .where(WorkerHeartbeat.seen_at >= now - seen_within)
        .order_by(WorkerHeartbeat.worker_id)
    ).all()
    health = []
    for row in rows:
        state, since = row.state, row.state_since
        if state not in _FINAL_STATES and row.seen_at < now - silent_after:
            state, since = WorkerState.GONE, row.seen_at
        health.append(
            WorkerHealth(
                worker_id=row.worker_id,
                host=row.host,
                pid=row.pid,
                state=state,
                job_id=row.job_id,
                state_since=since,
                started_at=row.started_at,
                seen_at=row.seen_at,
                restarts=row.restarts,
                last_error=row.last_error,
            )
        )
    return health


def forget_workers(session: Session, seen_before: datetime) -> int:
    """Delete the heartbeats of workers last seen before ``seen_before``; returns how many."""
    check_aware("seen_before", seen_before)
    result = session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < seen_before))
    return int(result.rowcount or 0)


def last_report(session: Session, worker_id: str | None) -> str:
    """What a lease owner last reported, as a phrase for the reason of a job whose lease expired.

    Parameters
    ----------
    session
        Open session.
    worker_id
        The job's lease owner.

    Returns
    -------
    str
        E.g. ``its worker last reported busy on job 5 at 2026-12-06 13:05:01 UTC``, with what ended
        its thread when it died; says so when the owner never sent a heartbeat.
    """
    row = session.get(WorkerHeartbeat, worker_id) if worker_id else None
    if row is None:
        return "its worker sent no heartbeat (its process ended or runs an older version)"
    doing = f"{row.state.value} on job {row.job_id}" if row.job_id is not None else row.state.value
    phrase = f"its worker last reported {doing} at {row.seen_at:%Y-%m-%d %H:%M:%S} UTC"
    if row.state is WorkerState.DEAD and row.last_error:
        phrase += f" (its thread ended: {row.last_error})"
    return phrase
