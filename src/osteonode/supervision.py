"""Supervision of a process's analysis workers: restart dead ones, report stuck ones, send heartbeats.

A worker records everything a job raises on the job and goes on; its thread can still end (a
``SystemExit`` from a library, an error while recording an error). :class:`WorkerSupervisor` checks
its workers every ``workers.heartbeat_interval_s``: a dead one is logged with what ended it and
replaced by a fresh worker of the same number (the job it held was recorded as a failed attempt, or
its lease expires and another worker takes it over); one that has been on a single job, or in a
single wait, longer than ``workers.stuck_after_s`` is reported ``stuck`` (a thread cannot be killed:
its job's lease expires and another worker takes the job, and the stuck thread's late answer is
refused). Each check writes one heartbeat row per worker (:mod:`osteonode.store.workers`), so
``osteonode status`` and a health endpoint in another process see the same thing; a process that
dies stops writing and its workers read as ``gone``.

:meth:`WorkerSupervisor.health` gives the same :class:`~osteonode.store.workers.WorkerHealth` values
from memory, for a health check inside the node's own process.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from osteonode.config import WorkerSettings
from osteonode.store.db import Database
from osteonode.store.tables import WorkerState, utc_now
from osteonode.store.workers import WorkerHealth, forget_workers, record_heartbeat
from osteonode.worker import Worker, WorkerActivity

__all__ = ["WORKER_MEMORY_DAYS", "WorkerSupervisor"]

log = structlog.get_logger(__name__)

#: Heartbeats of workers not seen for this many days are deleted when a supervisor starts.
WORKER_MEMORY_DAYS = 7


class WorkerSupervisor:
    """Starts, watches and restarts the analysis workers of one process.

    Parameters
    ----------
    settings
        ``[workers]``: how many, heartbeat interval, when a worker counts as stuck.
    database
        Where heartbeats are written.
    make_worker
        Builds a (not yet started) worker with the given number.
    count
        How many workers to run.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        database: Database,
        make_worker: Callable[[int], Worker],
        count: int,
    ) -> None:
        if not isinstance(settings, WorkerSettings):
            raise TypeError(f"settings must be WorkerSettings, not {type(settings).__name__}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        self._settings = settings
        self._database = database
        self._make_worker = make_worker
        self._workers = [make_worker(index) for index in range(count)]
        self._restarts = [0] * count
        self._last_errors: list[str | None] = [None] * count
        self._started_at = [utc_now()] * count
        self._stuck_reported: set[tuple[str, int | None]] = set()
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def workers(self) -> list[Worker]:
        """The current worker of each number."""
        with self._lock:
            return list(self._workers)

    def start(self) -> None:
        """Forget long-gone workers, start the workers and write their first heartbeats."""
        with self._database.session() as session:
            forget_workers(session, utc_now() - timedelta(days=WORKER_MEMORY_DAYS))
        with self._lock:
            for index, worker in enumerate(self._workers):
                self._started_at[index] = utc_now()
                worker.start()
        self.check()

    def check(self) -> list[WorkerHealth]:
        """Restart dead workers, tell stuck ones, write every worker's heartbeat.

        Returns
        -------
        list of WorkerHealth
            The workers as reported (a restarted worker appears with its new thread).
        """
        with self._lock:
            if not self._stopping:
                for index, worker in enumerate(self._workers):
                    if worker.activity().state is WorkerState.DEAD:
                        self._restart(index, worker)
            health = self._snapshot()
        try:
            with self._database.session() as session:
                for item in health:
                    record_heartbeat(
                        session,
                        worker_id=item.worker_id,
                        host=item.host,
                        pid=item.pid,
                        state=item.state,
                        job_id=item.job_id,
                        state_since=item.state_since,
                        started_at=item.started_at,
                        restarts=item.restarts,
                        last_error=item.last_error,
                        now=item.seen_at,
                    )
        except Exception as error:  # a database outage must not stop supervision; next beat retries
            log.warning("worker_heartbeat_failed", error=f"{type(error).__name__}: {error}")
        return health

    def health(self) -> list[WorkerHealth]:
        """The workers of this process as they are now, without touching the database."""
        with self._lock:
            return self._snapshot()

    def stop(self, grace_s: float) -> None:
        """Ask every worker to stop, wait up to ``grace_s`` for each, write the last heartbeats."""
        with self._lock:
            self._stopping = True
            workers = list(self._workers)
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(grace_s)
            if worker.is_alive():
                log.warning("worker_still_running", worker=worker.worker_id)
        self.check()

    def _restart(self, index: int, dead: Worker) -> None:
        activity = dead.activity()
        self._restarts[index] += 1
        self._last_errors[index] = activity.error
        log.error(
            "worker_restarted",
            worker=dead.worker_id,
            error=activity.error,
            restarts=self._restarts[index],
        )
        fresh = self._make_worker(index)
        self._workers[index] = fresh
        self._started_at[index] = utc_now()
        fresh.start()

    def _snapshot(self) -> list[WorkerHealth]:
        now = utc_now()
        host, pid = socket.gethostname(), os.getpid()
        stuck_after = self._settings.stuck_after_s
        health = []
        for index, worker in enumerate(self._workers):
            activity = worker.activity()
            state = activity.state
            if state in (WorkerState.IDLE, WorkerState.BUSY) and activity.seconds > stuck_after:
                state = WorkerState.STUCK
                self._report_stuck(activity)
            health.append(
                WorkerHealth(
                    worker_id=activity.worker_id,
                    host=host,
                    pid=pid,
                    state=state,
                    job_id=activity.job_id,
                    state_since=_ago(now, activity.seconds),
                    started_at=self._started_at[index],
                    seen_at=now,
                    restarts=self._restarts[index],
                    last_error=activity.error or self._last_errors[index],
                )
            )
        return health

    def _report_stuck(self, activity: WorkerActivity) -> None:
        key = (activity.worker_id, activity.job_id)
        if key in self._stuck_reported:
            return
        self._stuck_reported.add(key)
        log.error(
            "worker_stuck",
            worker=activity.worker_id,
            job_id=activity.job_id,
            seconds=round(activity.seconds, 1),
            stuck_after_s=self._settings.stuck_after_s,
        )


def _ago(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)
