"""Spool retention: delete old files, never one whose work is unfinished.

An instance's file (and the files of its result objects) may go once the instance was last
received longer ago than the retention period, every job of it is finished (done, skipped or
failed) and every delivery of its results is finished (sent or dead). The rows stay, marked ``purged_at``, so
``osteonode status`` can still tell the image's story.

Files are deleted before the row is marked: a crash in between leaves a row that the next purge
handles again (deleting a missing file is not an error), never a file that no row points to.

The other way round, a crash between publishing a file and committing its row leaves a file that no
row points to: a received image whose C-STORE was never acknowledged (the sender sends it again) or
a result object whose delivery was never queued (the job runs again). :func:`remove_orphan_files`
deletes such files once they are older than a grace period far longer than any write-to-commit gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session

from osteonode.store.checks import check_period, resolve_now
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
)

__all__ = ["ORPHAN_GRACE", "PurgeReport", "purge_spool", "remove_orphan_files"]

log = structlog.get_logger(__name__)

#: Age after which a spool file that no database row references counts as orphaned. A file is
#: published milliseconds before its row is committed; an hour leaves room for any slow commit.
ORPHAN_GRACE = timedelta(hours=1)


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


def _check_spool(spool: object) -> None:
    if not isinstance(spool, Spool):
        raise TypeError(f"spool must be a Spool, got {type(spool).__name__}")


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
    _check_spool(spool)
    check_period("older_than", older_than)
    now = resolve_now(now)
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


def remove_orphan_files(
    session: Session,
    spool: Spool,
    grace: timedelta = ORPHAN_GRACE,
    now: datetime | None = None,
) -> int:
    """Delete spool files that no instance or delivery references and that are older than ``grace``.

    Parameters
    ----------
    session: sqlalchemy.orm.Session
        Open session (read only).
    spool: Spool
        The spool holding the files.
    grace: datetime.timedelta
        Minimum age of a file before it may be removed.
    now: datetime.datetime | None
        Current time (aware); now by default.

    Returns
    -------
    int
        Number of files deleted.

    Raises
    ------
    ValueError
        If ``grace`` is negative or ``now`` is naive.
    """
    _check_spool(spool)
    check_period("grace", grace)
    now = resolve_now(now)
    # Listed before the rows are read: a file published after the listing is not looked at, and
    # one whose row is committed after the query is too young to be removed.
    files = spool.published_files()
    referenced = set(session.scalars(select(Instance.spool_path)).all())
    referenced.update(session.scalars(select(Delivery.spool_path)).all())
    cutoff = (now - grace).timestamp()
    removed = 0
    for relative, modified in files:
        if relative.as_posix() in referenced or modified >= cutoff:
            continue
        if spool.delete(relative):
            removed += 1
            log.warning("orphan_spool_file_removed", path=relative.as_posix())
    return removed
