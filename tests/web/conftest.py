"""A node run in this process with its HTTP port, having received, analysed and failed to send.

The node runs the stand-in lumbar pipeline of the delivery tests (answers from the header, no model
weights), so the page has results with Secondary Captures to show. Its only destination is a port
nobody listens on, with one attempt allowed, so every report ends as a dead letter the page can
retry. The models shown are the repository's ``models/`` folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from admin_world import AdminWorld, write_node_config
from delivery.delivery_standin import NOT_EVALUABLE_COMMENT, StandInLumbarPipeline
from fixtures.peers import make_radiograph, storescu

from osteonode.config import load_config
from osteonode.service import Node
from osteonode.store.tables import DeliveryState


@pytest.fixture
def admin_world(tmp_path: Path) -> Iterator[AdminWorld]:
    """A node that received a spine film, a not-evaluable one and a lateral chest, analysed the
    first two, and dead-lettered their four report objects."""
    config = load_config(write_node_config(tmp_path), environ={})
    node = Node(config, pipelines={"lumbar": StandInLumbarPipeline()})
    node.start()
    try:
        spine = make_radiograph(tmp_path / "spine.dcm", seed=1)
        not_evaluable = make_radiograph(tmp_path / "blank.dcm", seed=2)
        film = pydicom.dcmread(not_evaluable)
        film.ImageComments = NOT_EVALUABLE_COMMENT
        film.save_as(not_evaluable)
        lateral = make_radiograph(
            tmp_path / "lateral.dcm", body_part="CHEST", view="LATERAL", seed=3
        )
        assert storescu(config.node.port, [spine, not_evaluable, lateral]).returncode == 0
        assert node.http is not None
        world = AdminWorld(
            node, config, f"http://127.0.0.1:{node.http.port}", spine, not_evaluable, lateral
        )
        deadline = time.monotonic() + 60
        while True:
            deliveries = world.deliveries()
            if len(deliveries) == 4 and all(d.state is DeliveryState.DEAD for d in deliveries):
                break
            assert time.monotonic() < deadline, [(d.id, str(d.state)) for d in deliveries]
            time.sleep(0.2)
        yield world
    finally:
        node.stop()
