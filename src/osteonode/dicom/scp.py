"""The node's receiving side: a pynetdicom Storage and Verification SCP.

The C-STORE handler's only job is durability: it writes the dataset exactly as the peer encoded it
(``event.encoded_dataset()``, file meta prepended) into the spool, records the Instance and its Job in
the database, commits, and only then answers success. Nothing is decoded here; routing and analysis
happen later in a worker, so a slow model never slows a modality down and a crash between receipt and
analysis loses nothing.

The association policy (called AE title, allow-list of callers with optional source address, maximum
concurrent associations) is checked in one ``EVT_REQUESTED`` handler, the hook pynetdicom provides for
an acceptor to answer an A-ASSOCIATE-RQ itself. Doing every check there, rather than through the AE's
``require_called_aet``/``require_calling_aet`` switches, lets each refusal carry its reason into the log
and into an Event row, and lets an allow-list entry be pinned to a source address.
"""

from __future__ import annotations

import enum
import errno
import io
import ipaddress
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pydicom
import structlog
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event as NetworkEvent
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from osteonode.config import AssociationPolicy, NodeConfig
from osteonode.store.db import Database
from osteonode.store.queue import Receipt, record_event, record_receipt
from osteonode.store.spool import Spool
from osteonode.store.tables import EventKind

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "AssociationRefusal",
    "IngestActivity",
    "RefusalReason",
    "StorageSCP",
    "StoreStatus",
    "check_association",
]

log = structlog.get_logger(__name__)

_MEBIBYTE = 1024 * 1024
#: errno values that mean the disk (or the user's quota) is full: answered as out of resources.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


_UNCOMPRESSED = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
_LOSSLESS_COMPRESSED = (
    RLELossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
)
#: Every transfer syntax pydicom knows, in the node's order of preference. pynetdicom accepts, in a
#: presentation context that proposes several, the first of this list that the peer proposed.
#: Lossless compressed syntaxes come first: a sender that proposes its file's own lossless syntax
#: next to an uncompressed one then sends the file as it is (dcmtk's storescu, for one, proposes
#: Explicit VR Little Endian beside RLE yet cannot decompress RLE). Uncompressed come next and lossy
#: last, so the node never asks a sender to transcode into a lossy syntax it proposed alongside.
ACCEPTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *_LOSSLESS_COMPRESSED,
    *_UNCOMPRESSED,
    *(
        syntax
        for syntax in AllTransferSyntaxes
        if syntax not in _UNCOMPRESSED and syntax not in _LOSSLESS_COMPRESSED
    ),
)


class StoreStatus(enum.IntEnum):
    """C-STORE response statuses the node sends (PS3.4 Table B.2-1)."""

    SUCCESS = 0x0000
    #: Refused: Out of Resources (the spool's disk is below the configured free space).
    OUT_OF_RESOURCES = 0xA700
    #: Error: Cannot understand (the request lacks a usable SOP Instance UID).
    CANNOT_UNDERSTAND = 0xC000
    #: Error in the same 0xCxxx range: the node failed to keep the image (database or file error).
    PROCESSING_FAILURE = 0xC001


class RefusalReason(enum.StrEnum):
    """Why an association request was rejected; recorded on the ``refused`` Event."""

    CALLED_AE_NOT_RECOGNISED = "called_ae_not_recognised"
    CALLING_AE_NOT_RECOGNISED = "calling_ae_not_recognised"
    CALLING_HOST_NOT_ALLOWED = "calling_host_not_allowed"
    TOO_MANY_ASSOCIATIONS = "too_many_associations"


