"""The node's sending side: C-STORE one file to a destination and say what became of it.

Every outcome is one of three kinds, because that is all the outbox needs to decide:

* ``sent``: the destination answered success or a warning (PS3.4 Table B.2-1: 0x0000, 0x0001,
  0x0107, 0x0116, 0xBxxx); the object is stored there.
* ``transient``: it may work later, so it is retried with back-off: no connection (refused,
  unreachable, timed out), an association rejected *transient* or aborted, no response in time,
  and the statuses that mean a momentary condition: 0xA7xx (refused: out of resources),
  0x0110 (processing failure), 0x0210 (duplicate invocation), 0x0213 (resource limitation).
* ``permanent``: sending the same thing again cannot succeed until someone changes something, so
  it is dead-lettered at once: an association rejected *permanent* (e.g. calling AE title not
  recognised), no presentation context accepted for the object's SOP class, 0xA9xx (data set
  does not match SOP class), 0xCxxx (cannot understand), and every other failure status
  (0x0122 SOP class not supported, 0x0124 not authorised, ...), and a file that cannot be read.

The outcome keeps the destination's own words: the DIMSE status, its Error Comment, and for a
rejection the A-ASSOCIATE-RJ result, source and reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import pydicom
import structlog
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

__all__ = [
    "SendOutcome",
    "SendResult",
    "classify_rejection",
    "classify_store_status",
    "echo",
    "send_file",
]

log = structlog.get_logger(__name__)

#: A-ASSOCIATE-RJ result "rejected-transient" (PS3.8 section 7.1.1.9).
_REJECTED_TRANSIENT = 0x02
#: Failure statuses that describe a momentary condition of the peer.
_TRANSIENT_FAILURES = frozenset({0x0110, 0x0210, 0x0213})
#: Success-with-warning statuses of the Storage service class besides 0xBxxx.
_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})


class SendResult(enum.StrEnum):
    """What became of one C-STORE, as far as retrying is concerned."""

    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendOutcome:
    """The outcome of sending one file.

    Parameters
    ----------
    result
        Sent, transient failure or permanent failure.
    detail
        What happened, in the destination's words where it gave any; empty for a plain success.
    status
        The C-STORE response status, when the destination answered one.
    """

    result: SendResult
    detail: str = ""
    status: int | None = None

    @property
    def is_sent(self) -> bool:
        """True when the destination has the object."""
        return self.result is SendResult.SENT


def classify_store_status(status: int) -> SendResult:
    """Classify a C-STORE response status (PS3.4 Table B.2-1, PS3.7 Annex C).

    Parameters
    ----------
    status
        The response's Status (0000,0900).

    Returns
    -------
    SendResult
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 0xFFFF:
        raise ValueError(f"status must be an int from 0x0000 to 0xFFFF, got {status!r}")
    if status == 0x0000 or status in _WARNINGS or status & 0xF000 == 0xB000:
        return SendResult.SENT
    if status & 0xFF00 == 0xA700 or status in _TRANSIENT_FAILURES:
        return SendResult.TRANSIENT
    return SendResult.PERMANENT


def classify_rejection(result: int) -> SendResult:
    """Classify an A-ASSOCIATE-RJ by its result: rejected-transient is retried, the rest is not."""
    return SendResult.TRANSIENT if result == _REJECTED_TRANSIENT else SendResult.PERMANENT


