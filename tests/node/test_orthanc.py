"""A real Orthanc forwards what it stores to the node (Lua ``OnStoredInstance`` -> ``SendToModality``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from fixtures.peers import NodeProcess, SyntaxFile, dataset_part, wire_dataset

from osteonode.peers import Orthanc, OrthancError

pytestmark = pytest.mark.orthanc


def test_images_stored_in_orthanc_arrive_at_the_node_and_are_routed(
    node: NodeProcess,
    orthanc_forwarding_to: Callable[[int], Orthanc],
    transfer_syntax_files: list[SyntaxFile],
) -> None:
    orthanc = orthanc_forwarding_to(node.port)
    chosen = {"explicit-le", "jpeg-ls-lossless", "j2k-lossless", "rle"}
    images = [item.path for item in transfer_syntax_files if item.name in chosen]

    for image in images:
        assert orthanc.post_instance(image)["Status"] == "Success"

    jobs = node.wait_until_routed(len(images), timeout_s=60)
    for image in images:
        job = jobs[pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID]
        assert job.calling_ae == "ORTHANC"
        assert (job.state, job.pipeline) == ("queued", "lumbar")
        assert _same_dataset(job.spool_file, image)


def _same_dataset(stored: Path, sent: Path) -> bool:
    """Orthanc re-encodes sequences its own way, so compare bytes where it keeps them, else values."""
    if dataset_part(stored) == wire_dataset(sent):
        return True
    return pydicom.dcmread(stored) == pydicom.dcmread(sent)


def test_orthanc_is_refused_when_the_node_only_allows_other_callers(
    node_factory: Callable[..., NodeProcess],
    orthanc_forwarding_to: Callable[[int], Orthanc],
    tmp_path: Path,
    transfer_syntax_files: list[SyntaxFile],
) -> None:
    node = node_factory({"association": {"allowed_callers": [{"ae_title": "PACS"}]}}).start()
    orthanc = orthanc_forwarding_to(node.port)

    orthanc.post_instance(transfer_syntax_files[0].path)

    refusal = node.wait_for_log(lambda event: event.get("event") == "association_refused")
    assert (refusal["reason"], refusal["calling_ae"]) == ("calling_ae_not_recognised", "ORTHANC")
    time.sleep(0.5)
    assert node.jobs() == {}


def test_orthanc_gives_back_the_file_it_stored_and_names_an_instance_it_lacks(
    tmp_path: Path, transfer_syntax_files: list[SyntaxFile]
) -> None:
    film = transfer_syntax_files[0].path
    uid = str(pydicom.dcmread(film, stop_before_pixels=True).SOPInstanceUID)
    with Orthanc(tmp_path / "orthanc") as orthanc:
        orthanc.post_instance(film)
        stored = pydicom.dcmread(BytesIO(orthanc.instance_file(uid)))
        with pytest.raises(OrthancError, match="holds no instance 1.2.3.4"):
            orthanc.instance_file("1.2.3.4")
    assert stored == pydicom.dcmread(film)
