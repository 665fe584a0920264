"""The outbox: deliveries queued with their result, leased, retried with back-off, dead-lettered,
sent again by the operator, purged; report objects per destination; where results go."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from delivery_standin import NOT_EVALUABLE_COMMENT, NOT_EVALUABLE_REASON, StandInLumbarPipeline
from fixtures.peers import free_port, make_radiograph, toml_document
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sqlalchemy import select
from structlog.testing import capture_logs
from typer.testing import CliRunner

from osteonode.cli import app
from osteonode.config import Destination, NodeConfig, SrStorage
from osteonode.imaging.pixels import load_radiograph
from osteonode.outbox import DeliverySender, device_info, retry_delay, write_result_objects
from osteonode.service import Node
from osteonode.store.db import Database
from osteonode.store.deliveries import (
    DeliveryStateError,
    OutgoingObject,
    add_deliveries,
    claim_delivery,
    mark_sent,
    purge_sent_deliveries,
    requeue_delivery,
)
from osteonode.store.queue import LeaseLostError, Receipt, claim_job, mark_done, record_receipt
from osteonode.store.spool import Spool
from osteonode.store.tables import Delivery, DeliveryState, Result, utc_now
from osteonode.worker import Worker

SR_3D = Comprehensive3DSRStorage
SR_COMPREHENSIVE = ComprehensiveSRStorage
SC = SecondaryCaptureImageStorage


def receive(database: Database, spool: Spool, image: Path) -> None:
    """Put an image in the spool and the queue, as the SCP does."""
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
        )


def queued_result(
    database: Database,
    spool: Spool,
    tmp_path: Path,
    destinations: list[str],
    sop_class_uid: str = SR_3D,
) -> list[int]:
    """A finished job whose result has one object queued for each destination (in that order)."""
    receive(database, spool, make_radiograph(tmp_path / f"{generate_uid()}.dcm"))
    with database.session() as session:
        job = claim_job(session, worker_id="w", lease_seconds=60, pipelines=[])
    with database.session() as session:
        mark_done(session, job)
        result = Result(
            job_id=job.id,
            instance_id=job.instance_id,
            pipeline="lumbar",
            payload={},
            created_at=utc_now(),
        )
        session.add(result)
        session.flush()
        objects = []
        for destination in destinations:
            uid = generate_uid()
            objects.append(
                OutgoingObject(
                    destination, uid, sop_class_uid, spool.write_outgoing(uid, b"report")
                )
            )
        return [delivery.id for delivery in add_deliveries(session, result, objects)]


def delivery(database: Database, delivery_id: int) -> Delivery:
    with database.session() as session:
        return session.get(Delivery, delivery_id)


def test_due_delivery_is_claimed_by_one_sender_until_its_lease_expires(database, tmp_path):
    spool = Spool(tmp_path / "spool")
    [pacs_id, research_id] = queued_result(database, spool, tmp_path, ["pacs", "research"])
    now = utc_now()

    with database.session() as session:
        claimed = claim_delivery(session, destination="pacs", lease_seconds=30, now=now)
    with database.session() as session:
        again = claim_delivery(
            session, destination="pacs", lease_seconds=30, now=now + timedelta(seconds=29)
        )
    with database.session() as session:
        taken_over = claim_delivery(
            session, destination="pacs", lease_seconds=30, now=now + timedelta(seconds=31)
        )

    assert (claimed.id, claimed.state, claimed.attempts) == (pacs_id, DeliveryState.SENDING, 1)
    assert again is None
    assert (taken_over.id, taken_over.attempts) == (pacs_id, 2)
    assert delivery(database, research_id).state == DeliveryState.PENDING  # another destination's
    with database.session() as session, pytest.raises(LeaseLostError):
        mark_sent(session, claimed, status=0)  # the first sender lost its claim
    with database.session() as session:
        mark_sent(session, taken_over, status=0)
    assert delivery(database, pacs_id).state == DeliveryState.SENT


def test_back_off_doubles_up_to_its_maximum_and_jitter_only_shortens_it():
    destination = Destination(
        ae_title="PACS",
        host="pacs",
        port=104,
        backoff_initial_s=10,
        backoff_max_s=100,
        backoff_jitter=0.25,
    )
    steady = Destination(
        ae_title="PACS",
        host="pacs",
        port=104,
        backoff_initial_s=10,
        backoff_max_s=100,
        backoff_jitter=0.0,
    )
    rng = random.Random(7)

    assert [retry_delay(steady, n, rng).total_seconds() for n in range(1, 7)] == [
        10,
        20,
        40,
        80,
        100,
        100,
    ]
    for attempt in range(1, 8):
        base = min(100, 10 * 2 ** (attempt - 1))
        delays = [retry_delay(destination, attempt, rng).total_seconds() for _ in range(200)]
        assert 0.75 * base <= min(delays) < max(delays) <= base
    assert retry_delay(destination, 10_000, rng) <= timedelta(seconds=100)


def test_transient_failures_are_retried_until_the_last_attempt_then_dead_lettered(
    database, tmp_path, peer
):
    spool = Spool(tmp_path / "spool")
    busy = peer(0xA700, "out of disk")
    [delivery_id] = queued_result(database, spool, tmp_path, ["pacs"])
    # A real file to send: a film stands in for a report here.
    with database.session() as session:
        film = make_radiograph(tmp_path / "film.dcm")
        row = session.get(Delivery, delivery_id)
        row.spool_path = spool.write_outgoing(generate_uid(), film.read_bytes()).as_posix()
    config = NodeConfig.model_validate(
        {
            "destinations": {
                "pacs": {
                    "ae_title": "PEER",
                    "host": "127.0.0.1",
                    "port": busy.port,
                    "max_attempts": 3,
                    "backoff_initial_s": 0.05,
                    "backoff_max_s": 0.1,
                }
            }
        }
    )
    sender = DeliverySender(config, database, spool, rng=random.Random(1))

    tries = 0
    deadline = time.monotonic() + 10
    while (
        delivery(database, delivery_id).state != DeliveryState.DEAD and time.monotonic() < deadline
    ):
        tries += sender.send_due("pacs")
        time.sleep(0.02)

    dead = delivery(database, delivery_id)
    assert (tries, busy.received, dead.attempts, dead.last_status) == (3, 3, 3, 0xA700)
    assert dead.last_error == "gave up after 3 attempts: status 0xA700: out of disk"
    assert sender.send_due("pacs") == 0


def test_operator_retry_sends_a_dead_delivery_again_with_fresh_attempts_but_never_a_sent_one(
    database, tmp_path
):
    spool = Spool(tmp_path / "spool")
    [dead_id, sent_id] = queued_result(database, spool, tmp_path, ["pacs", "archive"])
    with database.session() as session:
        for row in session.scalars(select(Delivery)):
            row.state = DeliveryState.DEAD if row.id == dead_id else DeliveryState.SENT
            row.attempts = 4

    with database.session() as session:
        requeued = requeue_delivery(session, dead_id)
    with database.session() as session, pytest.raises(DeliveryStateError, match="is sent"):
        requeue_delivery(session, sent_id)
    with database.session() as session, pytest.raises(LookupError):
        requeue_delivery(session, 999)

    assert (requeued.state, requeued.attempts) == (DeliveryState.PENDING, 0)
    with database.session() as session:
        assert claim_delivery(session, destination="pacs", lease_seconds=10).id == dead_id


def test_purge_removes_old_sent_deliveries_and_only_files_nothing_else_needs(database, tmp_path):
    spool = Spool(tmp_path / "spool")
    ids = queued_result(database, spool, tmp_path, ["pacs", "archive"])
    long_ago = utc_now() - timedelta(days=40)
    with database.session() as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        # Both deliveries send the same file; one was sent long ago, the other is dead.
        rows[1].spool_path = rows[0].spool_path
        rows[0].state, rows[0].sent_at = DeliveryState.SENT, long_ago
        rows[1].state = DeliveryState.DEAD
        shared = rows[0].spool_path

    with database.session() as session:
        first = purge_sent_deliveries(session, spool, timedelta(days=30))
    assert (first.deliveries, first.deleted_files) == (1, 0)
    assert spool.path(shared).exists()  # the dead delivery may still be retried

    with database.session() as session:
        row = session.get(Delivery, ids[1])
        row.state, row.sent_at = DeliveryState.SENT, long_ago
    with database.session() as session:
        second = purge_sent_deliveries(session, spool, timedelta(days=30))
    assert (second.deliveries, second.deleted_files) == (1, 1)
    assert not spool.path(shared).exists()
    with database.session() as session:
        assert session.scalars(select(Delivery)).all() == []


def test_each_destination_gets_the_sr_class_it_needs_and_all_share_one_capture(tmp_path):
    spool = Spool(tmp_path / "spool")
    radiograph = load_radiograph(make_radiograph(tmp_path / "film.dcm"))
    result = StandInLumbarPipeline().run(radiograph)
    destinations = {
        "pacs": Destination(ae_title="PACS", host="pacs", port=104),
        "old-pacs": Destination(
            ae_title="OLD", host="old", port=104, sr_storage=SrStorage.COMPREHENSIVE
        ),
        "archive": Destination(ae_title="ARCHIVE", host="archive", port=104),
    }

    objects = write_result_objects(
        result, radiograph, destinations, spool=spool, device=device_info(NodeConfig().node)
    )

    sent = {(item.destination, item.sop_class_uid) for item in objects}
    assert sent == {
        ("pacs", SR_3D),
        ("pacs", SC),
        ("old-pacs", SR_COMPREHENSIVE),
        ("old-pacs", SC),
        ("archive", SR_3D),
        ("archive", SC),
    }
    files: dict[str, set[str]] = {}
    for item in objects:
        files.setdefault(item.sop_class_uid, set()).add(str(item.spool_path))
    assert all(len(paths) == 1 for paths in files.values())  # one file per object, shared
    for item in objects:
        written = pydicom.dcmread(spool.path(item.spool_path))
        assert (written.SOPInstanceUID, written.SOPClassUID) == (
            item.sop_instance_uid,
            item.sop_class_uid,
        )
        assert written.StudyInstanceUID == radiograph.uids.study_instance_uid


@pytest.mark.parametrize("report_not_evaluable", [True, False])
def test_not_evaluable_film_is_reported_with_its_reason_only_when_configured(
    tmp_path, report_not_evaluable
):
    spool = Spool(tmp_path / "spool")
    image = make_radiograph(tmp_path / "film.dcm")
    ds = pydicom.dcmread(image)
    ds.ImageComments = NOT_EVALUABLE_COMMENT
    ds.save_as(image)
    radiograph = load_radiograph(image)
    result = StandInLumbarPipeline().run(radiograph)

    objects = write_result_objects(
        result,
        radiograph,
        {"pacs": Destination(ae_title="PACS", host="pacs", port=104)},
        spool=spool,
        device=device_info(NodeConfig().node),
        report_not_evaluable=report_not_evaluable,
    )

    if not report_not_evaluable:
        assert objects == []
        return
    [report] = [item for item in objects if item.sop_class_uid == SR_3D]
    written = pydicom.dcmread(spool.path(report.spool_path))
    texts = [element.value for element in written.iterall() if element.keyword == "TextValue"]
    assert f"Not evaluable: {NOT_EVALUABLE_REASON}" in texts
    assert written.CompletionFlag == "PARTIAL"


def test_configured_device_uid_is_the_reports_device_observer():
    config = NodeConfig.model_validate(
        {"node": {"name": "site-node", "device_uid": "1.2.826.0.1.3680043.10.99"}}
    )
    assert (device_info(config.node).name, device_info(config.node).uid) == (
        "site-node",
        "1.2.826.0.1.3680043.10.99",
    )
    assert device_info(NodeConfig().node).uid.startswith("2.25.")


def test_routing_rule_destinations_replace_the_pipelines_even_when_analysed_later(
    database, tmp_path
):
    spool = Spool(tmp_path / "spool")
    config = NodeConfig.model_validate(
        {
            "destinations": {
                "pacs": {"ae_title": "PACS", "host": "pacs", "port": 104},
                "research": {"ae_title": "RESEARCH", "host": "research", "port": 104},
            },
            "pipelines": {"lumbar": {"destinations": ["pacs"]}},
            "routing": {
                "rules": [
                    {
                        "name": "spine-to-research",
                        "pipeline": "lumbar",
                        "body_part": ["LSPINE"],
                        "destinations": ["research"],
                    }
                ]
            },
        }
    )
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    receive(database, spool, make_radiograph(tmp_path / "hip.dcm", body_part="HIP"))

    routing_only = Worker(config, database, spool, pipelines={})
    while routing_only.process_next():
        pass  # the spine film waits queued; the hip film has no rule and is skipped
    analysing = Worker(
        config, database, spool, pipelines={"lumbar": StandInLumbarPipeline()}
    )
    analysing.process_next()

    with database.session() as session:
        destinations = sorted({row.destination for row in session.scalars(select(Delivery))})
    assert destinations == ["research"]


def test_deliveries_commands_list_retry_and_purge(database, tmp_path):
    spool = Spool(tmp_path / "spool")
    [dead_id, sent_id] = queued_result(database, spool, tmp_path, ["pacs", "archive"])
    with database.session() as session:
        session.get(Delivery, dead_id).state = DeliveryState.DEAD
        sent = session.get(Delivery, sent_id)
        sent.state, sent.sent_at = DeliveryState.SENT, utc_now() - timedelta(days=3)
    config = tmp_path / "node.toml"
    config.write_text(
        toml_document(
            {
                "database": {"url": database.engine.url.render_as_string(False)},
                "storage": {"spool_dir": spool.root},
            }
        )
    )
    runner = CliRunner()

    listed = runner.invoke(
        app, ["deliveries", "list", "--state", "dead", "--json", "--config", str(config)]
    )
    bad_state = runner.invoke(
        app, ["deliveries", "list", "--state", "lost", "--config", str(config)]
    )
    refused = runner.invoke(app, ["deliveries", "retry", str(sent_id), "--config", str(config)])
    retried = runner.invoke(app, ["deliveries", "retry", str(dead_id), "--config", str(config)])
    kept = runner.invoke(
        app, ["deliveries", "purge", "--sent-older-than", "5", "--config", str(config)]
    )
    purged = runner.invoke(
        app, ["deliveries", "purge", "--sent-older-than", "2", "--config", str(config)]
    )

    assert listed.exit_code == 0, listed.output
    assert f'"id": {dead_id}' in listed.output and '"state": "dead"' in listed.output
    assert bad_state.exit_code == 2
    assert refused.exit_code == 1 and "only dead or failed" in refused.output
    assert retried.exit_code == 0 and "1 deliveries queued again" in retried.output
    assert "removed 0 sent deliveries" in kept.output
    assert "removed 1 sent deliveries and 1 files" in purged.output
    assert delivery(database, dead_id).state == DeliveryState.PENDING


def test_node_start_warns_of_reports_waiting_for_a_destination_no_longer_configured(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.upgrade()
    spool = Spool(tmp_path / "spool")
    queued_result(database, spool, tmp_path, ["retired", "pacs"])
    database.dispose()
    config = NodeConfig.model_validate(
        {
            "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
            "storage": {"spool_dir": str(spool.root), "min_free_mb": 1},
            "destinations": {
                "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}
            },
        }
    )
    node = Node(config, scp=False, pipelines={})

    with capture_logs() as logs:
        node.start()
        node.stop()

    warnings = [entry for entry in logs if entry["event"] == "deliveries_for_unknown_destinations"]
    assert [entry["waiting"] for entry in warnings] == [{"retired": 1}]