def _proposed_syntaxes(file_syntax: UID) -> list[UID]:
    # The file's own syntax first; pynetdicom converts between the uncompressed ones if needed.
    syntaxes = [file_syntax, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    return list(dict.fromkeys(syntaxes))


def send_file(
    path: Path,
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    timeout_s: float = 60.0,
) -> SendOutcome:
    """C-STORE one DICOM file in its own association and classify the outcome.

    Parameters
    ----------
    path
        The Part 10 file to send.
    host, port
        The destination's address.
    called_ae_title
        The destination's AE title.
    calling_ae_title
        The AE title the node calls from.
    timeout_s
        Connection, ACSE, DIMSE and network timeout.

    Returns
    -------
    SendOutcome
        Never raises for a network or peer failure; those are outcomes.
    """
    if not isinstance(path, Path):
        raise TypeError(f"path must be a pathlib.Path, got {type(path).__name__}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    try:
        dataset = pydicom.dcmread(path)
        sop_class_uid = UID(dataset.SOPClassUID)
        file_syntax = UID(dataset.file_meta.TransferSyntaxUID)
    except (OSError, InvalidDicomError, AttributeError) as error:
        return SendOutcome(SendResult.PERMANENT, f"cannot read {path.name}: {error}")
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    ae.add_requested_context(sop_class_uid, _proposed_syntaxes(file_syntax))
    connected: list[bool] = []
    association = ae.associate(
        host,
        port,
        ae_title=called_ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))],
    )
    if not association.is_established:
        if association.rejected_contexts and not association.accepted_contexts:
            # The peer accepted the association but none of its presentation contexts, so
            # pynetdicom aborted it: the peer does not take this kind of object at all.
            return SendOutcome(
                SendResult.PERMANENT,
                f"{called_ae_title} accepts no SOP class {sop_class_uid} ({sop_class_uid.name})",
            )
        return _not_established(association, host, port, called_ae_title, connected=bool(connected))
    try:
        response = association.send_c_store(dataset)
    except ValueError as error:
        # pynetdicom raises ValueError when no accepted context suits the data set.
        return SendOutcome(
            SendResult.PERMANENT, f"{called_ae_title} cannot take this object: {error}"
        )
    finally:
        if association.is_established:
            association.release()
    if "Status" not in response:
        reason = "association aborted" if association.is_aborted else "no response"
        return SendOutcome(
            SendResult.TRANSIENT, f"{reason} from {called_ae_title} within {timeout_s:g} s"
        )
    status = int(response.Status)
    comment = str(response.get("ErrorComment", "") or "").strip()
    detail = f"status 0x{status:04X}" + (f": {comment}" if comment else "")
    result = classify_store_status(status)
    if result is SendResult.SENT and status == 0x0000:
        detail = comment
    return SendOutcome(result, detail, status)


def echo(
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    timeout_s: float = 60.0,
) -> SendOutcome:
    """C-ECHO a destination the way reports are sent to it: same AE titles, address and timeouts.

    Parameters
    ----------
    host, port, called_ae_title, calling_ae_title, timeout_s
        As for :func:`send_file`.

    Returns
    -------
    SendOutcome
        ``sent`` when the destination answered the C-ECHO with success; otherwise why not,
        classified as :func:`send_file` classifies the same failure.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    ae.add_requested_context(Verification)
    connected: list[bool] = []
    association = ae.associate(
        host,
        port,
        ae_title=called_ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))],
    )
    if not association.is_established:
        return _not_established(association, host, port, called_ae_title, connected=bool(connected))
    try:
        response = association.send_c_echo()
    finally:
        association.release()
    if "Status" not in response:
        return SendOutcome(
            SendResult.TRANSIENT, f"no C-ECHO response from {called_ae_title} within {timeout_s:g} s"
        )
    status = int(response.Status)
    if status != 0x0000:
        return SendOutcome(SendResult.PERMANENT, f"C-ECHO answered status 0x{status:04X}", status)
    return SendOutcome(SendResult.SENT, "", status)


def _not_established(
    association: Association, host: str, port: int, called_ae_title: str, *, connected: bool
) -> SendOutcome:
    """The outcome of an association that did not come up."""
    # pynetdicom keeps the peer's A-ASSOCIATE response (accept or reject) on the acceptor.
    response = association.acceptor.primitive
    if association.is_rejected and response is not None:
        detail = (
            f"association rejected by {called_ae_title}: {response.reason_str} "
            f"({response.result_str}, {response.source_str})"
        )
        return SendOutcome(classify_rejection(int(response.result)), detail)
    if not connected:
        return SendOutcome(
            SendResult.TRANSIENT,
            f"no connection to {host}:{port} (refused, unreachable or timed out)",
        )
    if response is None:
        return SendOutcome(
            SendResult.TRANSIENT,
            f"{called_ae_title} at {host}:{port} closed the connection without answering the association request",
        )
    return SendOutcome(
        SendResult.TRANSIENT, f"association with {called_ae_title} aborted or timed out"
    )
