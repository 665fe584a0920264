"""``osteonode echo DESTINATION``: a site checks a destination before any report is sent to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.peers import free_port, require_binary, toml_document

from osteonode.peers import Orthanc, OrthancModality

pytestmark = pytest.mark.orthanc


def _echo(
    tmp_path: Path, destination: str, destinations: dict[str, dict[str, object]]
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "node.toml"
    config.write_text(
        toml_document({f"destinations.{name}": keys for name, keys in destinations.items()}),
        "utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "osteonode", "echo", destination, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


def test_echo_succeeds_for_a_pacs_that_knows_the_node_and_says_why_not_otherwise(
    tmp_path: Path,
) -> None:
    require_binary("Orthanc")
    known = OrthancModality("node", "OSTEONODE", "127.0.0.1", 104)
    with Orthanc(tmp_path / "orthanc", modalities=[known], accept_unknown_callers=False) as orthanc:
        pacs = {
            "ae_title": orthanc.ae_title,
            "host": "127.0.0.1",
            "port": orthanc.dicom_port,
            "timeout_s": 10,
        }
        destinations = {
            "pacs": pacs,
            "pacs_as_stranger": {**pacs, "calling_ae_title": "STRANGER"},
            "nobody": {
                "ae_title": "NOBODY",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout_s": 5,
            },
        }
        answered = _echo(tmp_path, "pacs", destinations)
        refused = _echo(tmp_path, "pacs_as_stranger", destinations)
        unreachable = _echo(tmp_path, "nobody", destinations)
        unknown = _echo(tmp_path, "archive", destinations)

    assert answered.returncode == 0, answered.stderr
    assert "C-ECHO succeeded" in answered.stdout and "calling AE OSTEONODE" in answered.stdout
    assert refused.returncode == 1
    assert "Calling AE title not recognised" in refused.stderr
    assert unreachable.returncode == 1
    assert "no connection to 127.0.0.1" in unreachable.stderr
    assert unknown.returncode == 2
    assert (
        "no destination 'archive'" in unknown.stderr
        and "nobody, pacs, pacs_as_stranger" in unknown.stderr
    )
