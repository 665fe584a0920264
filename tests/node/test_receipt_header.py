"""The Instance row keeps the study, series and modality of the header as received; a header whose
values are unusable is stored all the same, with those columns empty."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from fixtures.peers import NodeProcess, make_radiograph, pynetdicom_store


def test_unusable_identity_values_are_left_empty_and_the_image_is_stored(
    node: NodeProcess, tmp_path: Path
) -> None:
    film = make_radiograph(tmp_path / "film.dcm")
    dataset = pydicom.dcmread(film)
    dataset.StudyInstanceUID = "not.a.uid.x"
    with pytest.warns(UserWarning, match="exceeds the maximum length"):
        dataset.Modality = "A-MODALITY-NAME-LONGER-THAN-16"  # a sender's broken value
    dataset.save_as(film)

    assert pynetdicom_store(node.port, [film]) == [0x0000]
    shown = node.cli("status", "--instance", dataset.SOPInstanceUID, "--json")

    assert shown.returncode == 0, shown.stderr
    instance = json.loads(shown.stdout)["instance"]
    assert instance["study_instance_uid"] is None
    assert instance["modality"] is None
    assert instance["series_instance_uid"] == dataset.SeriesInstanceUID
