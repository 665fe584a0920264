"""The node's receiving side: a pynetdicom Storage and Verification SCP.

The C-STORE handler's only job is durability: it writes the dataset exactly as the peer encoded it
(``event.encoded_dataset()``, file meta prepended) into the spool, records the Instance and its Job in
the database, commits, and only then answers success. Nothing is decoded here; routing and analysis
happen later in a worker, so a slow model never slows a modality down and a crash between receipt and
analysis loses nothing.

The association policy (:mod:`osteonode.dicom.admission`: called AE title, allow-list of callers with
optional source address or network, total and per-caller limits on established associations) is
checked in one ``EVT_REQUESTED`` handler, the hook pynetdicom provides for an acceptor to answer an
A-ASSOCIATE-RQ itself. Doing every check there, rather than through the AE's
``require_called_aet``/``require_calling_aet`` switches, lets each refusal carry its reason into the log
and into an Event row.

A peer that connects and says nothing must not hold the node: the time allowed for the
A-ASSOCIATE-RQ (``request_timeout_s``) is short and only the ACSE timeout of admitted associations is
the configured one; a TLS handshake runs in the connection's own thread under the same short timeout,
not in the loop that accepts connections; and connections still waiting for their request are capped.
"""

from __future__ import annotations

import enum
import errno
import io
import ssl
import threading
import time
from datetime import UTC, datetime
from typing import Any

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

from osteonode.config import NodeConfig
from osteonode.dicom.admission import Admission, AssociationRefusal, RefusalReason
from osteonode.dicom.tls import server_context
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


