"""Sending one file: what each kind of answer (or silence) from a peer becomes."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from fixtures.peers import free_port, make_radiograph, require_binary
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from osteonode.dicom.scu import SendResult, classify_store_status, send_file
from osteonode.peers import Orthanc, OrthancModality


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0x0000, SendResult.SENT),
        (0xB000, SendResult.SENT),  # coercion of data elements: stored, with a warning
        (0xB007, SendResult.SENT),
        (0x0001, SendResult.SENT),
        (0x0111, SendResult.SENT),  # duplicate SOP instance: the destination holds it already
        (0xA700, SendResult.TRANSIENT),  # out of resources
        (0xA7FF, SendResult.TRANSIENT),
        (0x0110, SendResult.TRANSIENT),  # processing failure
        (0x0213, SendResult.TRANSIENT),  # resource limitation
        (0xA900, SendResult.PERMANENT),  # data set does not match SOP class
        (0xC000, SendResult.PERMANENT),  # cannot understand
        (0xC123, SendResult.PERMANENT),
        (0x0122, SendResult.PERMANENT),  # SOP class not supported
        (0x0124, SendResult.PERMANENT),  # not authorised
    ],
)
def test_store_statuses_are_classified_as_the_standard_describes_them(status, expected):
    assert classify_store_status(status) is expected


@pytest.fixture
def film(tmp_path: Path) -> Path:
    return make_radiograph(tmp_path / "film.dcm")


def send(path: Path, port: int, *, calling: str = "OSTEONODE", called: str = "PEER"):
    return send_file(
        path,
        host="127.0.0.1",
        port=port,
        called_ae_title=called,
        calling_ae_title=calling,
        timeout_s=5,
    )


def test_accepted_object_is_sent(peer, film):
    outcome = send(film, peer(0x0000).port)
    assert (outcome.result, outcome.status, outcome.detail) == (SendResult.SENT, 0, "")


def test_warning_status_counts_as_sent_and_keeps_the_peers_words(peer, film):
    outcome = send(film, peer(0xB000, "coerced PatientName").port)
    assert outcome.is_sent
    assert outcome.detail == "status 0xB000: coerced PatientName"


def test_out_of_resources_is_transient_with_the_peers_status_and_comment(peer, film):
    outcome = send(film, peer(0xA700, "disk full").port)
    assert (outcome.result, outcome.status) == (SendResult.TRANSIENT, 0xA700)
    assert outcome.detail == "status 0xA700: disk full"


def test_data_set_not_matching_is_permanent_with_the_peers_status_and_comment(peer, film):
    outcome = send(film, peer(0xA900, "Rows missing").port)
    assert (outcome.result, outcome.status, outcome.detail) == (
        SendResult.PERMANENT,
        0xA900,
        "status 0xA900: Rows missing",
    )


def test_peer_that_takes_no_such_objects_is_permanent(peer, film):
    outcome = send(film, peer(0x0000, sop_classes=[SecondaryCaptureImageStorage]).port)
    assert outcome.result is SendResult.PERMANENT
    assert "accepts no SOP class" in outcome.detail


def test_nobody_listening_is_transient(film):
    outcome = send(film, free_port())
    assert outcome.result is SendResult.TRANSIENT
    assert outcome.detail.startswith("no connection to 127.0.0.1:")


def test_unreadable_file_is_permanent(tmp_path):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom at all")
    outcome = send(broken, free_port())
    assert outcome.result is SendResult.PERMANENT
    assert outcome.detail.startswith("cannot read broken.dcm")


@pytest.mark.orthanc
def test_orthanc_refusing_the_calling_ae_is_a_permanent_rejection_with_its_reason(tmp_path, film):
    require_binary("Orthanc")
    known = OrthancModality("node", "OSTEONODE", "127.0.0.1", 104)
    with Orthanc(tmp_path / "orthanc", modalities=[known], accept_unknown_callers=False) as orthanc:
        refused = send(film, orthanc.dicom_port, calling="STRANGER", called="ORTHANC")
        accepted = send(film, orthanc.dicom_port, calling="OSTEONODE", called="ORTHANC")
    assert refused.result is SendResult.PERMANENT
    assert refused.detail == (
        "association rejected by ORTHANC: Calling AE title not recognised (Rejected Permanent, Service User)"
    )
    assert accepted.is_sent


def test_peer_that_hangs_up_without_answering_is_transient(film):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        hang_up = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
        hang_up.start()
        outcome = send(film, listener.getsockname()[1])
        hang_up.join(5)
    assert outcome.result is SendResult.TRANSIENT
    assert "closed the connection without answering" in outcome.detail
