"""A site's new classifier is a model folder and a routing rule: its SR and SC reach the real PACS."""

from __future__ import annotations

import json

import pydicom
import pytest
from fixtures.classifier_models import write_classifier_model
from fixtures.peers import DX_FOR_PRESENTATION, make_radiograph

from osteonode.service import Node

pytestmark = pytest.mark.orthanc

SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def test_a_model_folder_and_a_routing_rule_send_a_new_classifiers_reports_to_orthanc(
    delivery_world, tmp_path
):
    models = tmp_path / "models"
    write_classifier_model(models / "knee_screen", name="knee-screen")
    world = delivery_world(
        settings={
            "models": {"dir": models},
            "routing": {
                "rules": [
                    {"name": "knees", "pipelines": ["knee_screen"], "body_part": ["KNEE"],
                     "destinations": ["pacs"]},
                ]
            },
        }
    )
    world.orthanc.start()
    node = Node(world.config)  # every pipeline loaded from the configuration, no code
    node.start()
    try:
        film = make_radiograph(tmp_path / "knee.dcm", body_part="KNEE")
        study = str(pydicom.dcmread(film).StudyInstanceUID)
        world.orthanc.post_instance(film)
        by_class = {tags["SOPClassUID"]: tags for tags in world.wait_for_study(study, 3, timeout_s=90)}
    finally:
        node.stop()
    assert set(by_class) == {DX_FOR_PRESENTATION, SR_3D, SECONDARY_CAPTURE}
    report = by_class[SR_3D]
    content = json.dumps(report["ContentSequence"])
    assert "Osteoporosis" in content and "knee-screen" in content
    assert "NOT FOR DIAGNOSTIC USE" in report["SeriesDescription"]
    assert by_class[SECONDARY_CAPTURE]["BurnedInAnnotation"] == "YES"
