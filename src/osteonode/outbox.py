"""Results leaving the node: the report objects of a result, and sending them until they arrive.

Two halves, used by two kinds of thread:

* :func:`write_result_objects` (worker): builds the Structured Report (Comprehensive 3D SR, or
  Comprehensive SR for a destination configured so) and the Secondary Capture of a result, writes
  them durably to the spool, and returns what must be sent where, for the worker to queue as
  Delivery rows in the same transaction as the Result row (:mod:`osteonode.store.deliveries`).
* :class:`DeliverySender` (scheduler): claims due deliveries of one destination, sends each with
  C-STORE (:mod:`osteonode.dicom.scu`) and records the outcome: sent; a transient failure retried
  after an exponential back-off with jitter (persisted as ``next_attempt_at``, so it survives a
  restart); or a permanent failure, or the last allowed attempt, dead-lettered with the
  destination's own status and comment for ``osteonode deliveries retry``.

Where results go: the destinations of the routing rule that routed the image when that rule names
any (``[[routing.rules]] destinations``), else the pipeline's (``[pipelines.<name>] destinations``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import structlog
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from osteonode import __version__
from osteonode.config import Destination, NodeConfig, NodeSettings, SrStorage
from osteonode.dicom.scu import SendOutcome, SendResult, send_file
from osteonode.imaging.pixels import Radiograph
from osteonode.pipelines.base import Result
from osteonode.reports import DeviceInfo, build_secondary_capture, build_structured_report
from osteonode.store.db import Database
from osteonode.store.deliveries import (
    OutgoingObject,
    claim_delivery,
    mark_dead,
    mark_retry,
    mark_sent,
)
from osteonode.store.queue import LeaseLostError
from osteonode.store.spool import Spool
from osteonode.store.tables import Delivery, utc_now

__all__ = [
    "DeliverySender",
    "device_info",
    "result_destinations",
    "retry_delay",
    "write_result_objects",
]

log = structlog.get_logger(__name__)

#: Each failed attempt doubles the back-off (up to the destination's ``backoff_max_s``).
BACKOFF_FACTOR = 2.0


def device_info(node: NodeSettings) -> DeviceInfo:
    """The node as the author of its reports: ``[node] name`` and ``device_uid`` (or a derived UID)."""
    if node.device_uid is None:
        return DeviceInfo.for_node(node.name)
    return DeviceInfo(name=node.name, uid=node.device_uid, software_version=__version__)


def result_destinations(
    config: NodeConfig, pipeline: str, rule_destinations: Sequence[str] | None
) -> tuple[str, ...]:
    """Where the results of an image routed to ``pipeline`` go.

    Parameters
    ----------
    config
        The node configuration.
    pipeline
        The pipeline that analysed the image.
    rule_destinations
        The routing rule's destinations (``Route.destinations``); None when the rule names none.

    Returns
    -------
    tuple of str
        Destination names; the rule's override the pipeline's.
    """
    names = rule_destinations
    if names is None:
        names = config.pipeline(pipeline).destinations
    return tuple(dict.fromkeys(names))


def _save(dataset: Dataset, spool: Spool) -> str:
    relative = spool.write_outgoing(
        str(dataset.SOPInstanceUID), lambda file: dataset.save_as(file, enforce_file_format=True)
    )
    return relative.as_posix()


def write_result_objects(
    result: Result,
    radiograph: Radiograph,
    destinations: Mapping[str, Destination],
    *,
    spool: Spool,
    device: DeviceInfo,
    report_not_evaluable: bool = True,
) -> list[OutgoingObject]:
    """Build a result's SR and Secondary Capture, write them to the spool, and say what goes where.

    Each destination gets the SR in its ``sr_storage`` class (one SR per class in use) and the
    Secondary Capture. A film that was not evaluable gets both as well (the SR says why, the SC
    shows it), unless ``report_not_evaluable`` is False: then nothing is sent.

    Parameters
    ----------
    result
        The pipeline's result.
    radiograph
        The decoded source image (for the SC, and its header for the SR).
    destinations
        The destinations by name.
    spool
        Where the files go (the ``outgoing`` area).
    device
        The node as the author of the objects.
    report_not_evaluable
        Send reports for a film that could not be assessed.

    Returns
    -------
    list of OutgoingObject
        One entry per object and destination; empty when nothing is to be sent.

    Raises
    ------
    osteonode.reports.ReportError
        If the result and the radiograph cannot make a report together.
    OSError
        If the spool cannot be written.
    """
    if not isinstance(result, Result):
        raise TypeError(f"result must be a Result, not {type(result).__name__}")
    if not destinations or (not result.evaluable and not report_not_evaluable):
        return []
    capture = build_secondary_capture(result, radiograph, device=device)
    capture_path = _save(capture, spool)
    reports: dict[SrStorage, tuple[Dataset, str]] = {}
    objects = []
    for name, destination in destinations.items():
        if destination.sr_storage not in reports:
            report = build_structured_report(
                result, radiograph.header, storage=destination.sr_storage, device=device
            )
            reports[destination.sr_storage] = (report, _save(report, spool))
        report, report_path = reports[destination.sr_storage]
        for dataset, path in ((report, report_path), (capture, capture_path)):
            objects.append(
                OutgoingObject(name, str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), path)
            )
    return objects


def retry_delay(destination: Destination, attempt: int, rng: random.Random) -> timedelta:
    """The wait after failed attempt number ``attempt`` (1 = the first try failed).

    ``backoff_initial_s * 2**(attempt - 1)``, at most ``backoff_max_s``, shortened by a random
    fraction of up to ``backoff_jitter`` (so the delay never exceeds the maximum, and with the
    default jitter each delay is still longer than the one before until the maximum is reached).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    exponent = min(attempt - 1, 64)  # beyond this the maximum has long been reached
    base = min(destination.backoff_max_s, destination.backoff_initial_s * BACKOFF_FACTOR**exponent)
    return timedelta(seconds=base * (1.0 - destination.backoff_jitter * rng.random()))