#: A-ASSOCIATE-RJ (result, source, diagnostic) for each reason (PS3.8 Table 9-21).
_REJECT_PARAMETERS: Mapping[RefusalReason, tuple[int, int, int]] = {
    # rejected-permanent, DUL service-user, called-AE-title-not-recognized
    RefusalReason.CALLED_AE_NOT_RECOGNISED: (0x01, 0x01, 0x07),
    # rejected-permanent, DUL service-user, calling-AE-title-not-recognized
    RefusalReason.CALLING_AE_NOT_RECOGNISED: (0x01, 0x01, 0x03),
    # A caller at a source address it is not allowed from is, for DICOM, an unrecognised calling AE.
    RefusalReason.CALLING_HOST_NOT_ALLOWED: (0x01, 0x01, 0x03),
    # rejected-transient, DUL service-provider (presentation), local-limit-exceeded
    RefusalReason.TOO_MANY_ASSOCIATIONS: (0x02, 0x03, 0x02),
}


@dataclass(frozen=True)
class AssociationRefusal:
    """The node's decision to reject an association request.

    Parameters
    ----------
    reason
        The coded reason.
    detail
        A sentence for the log and the Event row.
    """

    reason: RefusalReason
    detail: str

    @property
    def reject_parameters(self) -> tuple[int, int, int]:
        """The A-ASSOCIATE-RJ ``(result, source, diagnostic)`` to send."""
        return _REJECT_PARAMETERS[self.reason]


def check_association(
    policy: AssociationPolicy,
    *,
    node_ae_title: str,
    called_ae_title: str,
    calling_ae_title: str,
    calling_host: str,
    active_associations: int,
    allowed_addresses: Mapping[str, frozenset[str] | None] | None = None,
) -> AssociationRefusal | None:
    """Decide whether the node accepts an association request.

    Parameters
    ----------
    policy
        The configured association policy.
    node_ae_title
        The node's own AE title.
    called_ae_title, calling_ae_title
        The titles in the A-ASSOCIATE-RQ (surrounding spaces are ignored; titles are case-sensitive
        as PS3.5 defines them).
    calling_host
        The peer's IP address.
    active_associations
        Acceptor associations open now, this one included.
    allowed_addresses
        The allow-list with host names resolved: calling AE title -> addresses it may call from, or
        ``None`` for any address. Defaults to the policy's entries taken literally.

    Returns
    -------
    AssociationRefusal or None
        ``None`` when the request is accepted.
    """
    called = called_ae_title.strip()
    calling = calling_ae_title.strip()
    if policy.require_called_ae and called != node_ae_title.strip():
        return AssociationRefusal(
            RefusalReason.CALLED_AE_NOT_RECOGNISED,
            f"called AE title {called!r} is not this node's {node_ae_title.strip()!r}",
        )
    if allowed_addresses is None:
        allowed_addresses = _literal_allow_list(policy)
    if allowed_addresses:
        if calling not in allowed_addresses:
            return AssociationRefusal(
                RefusalReason.CALLING_AE_NOT_RECOGNISED,
                f"calling AE title {calling!r} is not in association.allowed_callers",
            )
        addresses = allowed_addresses[calling]
        if addresses is not None and _normalise_address(calling_host) not in addresses:
            return AssociationRefusal(
                RefusalReason.CALLING_HOST_NOT_ALLOWED,
                f"calling AE title {calling!r} is not allowed from {calling_host}",
            )
    if active_associations > policy.max_associations:
        return AssociationRefusal(
            RefusalReason.TOO_MANY_ASSOCIATIONS,
            f"{active_associations - 1} associations already open "
            f"(association.max_associations = {policy.max_associations})",
        )
    return None


