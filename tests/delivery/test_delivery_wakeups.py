"""A committed result reaches the PACS at once, its report and image in one association, although the
sender's safety-net period is ten minutes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
from delivery_standin import StandInLumbarPipeline
from fixtures.peers import free_port, make_radiograph
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from sqlalchemy import select

from osteonode.config import NodeConfig
from osteonode.imaging.pixels import load_radiograph
from osteonode.outbox import DeliverySender, device_info, write_result_objects
from osteonode.store.db import Database
from osteonode.store.deliveries import add_deliveries
from osteonode.store.queue import Receipt, claim_job, mark_done, record_receipt
from osteonode.store.spool import Spool
from osteonode.store.tables import Delivery, DeliveryState, Result, utc_now

SAFETY_NET_S = 600.0


class RecordingPacs:
    """A real pynetdicom Storage SCP that notes which association brought each object."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stored: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="PACS")
        for sop_class in (Comprehensive3DSRStorage, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def _on_store(self, event: evt.Event) -> int:
        with self._lock:
            self.stored.append((id(event.assoc), str(event.request.AffectedSOPClassUID)))
        return 0x0000

    def close(self) -> None:
        self._server.shutdown()


def queue_result(database: Database, spool: Spool, config: NodeConfig, film: Path) -> None:
    """Receive ``film``, analyse it with the stand-in pipeline and commit the result's deliveries."""
    header = pydicom.dcmread(film, stop_before_pixels=True)
    relative = spool.store_incoming(header.SOPInstanceUID, film.read_bytes())
    with database.session() as session:
        record_receipt(
            session,
            Receipt(
                sop_instance_uid=header.SOPInstanceUID,
                sop_class_uid=header.SOPClassUID,
                transfer_syntax_uid=header.file_meta.TransferSyntaxUID,
                spool_path=relative,
                size_bytes=film.stat().st_size,
                calling_ae="MODALITY",
                called_ae="OSTEONODE",
            ),
        )
    with database.session() as session:
        job = claim_job(session, worker_id="worker", lease_seconds=60, pipelines=["lumbar"])
    radiograph = load_radiograph(film)
    outcome = StandInLumbarPipeline().run(radiograph)
    objects = write_result_objects(
        outcome, radiograph, dict(config.destinations), spool=spool, device=device_info(config.node)
    )
    with database.session() as session:
        row = Result(
            job_id=job.id, instance_id=job.instance_id, pipeline="lumbar", payload={},
            created_at=utc_now(),
        )
        session.add(row)
        add_deliveries(session, row, objects)
        mark_done(session, job)


def test_result_reaches_the_pacs_at_once_with_report_and_image_in_one_association(
    database: Database, tmp_path: Path
) -> None:
    pacs = RecordingPacs()
    config = NodeConfig.model_validate(
        {
            "destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.port}},
            "delivery": {"interval_s": SAFETY_NET_S},
        }
    )
    spool = Spool(tmp_path / "spool")
    sender = DeliverySender(config, database, spool)
    sender.start()
    try:
        # The sender's first look finds nothing; from then on only a wake-up can send before the
        # ten-minute safety net.
        time.sleep(1.0)
        queue_result(database, spool, config, make_radiograph(tmp_path / "spine.dcm"))
        deadline = time.monotonic() + 30
        while len(pacs.stored) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sender.stop(grace_s=30)
        pacs.close()

    assert sorted(sop_class for _, sop_class in pacs.stored) == sorted(
        [Comprehensive3DSRStorage, SecondaryCaptureImageStorage]
    )
    assert len({association for association, _ in pacs.stored}) == 1
    with database.session() as session:
        states = session.scalars(select(Delivery.state)).all()
    assert states == [DeliveryState.SENT, DeliveryState.SENT]
