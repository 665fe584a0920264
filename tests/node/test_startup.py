"""Start-up order: the node answers associations before its models are loaded, and loses nothing
that arrives meanwhile."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixtures.peers import echoscu, free_port, make_radiograph, storescu
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import select
from test_worker import RowCountingPipeline

from osteonode.config import NodeConfig
from osteonode.pipelines import registry
from osteonode.pipelines.registry import LoadedPipelines
from osteonode.service import Node
from osteonode.store.db import Database, DatabaseError
from osteonode.store.tables import Job


def job_states(node: Node) -> list[str]:
    with node.database.session() as session:
        return [str(job.state) for job in session.scalars(select(Job).order_by(Job.id))]


def receiving_only(tmp_path: Path) -> NodeConfig:
    return NodeConfig.model_validate({
        "node": {"port": free_port()},
        "storage": {"spool_dir": str(tmp_path / "spool"), "min_free_mb": 1},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "http": {"enabled": False},
    })


def test_an_image_received_while_the_models_load_is_stored_queued_and_analysed_once_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loading, loaded = threading.Event(), threading.Event()

    def load_slowly(config: NodeConfig, reference: object = None) -> LoadedPipelines:
        loading.set()
        assert loaded.wait(60), "the test never let the models load"
        return LoadedPipelines(available={"lumbar": RowCountingPipeline()}, unavailable={})

    monkeypatch.setattr(registry, "load_pipelines", load_slowly)
    config = NodeConfig.model_validate({
        "node": {"port": free_port()},
        "storage": {"spool_dir": str(tmp_path / "spool"), "min_free_mb": 1},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "http": {"enabled": False},
        "workers": {"count": 1},
        "pipelines": {"lumbar_ap": {"enabled": False}},
    })
    node = Node(config)
    starting = threading.Thread(target=node.start)
    starting.start()
    try:
        assert loading.wait(60)

        assert echoscu(config.node.port).returncode == 0
        assert storescu(config.node.port, [make_radiograph(tmp_path / "spine.dcm")]).returncode == 0
        assert job_states(node) == ["pending"]

        loaded.set()
        starting.join(60)
        deadline = time.monotonic() + 60
        while job_states(node) != ["done"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job_states(node) == ["done"]
    finally:
        loaded.set()
        starting.join(60)
        node.stop()



def test_the_rest_of_start_up_waits_while_an_association_is_open_but_only_for_a_bounded_time(
    tmp_path: Path,
) -> None:
    config = receiving_only(tmp_path)
    node = Node(config, workers=False)
    node.start()
    try:
        assert node.scp is not None
        peer = AE(ae_title="PACS")
        peer.add_requested_context(Verification)
        association = peer.associate("127.0.0.1", config.node.port, ae_title="OSTEONODE")
        assert association.is_established

        started = time.monotonic()
        node.scp.wait_until_idle(quiet_s=0.1, max_wait_s=0.5)
        assert time.monotonic() - started >= 0.5  # held back while the association is open

        association.release()
        started = time.monotonic()
        node.scp.wait_until_idle(quiet_s=0.1, max_wait_s=30)
        assert time.monotonic() - started < 10  # goes on once the association has closed
    finally:
        node.stop()


def test_the_node_answers_while_its_schema_is_created_and_stores_what_arrives_once_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrading, upgraded = threading.Event(), threading.Event()
    upgrade = Database.upgrade

    def slow_upgrade(database: Database, revision: str = "head") -> None:
        upgrading.set()
        assert upgraded.wait(60), "the test never let the schema be created"
        upgrade(database, revision)

    monkeypatch.setattr(Database, "upgrade", slow_upgrade)
    config = receiving_only(tmp_path)
    node = Node(config, workers=False)
    starting = threading.Thread(target=node.start)
    starting.start()
    try:
        assert upgrading.wait(60)
        assert echoscu(config.node.port).returncode == 0
        film = make_radiograph(tmp_path / "spine.dcm")
        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(storescu, config.node.port, [film])
            time.sleep(0.5)
            assert not sending.done()  # the C-STORE waits for the schema
            upgraded.set()
            assert sending.result(60).returncode == 0
        starting.join(60)
        assert job_states(node) == ["pending"]
    finally:
        upgraded.set()
        starting.join(60)
        node.stop()


def test_a_schema_that_cannot_be_created_stops_the_start_and_the_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_upgrade(database: Database, revision: str = "head") -> None:
        raise DatabaseError("cannot upgrade database: disk I/O error")

    monkeypatch.setattr(Database, "upgrade", failing_upgrade)
    config = receiving_only(tmp_path)
    node = Node(config, workers=False)

    with pytest.raises(DatabaseError, match="disk I/O error"):
        node.start()

    assert echoscu(config.node.port).returncode != 0