class IngestActivity:
    """Whether images are arriving at the SCP, so that workers in its process can give way.

    Receiving is what a sender waits for; routing and analysis can wait. Workers sharing the
    process (and its interpreter lock, disk and SQLite write lock) with the SCP hold back while
    images are arriving, but never longer than a bound, so a node that receives all day still
    analyses. Receiving counts as idle once every association that stored an image has closed (a
    sender with one film releases at once, so its film is analysed without delay), or when no
    C-STORE has begun for ``quiet_s`` (a sender that keeps its association open).

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
        self._last_close = float("-inf")
        self._storing: set[object] = set()
        self._changed = threading.Condition()

    def note_store(self, association: object | None = None) -> None:
        """Record that a C-STORE is being handled now, on ``association`` when given."""
        with self._changed:
            self._last_store = time.monotonic()
            if association is not None:
                self._storing.add(association)

    def note_closed(self, association: object) -> None:
        """Record that an association ended; once no storing one is left, receiving is idle."""
        with self._changed:
            if association in self._storing:
                self._storing.discard(association)
                self._last_close = time.monotonic()
                self._changed.notify_all()

    def wait_until_quiet(self, max_wait_s: float, stop: threading.Event) -> None:
        """Return once receiving is idle, after ``max_wait_s``, or (within ``quiet_s``) on ``stop``."""
        deadline = time.monotonic() + max_wait_s
        with self._changed:
            while not stop.is_set():
                now = time.monotonic()
                quiet_in = self._last_store + self._quiet_s - now
                all_closed = not self._storing and self._last_close >= self._last_store
                if quiet_in <= 0 or all_closed or now >= deadline:
                    return
                self._changed.wait(min(quiet_in, deadline - now))


class _GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, changed so that a slow or idle peer cannot stall the node.

    * pynetdicom shakes hands with a TLS client in the loop that accepts connections, so one client
      that connects and stays silent holds up every other; here the handshake runs in the
      connection's own thread, within ``handshake_timeout_s``.
    * A connection that has not sent its A-ASSOCIATE-RQ yet is closed at once when
      ``max_pending`` such connections are open already.

    The two attributes are set by :class:`StorageSCP` before the server starts serving.
    """

    handshake_timeout_s: float = 5.0
    max_pending: int = 50

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connections accepted whose association thread has not started yet (a TLS handshake may
        # be under way); with the started ones still waiting for their request, they are pending.
        self._starting = 0
        self._starting_lock = threading.Lock()

    def get_request(self) -> tuple[Any, Any]:
        client_socket, address = self.socket.accept()
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(
                client_socket, server_side=True, do_handshake_on_connect=False
            )
        return client_socket, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        waiting = sum(
            1 for association in self.active_associations if association.requestor.primitive is None
        )
        with self._starting_lock:
            pending = self._starting + waiting
            if pending < self.max_pending:
                self._starting += 1
                return True
        log.warning(
            "connection_refused",
            reason="too_many_pending_connections",
            calling_host=str(client_address[0]),
            detail=f"{pending} connections have not sent an association request yet "
            f"(association.max_pending_connections = {self.max_pending})",
        )
        return False

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if isinstance(request, ssl.SSLSocket) and not self._shake_hands(request, client_address):
                return
            super().process_request_thread(request, client_address)
        finally:
            with self._starting_lock:
                self._starting -= 1

    def _shake_hands(self, request: ssl.SSLSocket, client_address: Any) -> bool:
        try:
            request.settimeout(self.handshake_timeout_s)
            request.do_handshake()
            request.settimeout(None)
        except OSError as error:  # ssl.SSLError and socket timeouts are OSErrors
            log.warning(
                "tls_handshake_failed",
                calling_host=str(client_address[0]),
                error=f"{type(error).__name__}: {error}",
            )
            self.shutdown_request(request)
            return False
        return True


class StorageSCP:
    """The node's DICOM service: Verification and Storage SCP for every storage SOP class.

    Every storage SOP class pynetdicom knows is accepted in every transfer syntax pydicom knows
    (uncompressed, deflated, RLE, JPEG, JPEG-LS, JPEG 2000, HTJ2K, MPEG/HEVC), with no limit on the
    PDU size the peer may send.

    Parameters
    ----------
    config
        The node configuration (``node``, ``association``, ``tls`` and ``storage`` sections).
    database
        Where Instance, Job and Event rows are written.
    spool
        Where received files are kept.
    database_ready
        Set once the database's schema is ready; until then the service answers C-ECHO and
        associations, and each C-STORE waits for it (at most the DIMSE timeout, then it is answered
        with a failure and the sender keeps the image). None: the schema is ready now.

    Raises
    ------
    ValueError
        If an allow-list host name cannot be resolved, or the TLS files are unusable
        (:class:`osteonode.dicom.tls.TlsError`).
    """

    def __init__(
        self,
        config: NodeConfig,
        database: Database,
        spool: Spool,
        *,
        database_ready: threading.Event | None = None,
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
        if database_ready is None:
            database_ready = threading.Event()
            database_ready.set()
        self._database_ready = database_ready
        self._config = config
        self._database = database
        self._spool = spool
        self._admission = Admission(
            config.association, config.node.ae_title, is_open=lambda association: association.is_alive()
        )
        self._ssl_context = server_context(config.tls) if config.tls.enabled else None
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
        # pynetdicom counts every connection, waiting or refused, against its limit; ours counts
        # established associations only. Its limit is kept above anything ours admits plus the
        # connections waiting for their request and refused ones closing, so that our handler
        # answers; it remains a backstop on the number of threads.
        ae.maximum_associations = policy.max_associations + 2 * policy.max_pending_connections
        ae.maximum_pdu_size = 0
        # Until the A-ASSOCIATE-RQ arrives the ACSE (and ARTIM) timeout is the short request
        # timeout; _on_requested gives an admitted association the configured ACSE timeout.
        ae.acse_timeout = policy.request_timeout_s
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
            server = self._ae.make_server(
                (node.host, node.port),
                ssl_context=self._ssl_context,
                evt_handlers=[
                    (evt.EVT_REQUESTED, self._on_requested),
                    (evt.EVT_CONN_CLOSE, self._on_closed),
                    (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_C_STORE, self._on_store),
                ],
                server_class=_GuardedAssociationServer,
            )
            assert isinstance(server, _GuardedAssociationServer)
            server.handshake_timeout_s = self._config.association.request_timeout_s
            server.max_pending = self._config.association.max_pending_connections
            # What AE.start_server(block=False) does, with our server class: serve in a daemon
            # thread and register the server with the AE, whose shutdown() stops it.
            threading.Thread(
                target=server.serve_forever, name=f"AcceptorServer@{node.port}", daemon=True
            ).start()
            self._ae._servers.append(server)
            self._server = server
        log.info(
            "scp_listening",
            ae_title=node.ae_title,
            host=node.host,
            port=self.port,
            tls=self._ssl_context is not None,
        )

    def wait_until_idle(self, quiet_s: float, max_wait_s: float) -> None:
        """Return once no association has been open for ``quiet_s`` seconds, or after ``max_wait_s``.

        Parameters
        ----------
        quiet_s
            How long the service must have had no open association.
        max_wait_s
            The longest wait, however busy the service is.
        """
        if quiet_s <= 0 or max_wait_s < 0:
            raise ValueError(f"quiet_s must be positive and max_wait_s not negative, got {quiet_s}, {max_wait_s}")
        started = last_busy = time.monotonic()
        while (now := time.monotonic()) - last_busy < quiet_s and now - started < max_wait_s:
            server = self._server
            if server is not None and server.active_associations:
                last_busy = now
            time.sleep(0.01)

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
        refusal = self._admission.request(
            association, called_ae_title=called, calling_ae_title=calling, calling_host=calling_host
        )
        if refusal is None:
            association.acse_timeout = self._config.association.acse_timeout_s
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

    def _on_closed(self, event: NetworkEvent) -> None:
        self._admission.end(event.assoc)
        self.activity.note_closed(event.assoc)

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
        self.activity.note_store(event.assoc)
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
            self._wait_for_database()
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
            self._wait_for_database()
            with self._database.session() as session:
                record_event(session, EventKind.REFUSED, message, **details)
        except Exception as error:  # noqa: BLE001 - refusing must not depend on the database
            log.error("refusal_not_recorded", error=f"{type(error).__name__}: {error}")

    def _wait_for_database(self) -> None:
        if not self._database_ready.wait(self._config.association.dimse_timeout_s):
            raise RuntimeError("the database schema was not ready within the DIMSE timeout")


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
