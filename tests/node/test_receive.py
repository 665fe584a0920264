"""Receiving images: a real node process, dcmtk's echoscu/storescu and pynetdicom as senders.

"Stored byte-identical" means: the spool file's dataset part (everything after its file meta group,
which the node writes itself) equals, byte for byte, the dataset the sender put on the wire. The test
files are written the way dcmtk transmits them (explicit-length sequences), so the wire dataset is the
file's own dataset part, padded to even length for the deflated one (see ``wire_dataset``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
from fixtures.peers import (
    DX_FOR_PRESENTATION,
    NodeProcess,
    SyntaxFile,
    dataset_part,
    echoscu,
    make_radiograph,
    pynetdicom_store,
    storescu,
    storescu_profile,
    wire_dataset,
)
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation


def test_echo_is_answered(node: NodeProcess) -> None:
    done = echoscu(node.port)

    assert done.returncode == 0, done.stderr
    assert "Received Echo Response (Success)" in done.stderr
    assert any(event.get("event") == "echo" for event in node.log_events())


def test_every_transfer_syntax_is_acknowledged_stored_byte_identical_and_routed(
    node: NodeProcess, transfer_syntax_files: list[SyntaxFile], tmp_path: Path
) -> None:
    by_dcmtk = [item for item in transfer_syntax_files if item.sender == "storescu"]
    by_pynetdicom = [item for item in transfer_syntax_files if item.sender == "pynetdicom"]
    profile = storescu_profile(
        tmp_path / "storescu.cfg", DX_FOR_PRESENTATION, [str(item.transfer_syntax) for item in by_dcmtk]
    )

    sent = storescu(node.port, [item.path for item in by_dcmtk], extra=["-xf", str(profile), "Each"])
    statuses = pynetdicom_store(node.port, [item.path for item in by_pynetdicom])

    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.count("Received Store Response (Success)") == len(by_dcmtk)
    conversions = re.findall(r"Converting transfer syntax: (.+) -> (.+)", sent.stderr)
    assert all(source == target for source, target in conversions), conversions
    assert statuses == [0x0000] * len(by_pynetdicom)
    jobs = node.wait_until_routed(len(transfer_syntax_files))
    for item in transfer_syntax_files:
        uid = pydicom.dcmread(item.path, stop_before_pixels=True).SOPInstanceUID
        job = jobs[uid]
        stored = pydicom.dcmread(job.spool_file, stop_before_pixels=True)
        assert stored.file_meta.TransferSyntaxUID == item.transfer_syntax, item.name
        assert dataset_part(job.spool_file) == wire_dataset(item.path), item.name
        assert (job.state, job.pipeline) == ("queued", "lumbar"), item.name


def test_a_lateral_lumbar_film_goes_to_the_lateral_pipeline_and_other_laterals_are_skipped(
    node: NodeProcess, tmp_path: Path
) -> None:
    lumbar = make_radiograph(tmp_path / "lumbar-lateral.dcm", view="LATERAL")
    lateral = make_radiograph(tmp_path / "hip-lateral.dcm", view="LATERAL", body_part="HIP")

    sent = storescu(node.port, [lumbar, lateral])

    assert sent.returncode == 0, sent.stderr
    jobs = node.wait_until_routed(2)
    routed = jobs[pydicom.dcmread(lumbar).SOPInstanceUID]
    assert (routed.state, routed.pipeline) == ("queued", "lumbar_lateral")
    job = jobs[pydicom.dcmread(lateral).SOPInstanceUID]
    assert (job.state, job.skip_reason) == ("skipped", "lateral_view")
    assert ("skipped", {"reason": "lateral_view", "detail": "skipped by rule 'lateral-view'",
                        "rule": "lateral-view"}) in node.event_kinds()


def test_same_instance_twice_is_stored_once_and_both_receipts_acknowledged(
    node: NodeProcess, tmp_path: Path
) -> None:
    image = make_radiograph(tmp_path / "twice.dcm")
    uid = pydicom.dcmread(image).SOPInstanceUID

    first = storescu(node.port, [image])
    second = storescu(node.port, [image])

    assert first.returncode == 0 and second.returncode == 0
    assert "Received Store Response (Success)" in second.stderr
    jobs = node.wait_until_routed(1)
    assert list(jobs) == [uid]
    assert jobs[uid].receipt_count == 2
    assert sorted(path.name for path in node.spool_dir.rglob("*.dcm")) == [f"{uid}.dcm"]
    kinds = [kind for kind, _ in node.event_kinds()]
    assert kinds.count("received") == 1 and kinds.count("duplicate_received") == 1


def test_large_image_arrives_whole_over_unlimited_pdu(node: NodeProcess, tmp_path: Path) -> None:
    image = make_radiograph(tmp_path / "large.dcm", rows=2048, columns=1792)
    ae = AE(ae_title="MODALITY")
    ae.maximum_pdu_size = 0
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    association = ae.associate("127.0.0.1", node.port, ae_title="OSTEONODE")
    assert association.is_established
    assert association.acceptor.maximum_length == 0  # the node announces an unlimited PDU
    status = association.send_c_store(pydicom.dcmread(image))
    association.release()

    assert status.Status == 0x0000
    job = node.wait_until_routed(1)[pydicom.dcmread(image).SOPInstanceUID]
    assert dataset_part(job.spool_file) == dataset_part(image)


def test_no_patient_identity_in_any_log_line(
    node: NodeProcess, tmp_path: Path
) -> None:
    image = make_radiograph(tmp_path / "identified.dcm")
    storescu(node.port, [image])
    node.wait_until_routed(1)

    log_text = node.log_path.read_text()
    for identifier in ("Phantom^Lumbar", "PHANTOM-0001", "19600101", "ACC0001"):
        assert identifier not in log_text


def test_refuses_with_out_of_resources_when_disk_is_below_minimum(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory({"storage": {"min_free_mb": 1 << 40}}).start()
    image = make_radiograph(tmp_path / "nospace.dcm")

    sent = storescu(node.port, [image])

    assert "Received Store Response (Refused: OutOfResources)" in sent.stderr, sent.stderr
    refusal = node.wait_for_log(lambda event: event.get("event") == "store_refused_low_disk")
    assert "storage.min_free_mb" in refusal["detail"]
    assert node.jobs() == {}
    assert not list(node.spool_dir.rglob("*.dcm"))
    assert [details["reason"] for details in node.events_of("refused")] == ["low_disk_space"]


def test_failure_to_keep_an_image_is_a_failure_status_and_the_node_carries_on(
    node: NodeProcess, tmp_path: Path
) -> None:
    incoming = node.spool_dir / "incoming"
    shutil.rmtree(incoming)
    incoming.write_bytes(b"")  # the spool's directory is now a file: every write fails
    first = make_radiograph(tmp_path / "first.dcm")

    refused = storescu(node.port, [first])
    incoming.unlink()
    accepted = storescu(node.port, [first])

    assert "Received Store Response (Error: CannotUnderstand)" in refused.stderr, refused.stderr
    failure = node.wait_for_log(lambda event: event.get("event") == "store_failed")
    assert failure["status"] == "0xC001"
    assert "incoming" in failure["error"]  # the OSError names the path it could not write
    assert "Received Store Response (Success)" in accepted.stderr
    assert len(node.wait_until_routed(1)) == 1
