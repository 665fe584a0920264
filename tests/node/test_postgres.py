"""Receive and route against PostgreSQL, embedded and scaled out (receiver + separate workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from fixtures.database import PostgresServer
from fixtures.peers import NodeProcess, make_radiograph, storescu

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"node_{os.getpid()}_{request.node.name[:30].lower()}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def test_serve_receives_and_routes_on_postgresql(
    node_factory: Callable[..., NodeProcess], postgres_url: str, tmp_path: Path
) -> None:
    node = node_factory(database_url=postgres_url).start()
    spine = make_radiograph(tmp_path / "spine.dcm")
    lateral = make_radiograph(tmp_path / "lateral.dcm", view="LATERAL", body_part="HIP")

    sent = storescu(node.port, [spine, lateral])

    assert sent.returncode == 0, sent.stderr
    jobs = node.wait_until_routed(2)
    assert jobs[pydicom.dcmread(spine).SOPInstanceUID].pipeline == "lumbar"
    assert jobs[pydicom.dcmread(lateral).SOPInstanceUID].skip_reason == "lateral_view"


def test_receiver_without_workers_and_two_worker_processes_share_the_queue(
    node_factory: Callable[..., NodeProcess], postgres_url: str, tmp_path: Path
) -> None:
    receiver = node_factory({"workers": {"count": 2}}, database_url=postgres_url)
    receiver.start("--no-workers")
    images = [make_radiograph(tmp_path / f"image{index}.dcm", seed=index) for index in range(12)]
    assert storescu(receiver.port, images).returncode == 0
    assert all(job.state == "pending" for job in receiver.jobs().values())

    workers = []
    for index in range(2):
        log = (receiver.workdir / f"worker{index}.log").open("wb")
        workers.append(
            subprocess.Popen(
                receiver.command("worker"), cwd=receiver.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        )
        log.close()
    try:
        jobs = receiver.wait_until_routed(len(images), timeout_s=60)
        # Both workers must be up before they are stopped (one may still be starting when the
        # other has routed everything); a stop during start-up is covered by the SIGTERM tests.
        deadline = time.monotonic() + 60
        while not all(
            b"worker_started" in (receiver.workdir / f"worker{index}.log").read_bytes() for index in range(2)
        ):
            assert time.monotonic() < deadline, "a worker process did not start"
            time.sleep(0.2)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        exit_codes = [process.wait(timeout=30) for process in workers]

    assert exit_codes == [0, 0]
    assert {(job.state, job.pipeline) for job in jobs.values()} == {("queued", "lumbar")}
    claims = Counter(
        details["worker_id"] for kind, details in receiver.event_kinds() if kind == "job_claimed"
    )
    assert sum(claims.values()) == len(images)  # every job claimed exactly once
