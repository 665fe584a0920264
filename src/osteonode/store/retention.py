"""Spool retention: delete old files, never one whose work is unfinished.

An instance's file (and the files of its result objects) may go once the instance was last
received longer ago than the retention period, every job of it is finished (done, skipped or
failed) and every delivery of its results is finished (sent or dead). The rows stay, marked ``purged_at``, so
``osteonode status`` can still tell the image's story.

Files are deleted before the row is marked: a crash in between leaves a row that the next purge
handles again (deleting a missing file is not an error), never a file that no row points to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session

from osteonode.store.queue import record_event
from osteonode.store.spool import Spool
from osteonode.store.tables import (
    FINISHED_DELIVERY_STATES,
    FINISHED_JOB_STATES,
    Delivery,
    EventKind,
    Instance,
    Job,
    Result,
    utc_now,
)

__all__ = ["PurgeReport", "purge_spool"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one purge did.

    Attributes
    ----------
    purged_instances: int
        Instances whose files were removed and that are now marked purged.
    deleted_files: int
        Files actually deleted (instance files and result files).
    freed_bytes: int
        Bytes those files held.
    kept_unfinished: int
        Instances old enough to purge but kept because a job or delivery is unfinished.
    """

    purged_instances: int
    deleted_files: int
    freed_bytes: int
    kept_unfinished: int


def _unfinished_work() -> ColumnElement[bool]:
    """SQL condition: the instance has a job or a delivery that is not finished."""
    open_job = exists().where(
        Job.instance_id == Instance.id, Job.state.not_in(sorted(FINISHED_JOB_STATES))
    )
    open_delivery = exists().where(
        Delivery.result_id == Result.id,
        Result.instance_id == Instance.id,
        Delivery.state.not_in(sorted(FINISHED_DELIVERY_STATES)),
    )
    return open_job | open_delivery


def purge_spool(
    session: Session,
    spool: Spool,
    older_than: timedelta,
    now: datetime | None = None,
) -> PurgeReport:
    """Delete the spool files of finished instances last received before ``now - older_than``.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session; the purge marks are committed with it.
    spool: Spool
        The spool holding the files.
    older_than: datetime.timedelta
        Retention period; zero purges every finished instance.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Returns
    -------
    PurgeReport
        Counts of what was purged and what was kept.

    Raises
    ------
    ValueError
        If ``older_than`` is negative or ``now`` is naive.
    """
    if not isinstance(spool, Spool):
        raise TypeError(f"spool must be a Spool, got {type(spool).__name__}")
    if not isinstance(older_than, timedelta):
        raise TypeError(f"older_than must be a timedelta, got {type(older_than).__name__}")
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, got {older_than}")
    if now is None:
        now = utc_now()
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")
    cutoff = now - older_than
    old = and_(Instance.purged_at.is_(None), Instance.last_received_at < cutoff)
    unfinished = _unfinished_work()
    kept_unfinished = session.scalar(
        select(func.count()).select_from(Instance).where(old, unfinished)
    )
    candidates = session.scalars(
        select(Instance)
        .where(old, ~unfinished)
        .order_by(Instance.id)
        .with_for_update(skip_locked=True, of=Instance)
    ).all()
    deleted_files = 0
    freed_bytes = 0
    for instance in candidates:
        result_paths = session.scalars(
            select(Delivery.spool_path)
            .join(Result, Delivery.result_id == Result.id)
            .where(Result.instance_id == instance.id)
            .distinct()
        ).all()
        instance_deleted = 0
        instance_freed = 0
        for relative in [instance.spool_path, *result_paths]:
            path = spool.path(relative)
            size = path.stat().st_size if path.exists() else 0
            if spool.delete(relative):
                instance_deleted += 1
                instance_freed += size
        instance.purged_at = now
        record_event(
            session,
            EventKind.PURGED,
            f"spool files removed after retention of {older_than}",
            instance=instance,
            deleted_files=instance_deleted,
            freed_bytes=instance_freed,
        )
        deleted_files += instance_deleted
        freed_bytes += instance_freed
    report = PurgeReport(
        purged_instances=len(candidates),
        deleted_files=deleted_files,
        freed_bytes=freed_bytes,
        kept_unfinished=kept_unfinished or 0,
    )
    log.info(
        "spool_purged",
        purged_instances=report.purged_instances,
        deleted_files=report.deleted_files,
        freed_bytes=report.freed_bytes,
        kept_unfinished=report.kept_unfinished,
    )
    return report
