"""Workers: threads that claim jobs, route each image by its header and hand it to its pipeline.

A job is claimed under a lease; a worker that dies simply lets the lease expire and another worker
picks the job up again. Database sessions are kept short: the claim is one transaction, the work
(reading the header, running a pipeline, writing the report files) happens outside any transaction, and
the outcome is a second one: the Result row, a Delivery row per report object and destination, and the
job marked done, committed together. The same code runs embedded (threads of ``osteonode serve``, SQLite) and scaled out
(``osteonode worker`` processes sharing a PostgreSQL queue and a spool volume).

No input stops a worker: pixel data is decoded in the worker's own decoder process
(:class:`~osteonode.imaging.isolation.DecoderProcess`), so a decoder that aborts or panics costs that
process and the file is refused with the reason; anything a job raises, ``BaseException`` included
(Rust panics are one), is recorded on the job. A worker thread that ends all the same is restarted
by :mod:`osteonode.supervision`, which reads :meth:`Worker.activity` to tell idle, busy, stuck and
dead workers apart.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from osteonode.analysis import Refusal, run_pipeline
from osteonode.config import NodeConfig
from osteonode.dicom.scp import IngestActivity
from osteonode.imaging.isolation import DecoderProcess
from osteonode.inference import InferencePlan
from osteonode.outbox import device_info, result_destinations, write_result_objects
from osteonode.pipelines.registry import Pipeline
from osteonode.routing import Route, route_file, to_enabled_pipelines
from osteonode.store.db import Database
from osteonode.store.deliveries import add_deliveries
from osteonode.store.queue import (
    claim_job,
    mark_done,
    mark_failed_attempt,
    mark_routed,
    mark_skipped,
    record_event,
    release_job,
)
from osteonode.store.spool import Spool
from osteonode.store.tables import EventKind, Job, Result, WorkerState, utc_now
from osteonode.store.wakeups import Channel

__all__ = ["MAX_GIVE_WAY_S", "Worker", "WorkerActivity", "worker_identity"]

log = structlog.get_logger(__name__)

#: Longest a worker holds back, per job, for images arriving at the SCP in its process. Measured with
#: bench/ingest.py: on two cores, routing alongside a stream of 7 MB images slowed receiving by about
#: a third; giving way keeps receiving at full speed while still routing a job every few seconds.
MAX_GIVE_WAY_S = 2.0


def worker_identity(index: int) -> str:
    """A lease owner name that is unique across hosts and processes: ``host:pid:worker-N``."""
    return f"{socket.gethostname()}:{os.getpid()}:worker-{index}"


@dataclass(frozen=True, slots=True)
class WorkerActivity:
    """A snapshot of one worker, taken without stopping it.

    Attributes
    ----------
    worker_id
        The lease owner name, ``host:pid:worker-N``.
    index
        N.
    state
        Idle, busy, dead or stopped (stuck is decided by supervision from ``seconds``).
    job_id
        The job being worked on, if any.
    seconds
        How long the worker has been in ``state`` (on this job, or in this wait).
    error
        What ended the thread, for a dead worker.
    """

    worker_id: str
    index: int
    state: WorkerState
    job_id: int | None
    seconds: float
    error: str | None


class Worker(threading.Thread):
    """One worker thread.

    Parameters
    ----------
    config
        The node configuration (``workers`` and ``routing`` sections are used).
    database
        The shared job queue.
    spool
        Where the received files are.
    index
        Number of this worker in its process, for its name.
    pipelines
        The pipelines this worker can run (:func:`osteonode.pipelines.registry.load_pipelines`, loaded once
        per process and shared by its workers). A job routed to another pipeline stays ``queued``
        until a worker that has it claims it.
    plans
        How each pipeline runs (bfloat16 or not; ``LoadedPipelines.plans``); a pipeline without a
        plan runs in float32.
    give_way_to
        The receiving activity of an SCP in the same process: before each claim the worker waits
        until no image has arrived for a moment, at most ``MAX_GIVE_WAY_S``.
    """

    def __init__(
        self,
        config: NodeConfig,
        database: Database,
        spool: Spool,
        *,
        index: int = 0,
        pipelines: Mapping[str, Pipeline],
        plans: Mapping[str, InferencePlan] | None = None,
        give_way_to: IngestActivity | None = None,
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        self.worker_id = worker_identity(index)
        super().__init__(name=f"osteonode-worker-{index}", daemon=True)
        self._config = config
        self._device = device_info(config.node)
        self._settings = config.workers
        self._routing = config.routing
        self._database = database
        self._spool = spool
        self._pipelines = dict(pipelines)
        self._plans = dict(plans or {})
        self._give_way_to = give_way_to
        self._stopping = threading.Event()
        self.index = index
        self._limits = config.limits
        self._decoder = DecoderProcess(
            timeout_s=config.limits.decode_timeout_s,
            memory_limit_mb=config.limits.decoder_memory_mb,
            name=f"osteonode-decoder-{index}",
        )
        # What the worker is doing, read by supervision from another thread (plain attribute
        # writes: each is atomic, and a snapshot a moment old is good enough).
        self._state = WorkerState.STARTING
        self._job_id: int | None = None
        self._since = time.monotonic()
        self._error: str | None = None

    def activity(self) -> WorkerActivity:
        """What this worker is doing now (dead when its thread ended other than by :meth:`stop`)."""
        state = self._state
        if self.ident is not None and not self.is_alive() and state is not WorkerState.STOPPED:
            state = WorkerState.DEAD
        return WorkerActivity(
            worker_id=self.worker_id,
            index=self.index,
            state=state,
            job_id=self._job_id,
            seconds=time.monotonic() - self._since,
            error=self._error,
        )

    def _set_state(self, state: WorkerState, job_id: int | None = None) -> None:
        self._state, self._job_id, self._since = state, job_id, time.monotonic()

    def stop(self) -> None:
        """Ask the worker to finish its current job and exit."""
        self._stopping.set()
        self._database.wakeups.interrupt()

    def run(self) -> None:
        log.info("worker_started", worker=self.worker_id, pipelines=sorted(self._pipelines))
        wakeups = self._database.wakeups
        try:
            while not self._stopping.is_set():
                self._set_state(WorkerState.IDLE)
                # Read before looking, so a job committed while this worker looks still wakes it.
                seen = wakeups.seen(Channel.JOBS)
                if self._give_way_to is not None:
                    self._give_way_to.wait_until_quiet(MAX_GIVE_WAY_S, self._stopping)
                try:
                    worked = self.process_next()
                except Exception as error:  # a database outage must not end the thread
                    log.exception("worker_error", worker=self.worker_id, error=str(error))
                    worked = False
                if not worked and not self._stopping.is_set():
                    # Woken by the commit of a new job; the period is only a safety net.
                    wakeups.wait(Channel.JOBS, seen, self._settings.poll_interval_s)
        except BaseException as error:
            # The thread ends here, not stopped: supervision sees it dead, says why, starts another.
            self._error = f"{type(error).__name__}: {error}"
            log.critical("worker_died", worker=self.worker_id, error=self._error, exc_info=True)
            return
        finally:
            self._decoder.close()
        self._set_state(WorkerState.STOPPED)
        log.info("worker_stopped", worker=self.worker_id)

    def process_next(self) -> bool:
        """Claim one job and do it.

        Returns
        -------
        bool
            Whether a job was claimed.
        """
        with self._database.session() as session:
            job = claim_job(
                session,
                worker_id=self.worker_id,
                lease_seconds=self._settings.lease_seconds,
                pipelines=frozenset(self._pipelines),
            )
            if job is None:
                return False
            spool_path = job.instance.spool_path
            sop_instance_uid = job.instance.sop_instance_uid
        if self._stopping.is_set():
            self._release(job)
            return True
        self._set_state(WorkerState.BUSY, job.id)
        try:
            if job.pipeline is None:
                self._route(job, spool_path)
            else:
                self._run_pipeline(job, self._pipelines[job.pipeline], spool_path)
        except BaseException as error:  # recorded on the job, retried or failed; panics included
            log.exception("job_error", job_id=job.id, sop_instance_uid=sop_instance_uid)
            with self._database.session() as session:
                mark_failed_attempt(session, job, f"{type(error).__name__}: {error}")
            if isinstance(error, (KeyboardInterrupt, SystemExit)):  # asked to end: the thread ends
                raise
        return True

    def _route(self, job: Job, spool_path: str) -> None:
        # route_file, mark_routed and mark_skipped record the decision as an Event and a log line.
        decision = to_enabled_pipelines(
            route_file(self._spool.path(spool_path), self._routing), self._config.pipelines
        )
        if not isinstance(decision, Route):
            with self._database.session() as session:
                mark_skipped(session, job, decision.reason.value, decision.detail, decision.rule)
            return
        first, *others = decision.pipelines
        pipeline = self._pipelines.get(first)
        with self._database.session() as session:
            # Without the pipeline here the job waits, queued, for a worker that has it; each
            # further pipeline of the rule gets a queued job of its own.
            job = mark_routed(
                session, job, first, decision.rule, keep_lease=pipeline is not None, also=others
            )
        if pipeline is not None:
            self._run_pipeline(job, pipeline, spool_path, decision)

    def _run_pipeline(
        self, job: Job, pipeline: Pipeline, spool_path: str, route: Route | None = None
    ) -> None:
        """Run the pipeline, write the report objects, then store the result and queue its sending.

        ``route`` is the routing decision when this worker routed the job itself; a job claimed
        ``queued`` (routed earlier, by a worker without this pipeline) is routed again from its
        header, which is cheap, to learn its rule's destinations.
        """
        # Workers of one process share each pipeline's networks; Grad-CAM hooks them while it
        # runs, so one image at a time goes through a given pipeline.
        plan = self._plans.get(pipeline.name) or InferencePlan()
        with _run_lock(pipeline), plan.autocast() as bfloat16:
            started = time.perf_counter()
            radiograph, outcome = run_pipeline(
                pipeline, self._spool.path(spool_path), limits=self._limits, decoder=self._decoder
            )
            analysed = time.perf_counter()
        if isinstance(outcome, Refusal):
            with self._database.session() as session:
                mark_skipped(session, job, outcome.kind.value, outcome.detail)
            return
        assert radiograph is not None  # a result always comes from a decoded image
        if route is None:
            decision = route_file(self._spool.path(spool_path), self._routing)
            route = (
                decision
                if isinstance(decision, Route) and pipeline.name in decision.pipelines
                else None
            )
        names = result_destinations(
            self._config, pipeline.name, route.destinations if route is not None else None
        )
        # Files first, rows second: a crash in between leaves unreferenced files, never a row
        # that points to no file.
        objects = write_result_objects(
            outcome,
            radiograph,
            {name: self._config.destinations[name] for name in names},
            spool=self._spool,
            device=self._device,
            report_not_evaluable=self._config.pipeline(pipeline.name).report_not_evaluable,
        )
        # Where the time went, on the event, so latency can be read from the node's own record.
        seconds = {
            "analysis": round(analysed - started, 4),
            "reports": round(time.perf_counter() - analysed, 4),
        }
        with self._database.session() as session:
            row = Result(
                job_id=job.id,
                instance_id=job.instance_id,
                pipeline=pipeline.name,
                model_name=outcome.model.name,
                model_version=outcome.model.version,
                payload=outcome.to_dict(),
                created_at=utc_now(),
            )
            session.add(row)
            session.flush()
            record_event(
                session,
                EventKind.RESULT_STORED,
                f"result stored; {len(objects)} report objects queued"
                + (f" for {', '.join(names)}" if objects else ""),
                job=job,
                result_id=row.id,
                evaluable=outcome.evaluable,
                destinations=list(names) if objects else [],
                seconds=seconds,
                bfloat16=bfloat16,
            )
            add_deliveries(session, row, objects)
            mark_done(session, job)

    def _release(self, job: Job) -> None:
        with self._database.session() as session:
            release_job(session, job)


_RUN_LOCKS: dict[int, threading.Lock] = {}
_RUN_LOCKS_GUARD = threading.Lock()


def _run_lock(pipeline: Pipeline) -> threading.Lock:
    """The lock that serialises runs of one pipeline object across this process's workers."""
    with _RUN_LOCKS_GUARD:
        return _RUN_LOCKS.setdefault(id(pipeline), threading.Lock())
