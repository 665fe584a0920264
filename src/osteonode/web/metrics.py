"""``/metrics``: the node's counters in the Prometheus text format, read from the database.

Every figure is counted from the rows the node keeps (instances, jobs, results, deliveries,
events), not from counters in process memory, so any process of a scaled-out node (receivers and
workers on one PostgreSQL database) answers the same, and a restart resets nothing. Counters
therefore only fall when rows are removed (``deliveries purge`` removes sent deliveries, which
Prometheus reads as a counter reset).

Latency is measured per phase from the rows' times:

``queue``
    receipt of the image -> routing decision (the ``routed`` event);
``analysis``
    routing decision -> result stored;
``delivery``
    result stored -> the destination accepted the object (each sent delivery).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import ColumnElement, Subquery, case, func, select
from sqlalchemy.orm import Session, aliased

from osteonode.store.db import Database
from osteonode.store.tables import (
    Delivery,
    DeliveryState,
    Event,
    EventKind,
    Instance,
    Job,
    JobState,
    Result,
)
from osteonode.web.health import ProcessParts

__all__ = ["LATENCY_BUCKETS_S", "NodeCollector", "metrics_registry"]

#: Histogram bucket bounds in seconds: from a fast route to a day-long delivery back-off.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.5,
    1,
    2,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    21600,
    86400,
)


class NodeCollector(Collector):
    """A Prometheus collector that reads the node's database on every scrape.

    Parameters
    ----------
    database
        The node's database.
    parts
        What runs in this process (for the per-process gauges).
    """

    def __init__(self, database: Database, parts: ProcessParts) -> None:
        self._database = database
        self._parts = parts

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family (Prometheus client API)."""
        with self._database.session() as session:
            yield from _event_counters(session)
            yield from _job_metrics(session)
            yield _analysed(session)
            yield _deliveries(session)
            yield _latency(session)
        yield from _process_gauges(self._parts)