class DeliverySender:
    """Sends due deliveries, one destination at a time per call.

    Parameters
    ----------
    config
        The node configuration (``node``, ``destinations``, ``delivery``).
    database
        The outbox.
    spool
        Where the result files are.
    rng
        Source of the back-off jitter.
    """

    def __init__(
        self,
        config: NodeConfig,
        database: Database,
        spool: Spool,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
        self._config = config
        self._database = database
        self._spool = spool
        self._rng = rng if rng is not None else random.Random()
        self._stopping = threading.Event()
        self._busy = {name: threading.Lock() for name in config.destinations}

    def stop(self) -> None:
        """Finish the send in progress and stop sending."""
        self._stopping.set()

    def send_due(self, name: str) -> int:
        """Send every delivery to destination ``name`` that is due now.

        One call per destination runs at a time in this process: a call that finds another still
        sending to the same destination returns at once (the scheduler calls again next period).

        Returns
        -------
        int
            How many deliveries were tried.
        """
        destination = self._config.destinations[name]
        busy = self._busy[name]
        if not busy.acquire(blocking=False):
            return 0
        tried = 0
        try:
            while not self._stopping.is_set():
                with self._database.session() as session:
                    delivery = claim_delivery(
                        session, destination=name, lease_seconds=self._config.delivery.lease_seconds
                    )
                if delivery is None:
                    break
                self._send(delivery, destination)
                tried += 1
        finally:
            busy.release()
        return tried

    def _send(self, delivery: Delivery, destination: Destination) -> None:
        outcome = send_file(
            self._spool.path(delivery.spool_path),
            host=destination.host,
            port=destination.port,
            called_ae_title=destination.ae_title,
            calling_ae_title=destination.calling_ae_title or self._config.node.ae_title,
            timeout_s=destination.timeout_s,
        )
        try:
            with self._database.session() as session:
                self._record(session, delivery, destination, outcome, utc_now())
        except LeaseLostError as error:
            log.warning("delivery_lease_lost", delivery_id=delivery.id, error=str(error))

    def _record(
        self,
        session: Session,
        delivery: Delivery,
        destination: Destination,
        outcome: SendOutcome,
        now: datetime,
    ) -> None:
        if outcome.result is SendResult.SENT:
            mark_sent(
                session, delivery, status=outcome.status, detail=outcome.detail or None, now=now
            )
        elif outcome.result is SendResult.PERMANENT:
            mark_dead(
                session, delivery, status=outcome.status, error=f"permanent: {outcome.detail}"
            )
        elif delivery.attempts >= destination.max_attempts:
            mark_dead(
                session,
                delivery,
                status=outcome.status,
                error=f"gave up after {delivery.attempts} attempts: {outcome.detail}",
            )
        else:
            delay = retry_delay(destination, delivery.attempts, self._rng)
            mark_retry(
                session, delivery, retry_at=now + delay, status=outcome.status, error=outcome.detail
            )
