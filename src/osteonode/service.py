"""The running node: storage SCP, worker threads and the scheduler of periodic work, in one process.

``osteonode serve`` runs all three; ``serve --no-workers`` only receives (scale-out receivers) and
``osteonode worker`` only works (scale-out workers against PostgreSQL). Each process also runs the
periodic work (reclaiming expired job leases, the spool retention purge); both are idempotent, so
several processes sharing a database may run them. A process with workers also sends results: one
thread per configured destination sends that destination's due deliveries (claimed with a
lease, so several processes may send from one outbox, and one unreachable PACS never holds up
another). Workers and senders are woken by the commit that gives them work
(:mod:`osteonode.store.wakeups`); their periods are only a safety net.

Shutdown on SIGTERM or SIGINT: the SCP stops accepting associations and lets open ones finish, each
worker finishes the job it holds (or gives it back unstarted), each sender finishes the file it is
sending, the scheduler stops, and the process exits 0. A crash instead (SIGKILL, power loss) loses nothing either: what was acknowledged is in the
spool and the database, and a job whose worker died is reclaimed when its lease expires.

The workers run under a :class:`~osteonode.supervision.WorkerSupervisor`: a scheduler job restarts
a worker thread that died, reports one that is stuck, and writes every worker's heartbeat for
``osteonode status``; :meth:`Node.worker_health` gives the same from memory.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from osteonode.config import NodeConfig
from osteonode.dicom.scp import StorageSCP
from osteonode.signals import stop_on_signals
from osteonode.store.db import Database
from osteonode.store.deliveries import undelivered_by_destination
from osteonode.store.queue import reclaim_expired_leases
from osteonode.store.retention import purge_spool, remove_orphan_files
from osteonode.store.spool import Spool
from osteonode.store.tables import utc_now
from osteonode.store.wakeups import PostgresListener
from osteonode.store.workers import WorkerHealth

if TYPE_CHECKING:
    # Workers, senders and pipelines import torch, numpy imaging and the report builders (seconds
    # of start-up), the HTTP server its templates and the routing rules; none of them is needed
    # to accept an association, so each is imported once the SCP listens.
    from osteonode.inference import InferencePlan
    from osteonode.outbox import DeliverySender
    from osteonode.pipelines.registry import Pipeline
    from osteonode.supervision import WorkerSupervisor
    from osteonode.web import AdminServer
    from osteonode.worker import Worker

__all__ = ["Node", "run_node"]

log = structlog.get_logger(__name__)

#: How long open associations and running jobs may take to finish at shutdown.
SHUTDOWN_GRACE_S = 20.0
#: At start, the rest of the node waits until the SCP has had no open association for this long...
STARTUP_QUIET_S = 0.1
#: A temporary spool file whose writer is not known to have ended (a live process of this host, or
#: a process of another host sharing the spool) is a crash's leftover only once untouched this long.
STRAY_TEMPORARY_AGE_S = 3600.0
#: ... but no longer than this.
STARTUP_GIVE_WAY_S = 2.0


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
        # Set once the schema is created or upgraded: the SCP listens before, and stores after.
        self._database_ready = threading.Event()
        self.scp = (
            StorageSCP(config, self.database, self.spool, database_ready=self._database_ready)
            if scp else None
        )
        self._worker_count = config.workers.count if workers else 0
        self._pipelines = pipelines
        self.supervisor: WorkerSupervisor | None = None
        self.sender: DeliverySender | None = None
        self._listener: PostgresListener | None = None
        # Each pipeline this process loaded (None) or why not, filled when the workers start.
        self._pipeline_states: dict[str, str | None] = {}
        #: The HTTP port's server, made when the node starts (None when disabled or unavailable).
        self.http: AdminServer | None = None
        self._scheduler = BackgroundScheduler(timezone="UTC")
        self._started = False

    def start(self) -> None:
        """Prepare database and spool, start the SCP, then the scheduler, HTTP, workers and senders.

        The SCP listens as soon as the spool is ready: it answers C-ECHO while the schema is
        created or upgraded (a new database loads alembic and its migrations), and a C-STORE waits
        for the schema; all before the scheduler, the HTTP port and the models (which take
        seconds). An image that arrives meanwhile is stored and queued like any other, and waits
        for the workers.

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
        self.spool.ensure_writable()
        self._remove_stray_files()
        if self.scp is not None:
            self.scp.start()
        try:
            self.database.upgrade()
        except BaseException:
            if self.scp is not None:
                self.scp.stop(grace_s=0.0)
            raise
        self._database_ready.set()
        if self.scp is not None:
            # What follows (the HTTP port's imports, the scheduler, seconds of loading torch and
            # the models) holds the interpreter lock; an association that opens at once (a PACS
            # verifying the node after a restart, senders retrying) is served alone first.
            self.scp.wait_until_idle(STARTUP_QUIET_S, STARTUP_GIVE_WAY_S)
        self._started = True
        self._warn_of_unknown_destinations()
        self._warn_of_results_sent_nowhere()
        self._schedule()
        self._scheduler.start()
        self._start_http()
        if self._worker_count:
            self._start_workers()
        log.info(
            "node_started",
            scp=self.scp is not None,
            workers=len(self.workers),
            database=repr(self.database),
            spool=str(self.spool.root),
        )

    def _start_workers(self) -> None:
        """Load the models, then start the workers, the senders and the PostgreSQL listener."""
        from osteonode.inference import share_cores
        from osteonode.outbox import DeliverySender
        from osteonode.pipelines.registry import load_pipelines
        from osteonode.supervision import WorkerSupervisor
        from osteonode.worker import Worker

        threads = share_cores(self.config.inference, self._worker_count)
        log.info(
            "inference_configured",
            threads_per_worker=threads,
            workers=self._worker_count,
            **self.config.inference.model_dump(mode="json", exclude={"threads_per_worker"}),
        )

        # Models are loaded once per process; the workers share them.
        pipelines = self._pipelines
        plans: Mapping[str, InferencePlan] = {}
        if pipelines is None:
            loaded = load_pipelines(self.config)
            pipelines, plans = loaded.available, loaded.plans
            self._pipeline_states.update(loaded.unavailable)
        self._pipeline_states.update(dict.fromkeys(pipelines))
        activity = self.scp.activity if self.scp is not None else None

        def make_worker(index: int) -> Worker:
            return Worker(
                self.config, self.database, self.spool, index=index, pipelines=pipelines,
                plans=plans, give_way_to=activity,
            )

        self.supervisor = WorkerSupervisor(
            self.config.workers, self.database, make_worker, self._worker_count
        )
        self.sender = DeliverySender(self.config, self.database, self.spool)
        # Work committed by other processes (scale-out receivers) wakes this one's waiters too.
        self._listener = self.database.listener()
        if self._listener is not None:
            self._listener.start()
        self.supervisor.start()
        self._scheduler.add_job(
            self.supervisor.check,
            "interval",
            seconds=self.config.workers.heartbeat_interval_s,
            id="supervise_workers",
            max_instances=1,
            coalesce=True,
        )
        self.sender.start()

    def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop receiving, let workers finish their jobs, stop the scheduler."""
        if not self._started:
            return
        log.info("node_stopping")
        if self.http is not None:
            self.http.stop()
        if self.scp is not None:
            self.scp.stop(grace_s)
        if self.sender is not None:
            self.sender.stop()
        if self._listener is not None:
            self._listener.stop()
        if self.supervisor is not None:
            self.supervisor.stop(grace_s)
        if self.sender is not None:
            self.sender.stop(grace_s)
        self._scheduler.shutdown(wait=True)
        self.database.dispose()
        self._started = False
        log.info("node_stopped")

    @property
    def workers(self) -> list[Worker]:
        """The current worker threads (a restarted worker replaces the one that died)."""
        return [] if self.supervisor is None else self.supervisor.workers

    def worker_health(self) -> list[WorkerHealth]:
        """Which of this process's workers are idle, busy, stuck or dead, from memory."""
        return [] if self.supervisor is None else self.supervisor.health()

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

    def reclaim_leases(self) -> int:
        """Put jobs whose worker stopped renewing its lease back in the queue."""
        with self.database.session() as session:
            reclaimed = reclaim_expired_leases(session, utc_now())
        if reclaimed:
            log.info("leases_reclaimed", jobs=reclaimed)
        return reclaimed

    def purge_spool(self) -> None:
        """Delete finished work past the retention period, and files a crash left behind."""
        retention = timedelta(days=self.config.storage.retention_days)
        with self.database.session() as session:
            report = purge_spool(session, self.spool, retention, utc_now())
        log.info("spool_purged", **dataclasses.asdict(report))
        with self.database.session() as session:
            orphans = remove_orphan_files(session, self.spool)
        if orphans:
            log.info("orphan_spool_files_removed", files=orphans)
        self._remove_stray_files()

    def _warn_of_results_sent_nowhere(self) -> None:
        from osteonode.web.health import pipelines_sending_nowhere

        # A process that makes results says at start when some go to no destination at all.
        unsent = pipelines_sending_nowhere(self.config) if self._worker_count else []
        if unsent:
            log.warning(
                "results_sent_nowhere",
                pipelines=unsent,
                hint="name a destination in [pipelines.<name>] destinations",
            )

    def _warn_of_unknown_destinations(self) -> None:
        # Deliveries queued for a destination since removed from the configuration are never
        # sent; say so at every start rather than let them wait unseen.
        if not self._worker_count:
            return
        with self.database.session() as session:
            waiting = undelivered_by_destination(session)
        unknown = {name: count for name, count in waiting.items() if name not in self.config.destinations}
        if unknown:
            log.warning("deliveries_for_unknown_destinations", waiting=unknown)

    def _start_http(self) -> None:
        # Health, metrics and the admin page help operators; a port already taken (another node
        # process on this host) must not stop images from being received and analysed.
        if not self.config.http.enabled:
            return
        from osteonode.web import AdminServer, ProcessParts

        parts = ProcessParts(scp=self.scp, workers=lambda: self.workers, pipelines=self._pipeline_states)
        self.http = AdminServer(self.config, self.database, self.spool, parts)
        try:
            self.http.start()
        except OSError as error:
            log.error("http_unavailable", host=self.config.http.host, port=self.config.http.port,
                      error=f"{type(error).__name__}: {error}")
            self.http = None

    def _remove_stray_files(self) -> None:
        # Temporary files a crash left mid-write were never acknowledged, so never needed. Other
        # processes may share the spool and be writing now: theirs are left alone.
        stray = self.spool.stray_temporary_files(older_than_s=STRAY_TEMPORARY_AGE_S)
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
        node = Node(config, scp=scp, workers=workers, pipelines=pipelines)
        if not stop_requested.is_set():
            node.start()
        while not stop_requested.wait(1.0):
            pass
    finally:
        if node is not None:
            node.stop()
