"""Fixtures for the delivery tests: a real Orthanc as the PACS and a node run in this process.

The node is :class:`osteonode.service.Node` with the stand-in lumbar pipeline
(``delivery_standin.py``), its configuration written to a ``node.toml`` so that the ``osteonode
deliveries`` commands can be run against it, and short back-offs so retries happen within a test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from delivery_standin import StandInLumbarPipeline
from fixtures.peers import NODE_AE, free_port, require_binary, toml_document
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation
from sqlalchemy import select

from osteonode.config import NodeConfig, load_config
from osteonode.peers import Orthanc, OrthancModality
from osteonode.service import Node
from osteonode.store.db import Database
from osteonode.store.tables import Delivery, Event, EventKind

#: Back-off of the test destinations: quick, growing, never exhausted within a test.
FAST_RETRIES = {
    "backoff_initial_s": 0.3,
    "backoff_max_s": 2.0,
    "max_attempts": 100,
    "timeout_s": 5.0,
}


class DeliveryWorld:
    """A node (started and restarted in-process) whose results go to one Orthanc, and its database."""

    def __init__(self, workdir: Path, orthanc: Orthanc, node_port: int, config_path: Path) -> None:
        self.workdir = workdir
        self.orthanc = orthanc
        self.node_port = node_port
        self.config_path = config_path
        self.config: NodeConfig = load_config(config_path, environ={})
        self.node: Node | None = None

    def start_node(self) -> Node:
        """Start a fresh node on the same configuration, database and spool."""
        assert self.node is None, "stop the running node first"
        self.node = Node(self.config, pipelines={"lumbar": StandInLumbarPipeline()})
        self.node.start()
        return self.node

    def stop_node(self) -> None:
        if self.node is not None:
            self.node.stop()
            self.node = None

    def query(self, read: Callable[[Any], Any]) -> Any:
        """Run ``read(session)`` against the node's database."""
        database = Database(self.config.database.url)
        try:
            with database.session() as session:
                return read(session)
        finally:
            database.dispose()

    def deliveries(self) -> list[Delivery]:
        return self.query(
            lambda session: list(session.scalars(select(Delivery).order_by(Delivery.id)))
        )

    def delivery_events(self, kind: EventKind) -> list[Event]:
        return self.query(
            lambda session: list(
                session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))
            )
        )

    def wait_for_deliveries(
        self, done: Callable[[list[Delivery]], bool], timeout_s: float = 30.0
    ) -> list[Delivery]:
        """Poll the deliveries until ``done(deliveries)`` holds."""
        deadline = time.monotonic() + timeout_s
        while True:
            deliveries = self.deliveries()
            if done(deliveries):
                return deliveries
            if time.monotonic() > deadline:
                states = [(d.id, str(d.state), d.attempts, d.last_error) for d in deliveries]
                raise AssertionError(f"deliveries did not get there in {timeout_s} s: {states}")
            time.sleep(0.1)

    def wait_for_study(
        self, study_uid: str, count: int, timeout_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll Orthanc until the study holds ``count`` instances; returns their tags."""
        deadline = time.monotonic() + timeout_s
        while True:
            instances = self.orthanc.study_instances(study_uid)
            if len(instances) >= count:
                return instances
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(instances)} of {count} instances in the study in Orthanc"
                )
            time.sleep(0.1)


@pytest.fixture
def delivery_world(tmp_path: Path) -> Iterator[Callable[..., DeliveryWorld]]:
    """Make an Orthanc forwarding to a node, and the node's configuration (the node not started).

    Keyword arguments: ``accept_unknown_callers`` (Orthanc), ``destination`` (keys over the
    ``pacs`` destination's), ``settings`` (sections merged over the node's test settings).
    """
    require_binary("Orthanc")
    worlds: list[DeliveryWorld] = []

    def make(
        *,
        accept_unknown_callers: bool = True,
        destination: Mapping[str, Any] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> DeliveryWorld:
        node_port = free_port()
        orthanc = Orthanc(
            tmp_path / "orthanc",
            forward_to=OrthancModality("osteonode", NODE_AE, "127.0.0.1", node_port),
            accept_unknown_callers=accept_unknown_callers,
        )
        sections: dict[str, dict[str, Any]] = {
            "node": {"ae_title": NODE_AE, "port": node_port},
            "storage": {"spool_dir": tmp_path / "spool", "min_free_mb": 1},
            "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
            "workers": {"count": 1, "poll_interval_s": 0.1},
            "delivery": {"interval_s": 0.2},
            "logging": {"format": "json"},
            "destinations.pacs": {
                "ae_title": orthanc.ae_title,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
                **FAST_RETRIES,
                **(destination or {}),
            },
            "pipelines.lumbar": {"destinations": ["pacs"]},
        }
        for section, keys in (settings or {}).items():
            sections.setdefault(section, {}).update(keys)
        config_path = tmp_path / "node.toml"
        config_path.write_text(toml_document(sections), encoding="utf-8")
        world = DeliveryWorld(tmp_path, orthanc, node_port, config_path)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.stop_node()
        world.orthanc.stop()


class AnsweringPeer:
    """A real pynetdicom Storage SCP that answers every C-STORE with a chosen status and comment."""

    def __init__(
        self,
        status: int,
        comment: str = "",
        sop_classes: Sequence[str] = (DigitalXRayImageStorageForPresentation,),
    ) -> None:
        self.port = free_port()
        self.received = 0
        self._status, self._comment = status, comment
        ae = AE(ae_title="PEER")
        for sop_class in sop_classes:
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def _on_store(self, event: evt.Event) -> Dataset:
        self.received += 1
        answer = Dataset()
        answer.Status = self._status
        if self._comment:
            answer.ErrorComment = self._comment
        return answer

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def peer() -> Iterator[type[AnsweringPeer]]:
    started: list[AnsweringPeer] = []

    def start(*args, **kwargs) -> AnsweringPeer:
        started.append(AnsweringPeer(*args, **kwargs))
        return started[-1]

    yield start  # type: ignore[misc]
    for item in started:
        item.close()
