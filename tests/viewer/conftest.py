"""Fixtures for the radiologist's view: the demo's sample films, analysed by the real pipelines
and demo weights, their SR and SC stored with them in an Orthanc that speaks DICOMweb, and the
OHIF viewer served against it."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from viewer_cases import Reported

from osteonode.analysis import analyse_file
from osteonode.config import NodeConfig
from osteonode.peers import Orthanc
from osteonode.peers.ohif import OhifViewer
from osteonode.phantoms import make_sample_set
from osteonode.pipelines.registry import load_pipelines
from osteonode.reports import DeviceInfo, build_secondary_capture, build_structured_report

REPOSITORY = Path(__file__).resolve().parents[2]
OHIF_DIST = REPOSITORY / "var" / "ohif" / "package" / "dist"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DEVICE = DeviceInfo.for_node("osteonode-viewer-test")
#: The pipelines of the shipped demo models, one per part of the demo's sample set.
PARTS = ("lumbar", "chest", "hip")


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


@pytest.fixture(scope="module")
def viewer(
    reported: list[Reported], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OhifViewer]:
    """OHIF against an Orthanc holding every sample film with its report and capture."""
    if not (OHIF_DIST / "index.html").is_file():
        pytest.skip(f"the OHIF viewer is not unpacked at {OHIF_DIST} (`make install` does it)")
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian orthanc-dicomweb)")
    directory = tmp_path_factory.mktemp("pacs")
    with Orthanc(directory / "orthanc", dicomweb=True) as pacs:
        for number, item in enumerate(reported):
            pacs.post_instance(item.film)
            for kind, dataset in (("sr", item.report), ("sc", item.capture)):
                path = directory / f"{number}-{kind}.dcm"
                dataset.save_as(path, enforce_file_format=True)
                pacs.post_instance(path)
        with OhifViewer(OHIF_DIST, pacs) as served:
            yield served
