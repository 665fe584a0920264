"""Fixtures for the radiologist's view.

``reported``: the demo's sample films, analysed in this process by the real pipelines and demo
weights, with the SR and SC built from each result (for checks of every capture and report).

``delivered`` and ``viewer``: the hospital's loop, as ``osteonode demo`` runs it. One film per part
is stored in an Orthanc that speaks DICOMweb and forwards it to a running node (``osteonode serve``
with the shipped models); the node analyses it and C-STOREs its SR and SC back into the film's
study; OHIF is served against that Orthanc. The viewer tests open what the node delivered.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from viewer_cases import PARTS, Delivered, Reported

from osteonode.analysis import analyse_file
from osteonode.config import NodeConfig
from osteonode.demo import NODE_AE_TITLE, running_node, store_in_pacs, write_demo_config
from osteonode.peers import Orthanc, OrthancError, OrthancModality, free_port
from osteonode.peers.ohif import OhifViewer
from osteonode.phantoms import make_sample_set
from osteonode.pipelines.registry import load_pipelines
from osteonode.reports import DeviceInfo, build_secondary_capture, build_structured_report

REPOSITORY = Path(__file__).resolve().parents[2]
OHIF_DIST = REPOSITORY / "var" / "ohif" / "package" / "dist"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DEVICE = DeviceInfo.for_node("osteonode-viewer-test")
#: How long the node may take to start, analyse the films and deliver its reports (2 busy cores).
NODE_TIMEOUT_S = 240.0


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/viewer/ in the repository (git-ignored): pictures kept for a reader."""
    directory = REPOSITORY / "test-artifacts" / "viewer"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> list[Reported]:
    """Every film of the demo's sample set that its pipeline analysed, with SR and SC."""
    directory = tmp_path_factory.mktemp("viewer")
    config = NodeConfig()
    pipelines = load_pipelines(config)
    missing = {name: pipelines.unavailable.get(name) for name in PARTS}
    if any(name not in pipelines.available for name in PARTS):
        pytest.fail(f"the shipped demo models did not load: {missing}")
    found = []
    for part, table in make_sample_set(directory / "phantoms").items():
        with table.open(newline="") as rows:
            films = [table.parent / row["file"] for row in csv.DictReader(rows)]
        for film in films:
            analysis = analyse_file(film, config, pipelines, pipeline_name=part.value)
            assert analysis.result is not None and analysis.radiograph is not None, analysis
            found.append(
                Reported(
                    part=part.value,
                    film=film,
                    radiograph=analysis.radiograph,
                    result=analysis.result,
                    report=build_structured_report(
                        analysis.result, analysis.radiograph.header, device=DEVICE
                    ),
                    capture=build_secondary_capture(
                        analysis.result, analysis.radiograph, device=DEVICE
                    ),
                )
            )
    return found


def _first_viewable(reported: list[Reported], part: str) -> Reported:
    """The first evaluable film of a part whose source OHIF can display.

    OHIF 3.13.2 fails to load a source film whose header has a VOI LUT Function (it reports an
    image load error, then "Invalid VOI LUT function", with or without the node's objects in the
    study); some of the phantoms' header variants carry one, so those films are left out here.
    """
    return next(
        item
        for item in reported
        if item.part == part
        and item.result.evaluable
        and "VOILUTFunction" not in item.radiograph.header
    )


def _arrived(pacs: Orthanc, sop_instance_uid: str, node_log: Path) -> pydicom.Dataset:
    """The instance once the node has sent it to the PACS (polled: Orthanc forwards the films,
    and the node reports on them, in their own time)."""
    deadline = time.monotonic() + NODE_TIMEOUT_S
    while True:
        try:
            return pydicom.dcmread(BytesIO(pacs.instance_file(sop_instance_uid)))
        except OrthancError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the node's {sop_instance_uid} did not reach Orthanc; see {node_log}"
                ) from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def node_port() -> int:
    """The DICOM port of the node that the PACS forwards films to."""
    return free_port()


@pytest.fixture(scope="module")
def pacs(node_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """An Orthanc with DICOMweb that forwards what it stores to the node (the node not started)."""
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian orthanc-dicomweb)")
    directory = tmp_path_factory.mktemp("pacs")
    with Orthanc(
        directory / "orthanc",
        forward_to=OrthancModality("osteonode", NODE_AE_TITLE, "127.0.0.1", node_port),
        dicomweb=True,
    ) as orthanc:
        yield orthanc


@pytest.fixture(scope="module")
def delivered(
    reported: list[Reported],
    pacs: Orthanc,
    node_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Delivered]:
    """One film per part, stored in the PACS, analysed by a running node, its reports sent back.

    The node's objects are awaited in Orthanc by the UIDs that the reports of the same analysis get
    in this process (output UIDs depend on the source image and the model only).
    """
    directory = tmp_path_factory.mktemp("node")
    (directory / "var").mkdir()  # the node's spool and database
    chosen = {part: _first_viewable(reported, part) for part in PARTS}
    config = write_demo_config(directory, node_port, REPOSITORY / "models", pacs, free_port())
    log = directory / "node.log"
    with running_node(config, node_port, log):
        store_in_pacs(pacs, [item.film for item in chosen.values()])
        return {
            part: Delivered(
                part=part,
                film=item.film,
                report=_arrived(pacs, str(item.report.SOPInstanceUID), log),
                capture=_arrived(pacs, str(item.capture.SOPInstanceUID), log),
            )
            for part, item in chosen.items()
        }


@pytest.fixture(scope="module")
def viewer(delivered: dict[str, Delivered], pacs: Orthanc) -> Iterator[OhifViewer]:
    """OHIF against the PACS that holds the films and what the node sent back."""
    if not (OHIF_DIST / "index.html").is_file():
        pytest.skip(f"the OHIF viewer is not unpacked at {OHIF_DIST} (`make install` does it)")
    with OhifViewer(OHIF_DIST, pacs) as served:
        yield served
