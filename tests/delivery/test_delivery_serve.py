"""A node process (``osteonode serve`` with the shipped lumbar model when it is installed, else the
same service with the stand-in pipeline) behind a real Orthanc: a phantom stored in Orthanc comes back
with its SR and SC in its study, and the node stops cleanly on SIGTERM."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from fixtures.peers import NODE_AE, free_port, require_binary, toml_document

from osteonode.peers import Orthanc, OrthancModality
from osteonode.phantoms import make_cohort
from osteonode.phantoms.cohort import SAMPLE_SIZE

pytestmark = pytest.mark.orthanc

REPOSITORY = Path(__file__).resolve().parents[2]
SHIPPED_LUMBAR_MODEL = REPOSITORY / "models" / "lumbar-demo"
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def node_command(config: Path) -> list[str]:
    """``osteonode serve`` when the shipped lumbar model can run, else the stand-in node."""
    shipped = (SHIPPED_LUMBAR_MODEL / "model.toml").is_file() and importlib.util.find_spec(
        "osteonode.pipelines.lumbar"
    ) is not None
    if shipped:
        return [sys.executable, "-m", "osteonode", "serve", "--config", str(config)]
    return [sys.executable, str(Path(__file__).with_name("delivery_standin.py")), str(config)]


def test_phantom_stored_in_orthanc_gets_its_reports_back_from_a_node_process(tmp_path):
    require_binary("Orthanc")
    node_port = free_port()
    phantoms = make_cohort("lumbar", 1, tmp_path / "phantoms", seed=7, size=SAMPLE_SIZE)
    [film] = sorted(phantoms.parent.glob("*.dcm"))
    study = str(pydicom.dcmread(film, stop_before_pixels=True).StudyInstanceUID)
    orthanc = Orthanc(
        tmp_path / "orthanc",
        forward_to=OrthancModality("osteonode", NODE_AE, "127.0.0.1", node_port),
    )
    config = tmp_path / "node.toml"
    config.write_text(
        toml_document(
            {
                "node": {"ae_title": NODE_AE, "port": node_port},
                "storage": {"spool_dir": tmp_path / "spool", "min_free_mb": 1},
                "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
                "workers": {"count": 1, "poll_interval_s": 0.2},
                "delivery": {"interval_s": 0.5},
                "logging": {"format": "json"},
                "models": {"dir": REPOSITORY / "models"},
                "destinations.pacs": {
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                },
                "pipelines.lumbar": {"destinations": ["pacs"]},
            }
        )
    )
    with orthanc, (tmp_path / "node.log").open("wb") as log:
        node = subprocess.Popen(node_command(config), stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_listening(node_port)
            orthanc.post_instance(film)
            classes = _wait_for_classes(orthanc, study, count=3, timeout_s=120)
        finally:
            node.send_signal(signal.SIGTERM)
            exit_code = node.wait(timeout=60)

    assert {SECONDARY_CAPTURE, *SR_CLASSES} <= classes, (tmp_path / "node.log").read_text()[-3000:]
    assert exit_code == 0


def _wait_until_listening(port: int, timeout_s: float = 60.0) -> None:
    echoscu = require_binary("echoscu")
    deadline = time.monotonic() + timeout_s
    command = [echoscu, "-aec", NODE_AE, "127.0.0.1", str(port)]
    while subprocess.run(command, capture_output=True, check=False).returncode:
        if time.monotonic() > deadline:
            raise AssertionError("the node did not start listening")
        time.sleep(0.2)


def _wait_for_classes(orthanc: Orthanc, study: str, count: int, timeout_s: float) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        instances = orthanc.study_instances(study)
        if len(instances) >= count or time.monotonic() > deadline:
            return {tags["SOPClassUID"] for tags in instances}
        time.sleep(0.2)
