"""The node's sending side: C-STORE files to a destination and say what became of each.

Every outcome is one of four kinds, because that is all the outbox needs to decide:

* ``sent``: the destination answered success or a warning (PS3.4 Table B.2-1: 0x0000, 0x0001,
  0x0107, 0x0116, 0xBxxx), or 0x0111 (duplicate SOP instance: it holds an object with this UID
  already, and only the node makes objects with the node's UIDs); the object is stored there.
* ``unconfirmed``: the whole object went (its last data fragment reached the network) but no
  answer came back: the association was aborted or the answer did not come in time. The
  destination may have stored it. Sending it again is safe, because the object keeps its UIDs
  and a PACS recognises an instance it already holds.
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

With a TLS context (:func:`osteonode.dicom.tls.client_context`) the association runs over DICOM TLS.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import structlog
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event as NetworkEvent
from pynetdicom.sop_class import Verification

__all__ = [
    "DUPLICATE_SOP_INSTANCE",
    "SendOutcome",
    "SendResult",
    "classify_rejection",
    "classify_store_status",
    "echo",
    "ends_a_data_set",
    "send_file",
    "send_files",
]

log = structlog.get_logger(__name__)

#: A-ASSOCIATE-RJ result "rejected-transient" (PS3.8 section 7.1.1.9).
_REJECTED_TRANSIENT = 0x02
#: Failure statuses that describe a momentary condition of the peer.
_TRANSIENT_FAILURES = frozenset({0x0110, 0x0210, 0x0213})
#: Success-with-warning statuses of the Storage service class besides 0xBxxx.
_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})
#: Duplicate SOP instance (PS3.7 Annex C): the destination holds an instance with this UID.
DUPLICATE_SOP_INSTANCE = 0x0111
#: P-DATA-TF PDU type, and the message control header of a data set's last fragment (PS3.8 E.2).
_P_DATA_TF = 0x04
_LAST_DATA_SET_FRAGMENT = 0x02


class SendResult(enum.StrEnum):
    """What became of one C-STORE, as far as retrying is concerned."""

    SENT = "sent"
    UNCONFIRMED = "unconfirmed"
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
    if (
        status in (0x0000, DUPLICATE_SOP_INSTANCE)
        or status in _WARNINGS
        or status & 0xF000 == 0xB000
    ):
        return SendResult.SENT
    if status & 0xFF00 == 0xA700 or status in _TRANSIENT_FAILURES:
        return SendResult.TRANSIENT
    return SendResult.PERMANENT


def classify_rejection(result: int) -> SendResult:
    """Classify an A-ASSOCIATE-RJ by its result: rejected-transient is retried, the rest is not."""
    return SendResult.TRANSIENT if result == _REJECTED_TRANSIENT else SendResult.PERMANENT


def ends_a_data_set(data: bytes) -> bool:
    """Whether encoded PDU bytes carry the last fragment of a message's data set.

    Parameters
    ----------
    data
        One encoded PDU, as pynetdicom writes it to the socket.
    """
    if len(data) < 6 or data[0] != _P_DATA_TF:
        return False
    offset = 6
    while offset + 6 <= len(data):
        item_length = int.from_bytes(data[offset : offset + 4], "big")
        # Item: length (4 bytes), presentation context ID (1), message control header (1), data.
        if data[offset + 5] & 0x03 == _LAST_DATA_SET_FRAGMENT:
            return True
        offset += 4 + item_length
    return False


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
    tls: ssl.SSLContext | None = None,
) -> SendOutcome:
    """C-STORE one DICOM file in its own association and classify the outcome.

    :func:`send_files` with one file; the parameters are the same.
    """
    if not isinstance(path, Path):
        raise TypeError(f"path must be a pathlib.Path, got {type(path).__name__}")
    (outcome,) = send_files(
        [path],
        host=host,
        port=port,
        called_ae_title=called_ae_title,
        calling_ae_title=calling_ae_title,
        timeout_s=timeout_s,
        tls=tls,
    )
    return outcome


def send_files(
    paths: Sequence[Path],
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    timeout_s: float = 60.0,
    tls: ssl.SSLContext | None = None,
) -> list[SendOutcome]:
    """C-STORE DICOM files in one association and classify each outcome.

    One association for all the objects of a result saves an association set-up per object (a
    TCP handshake, A-ASSOCIATE and A-RELEASE round trips, and the peer's per-association work).

    Parameters
    ----------
    paths
        The Part 10 files to send, in order.
    host, port
        The destination's address.
    called_ae_title
        The destination's AE title.
    calling_ae_title
        The AE title the node calls from.
    timeout_s
        Connection, ACSE, DIMSE and network timeout.
    tls
        Send over DICOM TLS with this client context (the destination's certificate is checked
        against ``host``).

    Returns
    -------
    list of SendOutcome
        One per file, in order. Never raises for a network or peer failure; those are outcomes: a
        file that cannot be read or whose SOP class the peer refuses fails alone, an association
        that does not come up fails every file, the files after one that broke an association go
        in a new one, and an object whose whole data set went before the answer was lost is
        ``UNCONFIRMED``.
    """
    if isinstance(paths, (str, Path)) or not all(isinstance(path, Path) for path in paths):
        raise TypeError("paths must be a sequence of pathlib.Path")
    if not paths:
        raise ValueError("paths must name at least one file")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext or None, got {type(tls).__name__}")
    outcomes: list[SendOutcome | None] = [None] * len(paths)
    datasets: dict[int, Dataset] = {}
    for index, path in enumerate(paths):
        try:
            dataset = pydicom.dcmread(path)
            UID(dataset.SOPClassUID)
            UID(dataset.file_meta.TransferSyntaxUID)
        except (OSError, InvalidDicomError, AttributeError) as error:
            outcomes[index] = SendOutcome(SendResult.PERMANENT, f"cannot read {path.name}: {error}")
        else:
            datasets[index] = dataset
    if datasets:
        _send_datasets(
            datasets,
            outcomes,
            host=host,
            port=port,
            called_ae_title=called_ae_title,
            calling_ae_title=calling_ae_title,
            timeout_s=timeout_s,
            tls=tls,
        )
    return [outcome for outcome in outcomes if outcome is not None]


def _send_datasets(
    datasets: Mapping[int, Dataset],
    outcomes: list[SendOutcome | None],
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    timeout_s: float,
    tls: ssl.SSLContext | None,
) -> None:
    """Send ``datasets`` in one association, filling ``outcomes`` at their indices."""
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    contexts = {
        (UID(dataset.SOPClassUID), UID(dataset.file_meta.TransferSyntaxUID))
        for dataset in datasets.values()
    }
    for sop_class_uid, file_syntax in sorted(contexts):
        ae.add_requested_context(sop_class_uid, _proposed_syntaxes(file_syntax))
    connected: list[bool] = []
    data_sets_sent: list[bool] = []

    def note_data(event: NetworkEvent) -> None:
        if ends_a_data_set(event.data):
            data_sets_sent.append(True)

    association = ae.associate(
        host,
        port,
        ae_title=called_ae_title,
        tls_args=None if tls is None else (tls, host),
        evt_handlers=[
            (evt.EVT_CONN_OPEN, lambda event: connected.append(True)),
            (evt.EVT_DATA_SENT, note_data),
        ],
    )
    if not association.is_established:
        if association.rejected_contexts and not association.accepted_contexts:
            # The peer accepted the association but none of its presentation contexts, so
            # pynetdicom aborted it: the peer does not take these kinds of object at all.
            failures = {index: _refused_class(dataset, called_ae_title) for index, dataset in datasets.items()}
        else:
            failure = _not_established(
                association, host, port, called_ae_title, connected=bool(connected), tls=tls is not None
            )
            failures = dict.fromkeys(datasets, failure)
        for index, outcome in failures.items():
            outcomes[index] = outcome
        return
    pending = list(datasets)
    try:
        while pending and association.is_established:
            index = pending.pop(0)
            outcomes[index] = _store(
                association, datasets[index], called_ae_title, timeout_s, data_sets_sent
            )
    finally:
        if association.is_established:
            association.release()
    if pending:
        # The association broke after an object (its answer lost, or the peer aborted): the
        # objects after it were never sent, so they go in an association of their own rather
        # than fail for what happened to another object.
        _send_datasets(
            {index: datasets[index] for index in pending},
            outcomes,
            host=host,
            port=port,
            called_ae_title=called_ae_title,
            calling_ae_title=calling_ae_title,
            timeout_s=timeout_s,
            tls=tls,
        )


def _refused_class(dataset: Dataset, called_ae_title: str) -> SendOutcome:
    sop_class_uid = UID(dataset.SOPClassUID)
    return SendOutcome(
        SendResult.PERMANENT,
        f"{called_ae_title} accepts no SOP class {sop_class_uid} ({sop_class_uid.name})",
    )


def _store(
    association: Association,
    dataset: Dataset,
    called_ae_title: str,
    timeout_s: float,
    data_sets_sent: list[bool],
) -> SendOutcome:
    """C-STORE one data set in an open association and classify the outcome.

    ``data_sets_sent`` grows by one each time a whole data set has gone to the peer (the
    association's data-sent handler), which tells a lost answer from an unsent object.
    """
    sop_class_uid = UID(dataset.SOPClassUID)
    if not any(context.abstract_syntax == sop_class_uid for context in association.accepted_contexts):
        return _refused_class(dataset, called_ae_title)
    sent_before = len(data_sets_sent)
    try:
        response = association.send_c_store(dataset)
    except ValueError as error:
        # pynetdicom raises ValueError when no accepted context suits the data set.
        return SendOutcome(
            SendResult.PERMANENT, f"{called_ae_title} cannot take this object: {error}"
        )
    if "Status" not in response:
        reason = "association aborted" if association.is_aborted else "no response"
        if len(data_sets_sent) > sent_before:
            return SendOutcome(
                SendResult.UNCONFIRMED,
                f"{reason} from {called_ae_title} after the whole object was sent: "
                "it may have been stored",
            )
        return SendOutcome(
            SendResult.TRANSIENT, f"{reason} from {called_ae_title} within {timeout_s:g} s"
        )
    status = int(response.Status)
    comment = str(response.get("ErrorComment", "") or "").strip()
    detail = f"status 0x{status:04X}" + (f": {comment}" if comment else "")
    result = classify_store_status(status)
    if result is SendResult.SENT and status == 0x0000:
        detail = comment
    elif status == DUPLICATE_SOP_INSTANCE:
        detail = f"{called_ae_title} holds this instance already ({detail})"
    return SendOutcome(result, detail, status)


def echo(
    *,
    host: str,
    port: int,
    called_ae_title: str,
    calling_ae_title: str,
    timeout_s: float = 60.0,
    tls: ssl.SSLContext | None = None,
) -> SendOutcome:
    """C-ECHO a destination the way reports are sent to it: same AE titles, address, timeouts, TLS.

    Parameters
    ----------
    host, port, called_ae_title, calling_ae_title, timeout_s, tls
        As for :func:`send_file`.

    Returns
    -------
    SendOutcome
        ``sent`` when the destination answered the C-ECHO with success; otherwise why not,
        classified as :func:`send_file` classifies the same failure.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if tls is not None and not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext or None, got {type(tls).__name__}")
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    ae.add_requested_context(Verification)
    connected: list[bool] = []
    association = ae.associate(
        host,
        port,
        ae_title=called_ae_title,
        tls_args=None if tls is None else (tls, host),
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))],
    )
    if not association.is_established:
        return _not_established(
            association, host, port, called_ae_title, connected=bool(connected), tls=tls is not None
        )
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
    association: Association,
    host: str,
    port: int,
    called_ae_title: str,
    *,
    connected: bool,
    tls: bool,
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
        # Over TLS the connection counts as open only after the handshake.
        failed = "refused, unreachable, timed out or TLS handshake failed" if tls else (
            "refused, unreachable or timed out"
        )
        return SendOutcome(SendResult.TRANSIENT, f"no connection to {host}:{port} ({failed})")
    if response is None:
        return SendOutcome(
            SendResult.TRANSIENT,
            f"{called_ae_title} at {host}:{port} closed the connection without answering the association request",
        )
    return SendOutcome(
        SendResult.TRANSIENT, f"association with {called_ae_title} aborted or timed out"
    )
