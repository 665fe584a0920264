"""A received image is routed at once, not at the workers' next look: in one process, and from a
receiver process to a worker process through PostgreSQL. The safety-net period is ten minutes here."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures.database import PostgresServer
from fixtures.peers import NodeProcess, make_radiograph, storescu

SAFETY_NET = {"workers": {"poll_interval_s": 600.0}}


def test_received_image_is_routed_at_once_although_workers_look_only_every_ten_minutes(
    node_factory: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = node_factory(SAFETY_NET).start()
    # The worker's first look, at start, finds nothing; only a wake-up can route what follows.
    node.wait_for_events("worker_started")

    assert storescu(node.port, [make_radiograph(tmp_path / "spine.dcm")]).returncode == 0

    jobs = node.wait_until_routed(1, timeout_s=30)
    assert [job.state for job in jobs.values()] == ["queued"]  # routed, waiting for its model


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"wake_{os.getpid()}_{request.node.name[:30].lower()}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.mark.postgres
def test_receiver_process_wakes_a_worker_process_through_postgresql(
    node_factory: Callable[..., NodeProcess], postgres_url: str, tmp_path: Path
) -> None:
    receiver = node_factory(SAFETY_NET, database_url=postgres_url)
    receiver.start("--no-workers")
    worker_log = receiver.workdir / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            receiver.command("worker"), cwd=receiver.workdir, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while b"worker_started" not in worker_log.read_bytes():
            assert worker.poll() is None, worker_log.read_text()
            assert time.monotonic() < deadline, "the worker process did not start"
            time.sleep(0.1)
        time.sleep(1.0)  # let the first look and the LISTEN settle

        assert storescu(receiver.port, [make_radiograph(tmp_path / "spine.dcm")]).returncode == 0

        jobs = receiver.wait_until_routed(1, timeout_s=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(timeout=30)

    assert exit_code == 0, worker_log.read_text()
    assert [job.state for job in jobs.values()] == ["queued"]  # routed, waiting for its model