def metrics_registry(database: Database, parts: ProcessParts) -> CollectorRegistry:
    """A registry holding only the node's collector (no process or platform metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(database, parts))
    return registry


def _count_events(session: Session, kind: EventKind) -> int:
    return int(
        session.scalar(select(func.count()).select_from(Event).where(Event.kind == kind)) or 0
    )


def _event_counters(session: Session) -> Iterator[Metric]:
    received = CounterMetricFamily(
        "osteonode_images_received", "Images received and stored (C-STORE success)."
    )
    received.add_metric([], _count_events(session, EventKind.RECEIVED))
    yield received
    duplicates = CounterMetricFamily(
        "osteonode_images_received_again", "Receipts of an SOP instance already stored (kept once)."
    )
    duplicates.add_metric([], _count_events(session, EventKind.DUPLICATE_RECEIVED))
    yield duplicates
    refused = CounterMetricFamily(
        "osteonode_refusals", "Associations and C-STOREs refused (see status for each reason)."
    )
    refused.add_metric([], _count_events(session, EventKind.REFUSED))
    yield refused


def _job_metrics(session: Session) -> Iterator[Metric]:
    routed = CounterMetricFamily(
        "osteonode_images_routed", "Images routed to a pipeline.", labels=["pipeline"]
    )
    for pipeline, count in session.execute(
        select(Job.pipeline, func.count()).where(Job.pipeline.is_not(None)).group_by(Job.pipeline)
    ):
        routed.add_metric([pipeline], count)
    yield routed
    skipped = CounterMetricFamily(
        "osteonode_images_skipped",
        "Images not analysed, by the recorded reason.",
        labels=["reason"],
    )
    for reason, count in session.execute(
        select(Job.skip_reason, func.count())
        .where(Job.state == JobState.SKIPPED)
        .group_by(Job.skip_reason)
    ):
        skipped.add_metric([reason or "unknown"], count)
    yield skipped
    failed = CounterMetricFamily("osteonode_jobs_failed", "Jobs that failed every allowed attempt.")
    failed.add_metric(
        [],
        int(
            session.scalar(
                select(func.count()).select_from(Job).where(Job.state == JobState.FAILED)
            )
            or 0
        ),
    )
    yield failed
    by_state = dict.fromkeys((JobState.PENDING, JobState.QUEUED, JobState.RUNNING), 0)
    for state, count in session.execute(
        select(Job.state, func.count()).where(Job.state.in_(list(by_state))).group_by(Job.state)
    ):
        by_state[JobState(state)] = count
    depth = GaugeMetricFamily(
        "osteonode_queue_depth",
        "Jobs waiting: pending (not routed), queued (routed, waiting for a worker), running.",
        labels=["state"],
    )
    for state, count in by_state.items():
        depth.add_metric([state.value], count)
    yield depth


def _analysed(session: Session) -> Metric:
    analysed = CounterMetricFamily(
        "osteonode_images_analysed", "Pipeline results stored, per pipeline.", labels=["pipeline"]
    )
    for pipeline, count in session.execute(
        select(Result.pipeline, func.count()).group_by(Result.pipeline)
    ):
        analysed.add_metric([pipeline], count)
    return analysed


def _deliveries(session: Session) -> Metric:
    gauge = GaugeMetricFamily(
        "osteonode_deliveries",
        "Report objects by destination and state.",
        labels=["destination", "state"],
    )
    counts = {
        (destination, DeliveryState(state)): count
        for destination, state, count in session.execute(
            select(Delivery.destination, Delivery.state, func.count()).group_by(
                Delivery.destination, Delivery.state
            )
        )
    }
    for destination in sorted({destination for destination, _ in counts}):
        for state in DeliveryState:
            gauge.add_metric([destination, state.value], counts.get((destination, state), 0))
    return gauge


def _latency(session: Session) -> Metric:
    routed = aliased(Event)
    queue = (
        select(Instance.received_at.label("start"), func.min(routed.at).label("end"))
        .join(routed, routed.instance_id == Instance.id)
        .where(routed.kind == EventKind.ROUTED)
        .group_by(Instance.id, Instance.received_at)
    )
    analysis = (
        select(func.max(routed.at).label("start"), Result.created_at.label("end"))
        .join(routed, routed.job_id == Result.job_id)
        .where(routed.kind == EventKind.ROUTED)
        .group_by(Result.id, Result.created_at)
    )
    delivery = (
        select(Result.created_at.label("start"), Delivery.sent_at.label("end"))
        .join(Delivery, Delivery.result_id == Result.id)
        .where(Delivery.sent_at.is_not(None))
    )
    family = HistogramMetricFamily(
        "osteonode_phase_duration_seconds",
        "Time each image spent in each phase: queue (receipt to routing), analysis (routing to"
        " result), delivery (result to accepted by a destination).",
        labels=["phase"],
    )
    for phase, pairs in (("queue", queue), ("analysis", analysis), ("delivery", delivery)):
        buckets, total = _histogram(session, pairs.subquery(), LATENCY_BUCKETS_S)
        family.add_metric([phase], buckets, total)
    return family


def _histogram(
    session: Session, pairs: Subquery, bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative bucket counts (``le`` bounds, then ``+Inf``) and the sum of the durations.

    The durations are ``end - start`` of the rows of ``pairs``, counted by the database in one pass.
    """
    seconds = _seconds_between(session, pairs.c.start, pairs.c.end)
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(seconds), 0.0),
            *(func.coalesce(func.sum(case((seconds <= bound, 1), else_=0)), 0) for bound in bounds),
        ).select_from(pairs)
    ).one()
    count, total, *cumulative = row
    buckets = [(repr(float(bound)), float(n)) for bound, n in zip(bounds, cumulative, strict=True)]
    buckets.append(("+Inf", float(count)))
    return buckets, float(total)


def _seconds_between(session: Session, start: ColumnElement, end: ColumnElement) -> ColumnElement:
    """``end - start`` in seconds, as SQL: SQLite keeps times as text, PostgreSQL as timestamps."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _process_gauges(parts: ProcessParts) -> Iterator[Metric]:
    workers = GaugeMetricFamily(
        "osteonode_process_workers_alive", "Worker threads alive in this process."
    )
    workers.add_metric([], sum(1 for worker in parts.workers() if worker.is_alive()))
    yield workers
    loaded = GaugeMetricFamily(
        "osteonode_process_pipeline_loaded",
        "1 when this process loaded the pipeline's model.",
        labels=["pipeline"],
    )
    for name, reason in sorted(parts.pipelines.items()):
        loaded.add_metric([name], 1.0 if reason is None else 0.0)
    yield loaded
