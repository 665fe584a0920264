"""Workers in-process, on SQLite and PostgreSQL: routing, running a pipeline, retries and leases."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
from fixtures.peers import make_radiograph
from sqlalchemy import select

from osteonode.config import NodeConfig
from osteonode.dicom.scp import IngestActivity
from osteonode.imaging.pixels import Radiograph
from osteonode.pipelines.base import (
    Category,
    FindingSite,
    ModelIdentity,
    OutsideIntendedUse,
    Result,
    SourceImage,
)
from osteonode.store.db import Database
from osteonode.store.queue import Receipt, claim_job, record_receipt
from osteonode.store.spool import Spool
from osteonode.store.tables import Event, Job
from osteonode.store.tables import Result as ResultRow
from osteonode.worker import Worker

STAND_IN = ModelIdentity("stand-in", "1", "none", synthetic=True, diagnostic_use=False)


class RowCountingPipeline:
    """A stand-in pipeline: its 'T-score' is minus the image's row count divided by 100."""

    name = "lumbar"

    def run(self, radiograph: Radiograph) -> Result:
        rows, columns = radiograph.shape
        uids = radiograph.uids
        source = SourceImage(uids.sop_class_uid, uids.sop_instance_uid, uids.study_instance_uid,
                             uids.series_instance_uid, rows, columns)
        return Result(self.name, source, STAND_IN, evaluable=True, site=FindingSite.LUMBAR_SPINE,
                      category=Category.OSTEOPOROSIS, t_score=-rows / 100)


class BrokenPipeline:
    name = "lumbar"

    def run(self, radiograph: Radiograph) -> Result:
        raise RuntimeError("model weights missing")


class SkippingPipeline:
    name = "lumbar"

    def run(self, radiograph: Radiograph) -> Result:
        raise OutsideIntendedUse("patient aged 30; the method is for ages 50 and over")


#: The shipped configuration less the AP lumbar classifier: a frontal lumbar film has one job.
LUMBAR_ONLY = NodeConfig.model_validate({"pipelines": {"lumbar_ap": {"enabled": False}}})


def receive(database: Database, spool: Spool, image: Path) -> str:
    """Put an image in the spool and the queue as the SCP would."""
    ds = pydicom.dcmread(image, stop_before_pixels=True)
    relative = spool.store_incoming(ds.SOPInstanceUID, image.read_bytes())
    with database.session() as session:
        record_receipt(
            session,
            Receipt(
                sop_instance_uid=ds.SOPInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                spool_path=relative,
                size_bytes=image.stat().st_size,
                calling_ae="MODALITY",
                called_ae="OSTEONODE",
            ),
            max_attempts=2,
        )
    return str(ds.SOPInstanceUID)


def job_states(database: Database) -> list[tuple[str, str | None, str | None]]:
    with database.session() as session:
        return [(str(job.state), job.pipeline, job.error) for job in session.scalars(select(Job))]