def resolve_allow_list(policy: AssociationPolicy) -> dict[str, frozenset[str] | None]:
    """The allow-list with each entry's host resolved to its IP addresses.

    Entries with the same AE title merge; an entry without a host allows that title from anywhere.

    Parameters
    ----------
    policy
        The configured association policy.

    Returns
    -------
    dict
        Calling AE title -> allowed addresses, or ``None`` for any address.

    Raises
    ------
    ValueError
        If a host name cannot be resolved (the node refuses to start with an allow-list it cannot
        enforce).
    """
    allowed: dict[str, frozenset[str] | None] = {}
    for caller in policy.allowed_callers:
        title = caller.ae_title.strip()
        if caller.host is None or title in allowed and allowed[title] is None:
            allowed[title] = None
            continue
        try:
            infos = socket.getaddrinfo(caller.host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ValueError(
                f"association.allowed_callers: host {caller.host!r} of {title!r} "
                f"cannot be resolved: {error.strerror}"
            ) from error
        addresses = frozenset(_normalise_address(str(info[4][0])) for info in infos)
        allowed[title] = addresses | (allowed.get(title) or frozenset())
    return allowed


def _literal_allow_list(policy: AssociationPolicy) -> dict[str, frozenset[str] | None]:
    allowed: dict[str, frozenset[str] | None] = {}
    for caller in policy.allowed_callers:
        title = caller.ae_title.strip()
        if caller.host is None or title in allowed and allowed[title] is None:
            allowed[title] = None
        else:
            allowed[title] = frozenset({_normalise_address(caller.host)}) | (
                allowed.get(title) or frozenset()
            )
    return allowed


def _normalise_address(host: str) -> str:
    """One spelling per address, so ``::ffff:127.0.0.1`` and ``127.0.0.1`` compare equal."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class IngestActivity:
    """When the SCP last began storing an image, so that workers in its process can give way.

    Receiving is what a sender waits for; routing and analysis can wait. Workers sharing the
    process (and its interpreter lock, disk and SQLite write lock) with the SCP hold back while
    images are arriving, but never longer than a bound, so a node that receives all day still
    analyses.

    Parameters
    ----------
    quiet_s
        Time without a new C-STORE after which receiving counts as idle.
    """

    def __init__(self, quiet_s: float = 0.25) -> None:
        if quiet_s <= 0:
            raise ValueError(f"quiet_s must be positive, got {quiet_s}")
        self._quiet_s = quiet_s
        self._last_store = float("-inf")

    def note_store(self) -> None:
        """Record that a C-STORE is being handled now."""
        self._last_store = time.monotonic()

    def wait_until_quiet(self, max_wait_s: float, stop: threading.Event) -> None:
        """Return once receiving has been idle for ``quiet_s``, after ``max_wait_s``, or on ``stop``."""
        deadline = time.monotonic() + max_wait_s
        while not stop.is_set():
            now = time.monotonic()
            quiet_in = self._last_store + self._quiet_s - now
            if quiet_in <= 0 or now >= deadline:
                return
            stop.wait(min(quiet_in, deadline - now))


class StorageSCP:
    """The node's DICOM service: Verification and Storage SCP for every storage SOP class.

    Every storage SOP class pynetdicom knows is accepted in every transfer syntax pydicom knows
    (uncompressed, deflated, RLE, JPEG, JPEG-LS, JPEG 2000, HTJ2K, MPEG/HEVC), with no limit on the
    PDU size the peer may send.

    Parameters
    ----------
    config
        The node configuration (``node``, ``association`` and ``storage`` sections are used).
    database
        Where Instance, Job and Event rows are written.
    spool
        Where received files are kept.

    Raises
    ------
    ValueError
        If an allow-list host name cannot be resolved.
    """

    def __init__(self, config: NodeConfig, database: Database, spool: Spool) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
        self._config = config
        self._database = database
        self._spool = spool
        self._allowed = resolve_allow_list(config.association)
        self._min_free_bytes = config.storage.min_free_mb * _MEBIBYTE
        self._server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()
        #: Lets workers in this process give way while images arrive.
        self.activity = IngestActivity()
        self._ae = self._build_ae()

    def _build_ae(self) -> AE:
        policy = self._config.association
        ae = AE(ae_title=self._config.node.ae_title)
        # The policy is enforced in _on_requested, with logged reasons; pynetdicom's own checks
        # would reject silently first.
        ae.require_called_aet = False
        ae.require_calling_aet = []
        # pynetdicom's limit stays one above ours so that our handler, not pynetdicom, answers.
        ae.maximum_associations = policy.max_associations + 1
        ae.maximum_pdu_size = 0
        ae.acse_timeout = policy.acse_timeout_s
        ae.dimse_timeout = policy.dimse_timeout_s
        ae.network_timeout = policy.network_timeout_s
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
        return ae

    @property
    def port(self) -> int:
        """The TCP port the service listens on (the bound one when the configured port is 0)."""
        if self._server is None:
            return self._config.node.port
        return int(self._server.server_address[1])

    @property
    def is_running(self) -> bool:
        """Whether the service accepts associations."""
        return self._server is not None

    def start(self) -> None:
        """Start listening (in background threads).

        Raises
        ------
        RuntimeError
            If the service is already running.
        OSError
            If the address cannot be bound.
        """
        with self._lock:
            if self._server is not None:
                raise RuntimeError("the storage SCP is already running")
            node = self._config.node
            self._server = self._ae.start_server(
                (node.host, node.port),
                block=False,
                evt_handlers=[
                    (evt.EVT_REQUESTED, self._on_requested),
                    (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_C_STORE, self._on_store),
                ],
            )
        log.info("scp_listening", ae_title=node.ae_title, host=node.host, port=self.port)

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting associations, let open ones finish, then abort what is left.

        An image whose C-STORE is aborted was never acknowledged, so the sender keeps it.

        Parameters
        ----------
        grace_s
            How long open associations may take to finish.
        """
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        # Closes the listening socket; each open association runs on in its own thread.
        server.shutdown()
        deadline = time.monotonic() + grace_s
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        remaining = server.active_associations
        for association in remaining:
            association.abort()
        self._ae.shutdown()
        log.info("scp_stopped", aborted_associations=len(remaining))

    # Event handlers: pynetdicom calls them in the association's thread.

    def _on_requested(self, event: NetworkEvent) -> None:
        association = event.assoc
        request = association.requestor.primitive
        calling_host = str(association.requestor.address)
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        active = sum(1 for other in association.ae.active_associations if other.is_acceptor)
        refusal = check_association(
            self._config.association,
            node_ae_title=self._config.node.ae_title,
            called_ae_title=called,
            calling_ae_title=calling,
            calling_host=calling_host,
            active_associations=active,
            allowed_addresses=self._allowed,
        )
        if refusal is None:
            log.info("association_accepted", calling_ae=calling, calling_host=calling_host)
            return
        association.acse.send_reject(*refusal.reject_parameters)
        log.warning(
            "association_refused",
            reason=refusal.reason.value,
            detail=refusal.detail,
            calling_ae=calling,
            called_ae=called,
            calling_host=calling_host,
        )
        self._record_refusal(
            f"association refused: {refusal.detail}",
            reason=refusal.reason.value,
            calling_ae=calling,
            called_ae=called,
            calling_host=calling_host,
        )
        # As pynetdicom does after its own rejections: wait until the DUL has sent the A-ASSOCIATE-RJ
        # and the peer has closed (or the ARTIM timer expired); otherwise the reactor closes the
        # socket at once and the peer may see an abort instead of the reason.
        association.kill()

    def _on_echo(self, event: NetworkEvent) -> int:
        log.info("echo", calling_ae=str(event.assoc.requestor.ae_title).strip())
        return StoreStatus.SUCCESS

    def _on_store(self, event: NetworkEvent) -> int:
        try:
            return self._store(event)
        except Exception as error:  # any failure is a status, never a crash
            out_of_space = isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS
            status = StoreStatus.OUT_OF_RESOURCES if out_of_space else StoreStatus.PROCESSING_FAILURE
            log.exception(
                "store_failed",
                status=f"0x{status:04X}",
                sop_instance_uid=str(getattr(event.request, "AffectedSOPInstanceUID", "")),
                error=f"{type(error).__name__}: {error}",
            )
            return status

    def _store(self, event: NetworkEvent) -> int:
        self.activity.note_store()
        received_at = datetime.now(UTC)
        request = event.request
        association = event.assoc
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "").strip()
        sop_class_uid = str(request.AffectedSOPClassUID or "").strip()
        calling_ae = str(association.requestor.ae_title).strip()
        calling_host = str(association.requestor.address)
        if not UID(sop_instance_uid).is_valid:
            log.warning(
                "store_not_understood",
                reason="missing or invalid Affected SOP Instance UID",
                calling_ae=calling_ae,
            )
            return StoreStatus.CANNOT_UNDERSTAND
        encoded = event.encoded_dataset(include_meta=True)
        free_bytes = self._spool.free_bytes()
        if free_bytes - len(encoded) < self._min_free_bytes:
            detail = (
                f"free space {free_bytes // _MEBIBYTE} MiB minus this image "
                f"({len(encoded) // _MEBIBYTE} MiB) is below storage.min_free_mb "
                f"= {self._config.storage.min_free_mb}"
            )
            log.warning(
                "store_refused_low_disk",
                detail=detail,
                sop_instance_uid=sop_instance_uid,
                calling_ae=calling_ae,
            )
            self._record_refusal(
                f"C-STORE refused: {detail}",
                reason="low_disk_space",
                sop_instance_uid=sop_instance_uid,
                calling_ae=calling_ae,
                calling_host=calling_host,
            )
            return StoreStatus.OUT_OF_RESOURCES
        spool_path = self._spool.store_incoming(sop_instance_uid, encoded)
        study_uid, series_uid, modality = _header_identity(encoded)
        receipt = Receipt(
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=str(event.context.transfer_syntax),
            spool_path=spool_path,
            size_bytes=len(encoded),
            calling_ae=calling_ae,
            calling_host=calling_host,
            called_ae=str(association.acceptor.ae_title).strip(),
            received_at=received_at,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            modality=modality,
        )
        try:
            with self._database.session() as session:
                outcome = record_receipt(
                    session, receipt, max_attempts=self._config.workers.max_attempts
                )
        except Exception:
            # Not acknowledged, so the sender keeps the image; the file would only be an orphan.
            self._spool.delete(spool_path)
            raise
        if outcome.is_duplicate:
            # The instance is stored once; this copy's receipt is counted in the database.
            self._spool.delete(spool_path)
        return StoreStatus.SUCCESS

    def _record_refusal(self, message: str, **details: str) -> None:
        # A refusal must be answered even when the database is unavailable: log, do not raise.
        try:
            with self._database.session() as session:
                record_event(session, EventKind.REFUSED, message, **details)
        except Exception as error:  # noqa: BLE001 - refusing must not depend on the database
            log.error("refusal_not_recorded", error=f"{type(error).__name__}: {error}")


#: The header attributes kept on the Instance row, so ``status`` can show them without the file.
_IDENTITY_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality")


def _header_identity(encoded: bytes) -> tuple[str | None, str | None, str | None]:
    """Study and Series Instance UID and Modality from a received file's header, where usable.

    Only these three elements are parsed (never the pixels). A missing, malformed or over-long value
    is kept as None: the image is stored all the same, and routing later gives the reason.
    """
    try:
        header = pydicom.dcmread(
            io.BytesIO(encoded), stop_before_pixels=True, specific_tags=list(_IDENTITY_TAGS)
        )
        study, series, modality = (
            str(header.get(keyword, "") or "").strip() for keyword in _IDENTITY_TAGS
        )
    except Exception as error:  # noqa: BLE001 - a bad header must not cost the sender its image
        log.debug("store_header_unread", error=f"{type(error).__name__}: {error}")
        return None, None, None
    return (
        study if UID(study).is_valid else None,
        series if UID(series).is_valid else None,
        modality if 0 < len(modality) <= 16 else None,
    )
