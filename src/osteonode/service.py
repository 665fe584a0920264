"""The running node: storage SCP, worker threads and the scheduler of periodic work, in one process.

``osteonode serve`` runs all three; ``serve --no-workers`` only receives (scale-out receivers) and
``osteonode worker`` only works (scale-out workers against PostgreSQL). Each process also runs the
periodic work (reclaiming expired job leases, the spool retention purge); both are idempotent, so
several processes sharing a database may run them. A process with workers also sends results: one
scheduler job per configured destination sends that destination's due deliveries (claimed with a
lease, so several processes may send from one outbox, and one unreachable PACS never holds up
another).

Shutdown on SIGTERM or SIGINT: the SCP stops accepting associations and lets open ones finish, each
worker finishes the job it holds (or gives it back unstarted), each sender finishes the file it is
sending, the scheduler stops, and the process exits 0. A crash instead (SIGKILL, power loss) loses nothing either: what was acknowledged is in the
spool and the database, and a job whose worker died is reclaimed when its lease expires.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from datetime import timedelta

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from osteonode.config import NodeConfig
from osteonode.dicom.scp import StorageSCP
from osteonode.outbox import DeliverySender
from osteonode.pipelines.registry import Pipeline, load_pipelines
from osteonode.signals import stop_on_signals
from osteonode.store.db import Database
from osteonode.store.deliveries import undelivered_by_destination
from osteonode.store.queue import reclaim_expired_leases
from osteonode.store.retention import purge_spool, remove_orphan_files
from osteonode.store.spool import Spool
from osteonode.store.tables import utc_now
from osteonode.worker import Worker

__all__ = ["Node", "run_node"]

log = structlog.get_logger(__name__)

#: How long open associations and running jobs may take to finish at shutdown.
SHUTDOWN_GRACE_S = 20.0


class Node:
    """The parts of a node that run in this process.

    Parameters
    ----------
    config
        The node configuration.
    scp
        Run the storage SCP (receive images).
    workers
        Run ``config.workers.count`` worker threads, and send results to the destinations.
    pipelines
        The pipelines the workers run; loaded from the configured model folders when None.

    Raises
    ------
    ValueError
        If neither part is asked for.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        scp: bool = True,
        workers: bool = True,
        pipelines: Mapping[str, Pipeline] | None = None,
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
        if not scp and not (workers and config.workers.count > 0):
            raise ValueError("nothing to run: no SCP and no workers (workers.count is 0?)")
        self.config = config
        self.database = Database(config.database.url)
        self.spool = Spool(config.storage.spool_dir)
        self.scp = StorageSCP(config, self.database, self.spool) if scp else None
        activity = self.scp.activity if self.scp is not None else None
        worker_count = config.workers.count if workers else 0
        # Models are loaded once per process; the workers share them.
        if pipelines is None:
            pipelines = load_pipelines(config).available if worker_count else {}
        self.workers = [
            Worker(config, self.database, self.spool, index=index, pipelines=pipelines, give_way_to=activity)
            for index in range(worker_count)
        ]
        self.sender = DeliverySender(config, self.database, self.spool) if worker_count else None
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._started = False

    def start(self) -> None:
        """Prepare database and spool, then start scheduler, workers and SCP (in that order).

        Raises
        ------
        osteonode.store.db.DatabaseError
            If the database cannot be reached or upgraded.
        osteonode.store.spool.SpoolError
            If the spool is not writable.
        OSError
            If the SCP's address cannot be bound.
        """
        if self._started:
            raise RuntimeError("the node is already started")
        self.database.upgrade()
        self.spool.ensure_writable()
        self._remove_stray_files()
        self._warn_of_unknown_destinations()
        self._schedule()
        self._scheduler.start()
        for worker in self.workers:
            worker.start()
        if self.scp is not None:
            self.scp.start()
        self._started = True
        log.info(
            "node_started",
            scp=self.scp is not None,
            workers=len(self.workers),
            database=repr(self.database),
            spool=str(self.spool.root),
        )

    def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop receiving, let workers finish their jobs, stop the scheduler."""
        if not self._started:
            return
        log.info("node_stopping")
        if self.scp is not None:
            self.scp.stop(grace_s)
        for worker in self.workers:
            worker.stop()
        if self.sender is not None:
            self.sender.stop()
        for worker in self.workers:
            worker.join(grace_s)
            if worker.is_alive():
                log.warning("worker_still_running", worker=worker.worker_id)
        self._scheduler.shutdown(wait=True)
        self.database.dispose()
        self._started = False
        log.info("node_stopped")

    def _schedule(self) -> None:
        workers = self.config.workers
        storage = self.config.storage
        self._scheduler.add_job(
            self.reclaim_leases,
            "interval",
            seconds=workers.reclaim_interval_s,
            id="reclaim_leases",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.add_job(
            self.purge_spool,
            "interval",
            minutes=storage.purge_interval_minutes,
            id="purge_spool",
            max_instances=1,
            coalesce=True,
        )
        if self.sender is None:
            return
        for name in self.config.destinations:
            self._scheduler.add_job(
                self.sender.send_due,
                "interval",
                args=[name],
                seconds=self.config.delivery.interval_s,
                id=f"send_to_{name}",
                # The sender lets one call per destination send; a second returns at once, so a
                # long backlog does not make the scheduler warn that a run was skipped.
                max_instances=2,
                coalesce=True,
                # Due deliveries left by the previous run are sent at once, not one period later.
                next_run_time=utc_now(),
            )

    def reclaim_leases(self) -> int:
        """Put jobs whose worker stopped renewing its lease back in the queue."""
        with self.database.session() as session:
            reclaimed = reclaim_expired_leases(session, utc_now())
        if reclaimed:
            log.info("leases_reclaimed", jobs=reclaimed)
        return reclaimed

    def purge_spool(self) -> None:
        """Delete finished work past the retention period and files a crash left without a row."""
        retention = timedelta(days=self.config.storage.retention_days)
        with self.database.session() as session:
            report = purge_spool(session, self.spool, retention, utc_now())
        log.info("spool_purged", **dataclasses.asdict(report))
        with self.database.session() as session:
            orphans = remove_orphan_files(session, self.spool)
        if orphans:
            log.info("orphan_spool_files_removed", files=orphans)

    def _warn_of_unknown_destinations(self) -> None:
        # Deliveries queued for a destination since removed from the configuration are never
        # sent; say so at every start rather than let them wait unseen.
        if self.sender is None:
            return
        with self.database.session() as session:
            waiting = undelivered_by_destination(session)
        unknown = {name: count for name, count in waiting.items() if name not in self.config.destinations}
        if unknown:
            log.warning("deliveries_for_unknown_destinations", waiting=unknown)

    def _remove_stray_files(self) -> None:
        # Temporary files are what a crash left mid-write: never acknowledged, so never needed.
        stray = self.spool.stray_temporary_files()
        for relative in stray:
            self.spool.delete(relative)
        if stray:
            log.info("stray_spool_files_removed", files=len(stray))


def run_node(
    config: NodeConfig,
    *,
    workers: bool = True,
    scp: bool = True,
    pipelines: Mapping[str, Pipeline] | None = None,
    stop_requested: threading.Event | None = None,
) -> None:
    """Run a node in this process until SIGTERM or SIGINT, then shut it down cleanly.

    Parameters
    ----------
    config
        The node configuration.
    workers
        Run worker threads.
    scp
        Run the storage SCP.
    pipelines
        The pipelines the workers run; loaded from the configured model folders when None.
    stop_requested
        An event the caller sets on SIGTERM/SIGINT (see :func:`osteonode.signals.stop_on_signals`,
        installed before the slow imports); None installs the handlers here.
    """
    if stop_requested is None:
        with stop_on_signals(threading.Event()) as event:
            run_node(config, workers=workers, scp=scp, pipelines=pipelines, stop_requested=event)
        return
    node: Node | None = None
    try:
        # Loading the models takes a while: a stop asked for meanwhile skips starting at all.
        node = Node(config, scp=scp, workers=workers, pipelines=pipelines)
        if not stop_requested.is_set():
            node.start()
        while not stop_requested.wait(1.0):
            pass
    finally:
        if node is not None:
            node.stop()