def test_routed_job_waits_queued_when_its_pipeline_is_not_installed(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    worker = Worker(LUMBAR_ONLY, database, spool, pipelines={})

    assert worker.process_next() is True
    assert worker.process_next() is False  # a queued job is not for this worker
    assert job_states(database) == [("queued", "lumbar", None)]


class ClassifierStandIn(RowCountingPipeline):
    name = "lumbar_ap"


def test_a_film_routed_to_two_pipelines_gets_a_job_and_a_result_from_each(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    bmd_only = Worker(NodeConfig(), database, spool, pipelines={"lumbar": RowCountingPipeline()})
    assert bmd_only.process_next() is True
    assert bmd_only.process_next() is False  # the classifier's job waits for a worker that has it
    assert job_states(database) == [("done", "lumbar", None), ("queued", "lumbar_ap", None)]
    classifier = Worker(NodeConfig(), database, spool, pipelines={"lumbar_ap": ClassifierStandIn()})
    assert classifier.process_next() is True
    assert job_states(database) == [("done", "lumbar", None), ("done", "lumbar_ap", None)]
    with database.session() as session:
        results = session.scalars(select(ResultRow).order_by(ResultRow.id)).all()
        assert [row.pipeline for row in results] == ["lumbar", "lumbar_ap"]
        assert len({row.instance_id for row in results}) == 1


def test_installed_pipeline_runs_right_after_routing_and_its_result_is_kept(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm", rows=300))
    worker = Worker(LUMBAR_ONLY, database, spool, pipelines={"lumbar": RowCountingPipeline()})

    worker.process_next()

    assert job_states(database) == [("done", "lumbar", None)]
    with database.session() as session:
        stored = session.scalars(select(ResultRow)).one()
        assert (stored.pipeline, stored.model_name, stored.model_version) == ("lumbar", "stand-in", "1")
        assert stored.payload["t_score"] == -3.0
        assert Result.from_dict(stored.payload).category is Category.OSTEOPOROSIS


def test_film_outside_intended_use_is_skipped_with_the_pipeline_reason(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    worker = Worker(LUMBAR_ONLY, database, spool, pipelines={"lumbar": SkippingPipeline()})

    worker.process_next()

    with database.session() as session:
        job = session.scalars(select(Job)).one()
        assert (str(job.state), job.skip_reason) == ("skipped", "outside_intended_use")
        assert "aged 30" in job.skip_detail


def test_image_the_decoder_refuses_is_skipped_with_the_decoder_reason(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    image = make_radiograph(tmp_path / "spine.dcm")
    ds = pydicom.dcmread(image)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # the header promises more pixels
    ds.save_as(image)
    receive(database, spool, image)
    worker = Worker(LUMBAR_ONLY, database, spool, pipelines={"lumbar": RowCountingPipeline()})

    worker.process_next()

    with database.session() as session:
        job = session.scalars(select(Job)).one()
        assert (str(job.state), job.skip_reason) == ("skipped", "image_error")
        assert "truncated_pixel_data" in job.skip_detail


def test_failing_pipeline_is_retried_then_marked_failed_with_its_error(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    worker = Worker(LUMBAR_ONLY, database, spool, pipelines={"lumbar": BrokenPipeline()})

    while worker.process_next():
        pass

    [(state, pipeline, error)] = job_states(database)
    assert (state, pipeline) == ("failed", "lumbar")
    assert error == "RuntimeError: model weights missing"


def test_job_of_a_dead_worker_is_taken_over_when_its_lease_expires(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    with database.session() as session:
        claim_job(session, worker_id="dead-host:1:worker-0", lease_seconds=0.2, pipelines=())
    worker = Worker(LUMBAR_ONLY, database, spool, pipelines={})

    assert worker.process_next() is False  # the lease still runs
    time.sleep(0.3)
    assert worker.process_next() is True

    assert job_states(database) == [("queued", "lumbar", None)]
    with database.session() as session:
        kinds = [str(kind) for kind in session.scalars(select(Event.kind).order_by(Event.id))]
    assert "lease_expired" in kinds and kinds[-1] == "routed"


def test_worker_thread_stops_promptly_when_asked(database: Database, tmp_path: Path) -> None:
    worker = Worker(LUMBAR_ONLY, database, Spool(tmp_path / "spool"), pipelines={})
    worker.start()

    worker.stop()
    worker.join(5)

    assert not worker.is_alive()


def test_workers_give_way_while_images_arrive_but_only_for_a_bounded_time() -> None:
    activity = IngestActivity(quiet_s=0.2)
    stop = threading.Event()

    started = time.monotonic()
    activity.wait_until_quiet(5.0, stop)
    idle_wait = time.monotonic() - started

    activity.note_store()
    started = time.monotonic()
    activity.wait_until_quiet(5.0, stop)
    quiet_wait = time.monotonic() - started

    activity.note_store()
    started = time.monotonic()
    activity.wait_until_quiet(0.05, stop)
    bounded_wait = time.monotonic() - started

    activity.note_store()
    stop.set()
    started = time.monotonic()
    activity.wait_until_quiet(5.0, stop)
    stopped_wait = time.monotonic() - started

    assert idle_wait < 0.05
    assert 0.15 < quiet_wait < 0.5
    assert bounded_wait < 0.15
    assert stopped_wait < 0.05
