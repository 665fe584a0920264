"""No job stops the workers: what a job raises is recorded, a dead worker thread is restarted, a stuck
one is reported, and ``osteonode status`` shows each worker's state."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from fixtures.peers import make_radiograph, require_binary, toml_document
from sqlalchemy import select
from test_worker import LUMBAR_ONLY, RowCountingPipeline, receive

from osteonode.config import NodeConfig
from osteonode.imaging.pixels import Radiograph
from osteonode.pipelines.base import Result
from osteonode.service import Node
from osteonode.store.db import Database
from osteonode.store.queue import claim_job, reclaim_expired_leases
from osteonode.store.spool import Spool
from osteonode.store.tables import Job, WorkerState, utc_now
from osteonode.store.workers import WorkerHealth, record_heartbeat, worker_health
from osteonode.worker import Worker


class PanicException(BaseException):
    """What a Rust extension raises on a panic: a BaseException, missed by ``except Exception``."""


class PanickingPipeline:
    name = "lumbar"

    def run(self, radiograph: Radiograph) -> Result:
        raise PanicException("index out of bounds: the len is 125952 but the index is 125953")


class ExitingOncePipeline(RowCountingPipeline):
    """Calls sys.exit() the first time, as a careless library might; works afterwards."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, radiograph: Radiograph) -> Result:
        self.calls += 1
        if self.calls == 1:
            sys.exit("library gave up")
        return super().run(radiograph)


class BlockingPipeline(RowCountingPipeline):
    """Holds its first image until released: a worker stuck in a pipeline."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, radiograph: Radiograph) -> Result:
        self.release.wait(30)
        return super().run(radiograph)


def _config(tmp_path: Path, database_url: str, **workers: float) -> NodeConfig:
    settings = {"poll_interval_s": 0.05, "heartbeat_interval_s": 0.2, **workers}
    return NodeConfig.model_validate(
        {
            "database": {"url": database_url},
            "storage": {"spool_dir": str(tmp_path / "spool"), "min_free_mb": 1},
            "workers": {"count": 1, **settings},
            "pipelines": {"lumbar_ap": {"enabled": False}},  # a frontal lumbar film has one job
        }
    )


@pytest.fixture
def running_node(
    tmp_path: Path, database: Database, database_url: str
) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(pipeline: object, **workers: float) -> Node:
        config = _config(tmp_path, database_url, **workers)
        node = Node(config, scp=False, pipelines={"lumbar": pipeline})  # type: ignore[dict-item]
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(grace_s=5)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _job_states(database: Database) -> list[str]:
    with database.session() as session:
        return [str(state) for state in session.scalars(select(Job.state).order_by(Job.id))]


def _reported(database: Database) -> list[WorkerHealth]:
    with database.session() as session:
        return worker_health(session, silent_after=timedelta(seconds=5))


def _status_json(tmp_path: Path, database_url: str) -> dict:
    config = tmp_path / "status.toml"
    config.write_text(
        toml_document({"database": {"url": database_url}, "workers": {"heartbeat_interval_s": 0.2}})
    )
    done = subprocess.run(
        [sys.executable, "-m", "osteonode", "status", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_panic_in_a_job_is_recorded_on_the_job_and_the_worker_goes_on(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    worker = Worker(
        LUMBAR_ONLY, database, spool, pipelines={"lumbar": PanickingPipeline()}
    )

    while worker.process_next():
        pass

    with database.session() as session:
        job = session.scalars(select(Job)).one()
        assert str(job.state) == "failed"
        assert job.error.startswith("PanicException: index out of bounds")


def test_file_that_breaks_the_decoder_is_refused_once_with_the_decoder_reason(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    image = make_radiograph(tmp_path / "spine.dcm")
    ds = pydicom.dcmread(image)
    ds.Rows = ds.Columns = 8192  # 128 KB of pixel data declaring 67 million pixels
    ds.save_as(image)
    receive(database, spool, image)
    receive(database, spool, make_radiograph(tmp_path / "good.dcm"))
    worker = Worker(
        LUMBAR_ONLY, database, spool, pipelines={"lumbar": RowCountingPipeline()}
    )

    while worker.process_next():
        pass

    with database.session() as session:
        bad, good = session.scalars(select(Job).order_by(Job.id)).all()
        assert (str(bad.state), bad.skip_reason, bad.attempts) == ("skipped", "image_error", 1)
        assert bad.skip_detail.startswith("too_large: the header declares 8192 x 8192")
        assert str(good.state) == "done"


def test_file_that_aborts_the_decoder_is_quarantined_with_the_reason_and_the_worker_goes_on(
    database: Database, tmp_path: Path
) -> None:
    # JPEG-LS near-lossless whose Rows is 100 more than encoded: pylibjpeg refuses it, then GDCM
    # throws a C++ exception nobody catches, and its process aborts (SIGABRT).
    spool = Spool(tmp_path / "spool")
    source = make_radiograph(tmp_path / "spine.dcm")
    encoded = tmp_path / "spine-jpeg-ls.dcm"
    subprocess.run([require_binary("dcmcjpls"), "+en", str(source), str(encoded)], check=True)
    ds = pydicom.dcmread(encoded)
    ds.Rows = ds.Rows + 100
    ds.save_as(encoded)
    receive(database, spool, encoded)
    receive(database, spool, make_radiograph(tmp_path / "good.dcm"))
    worker = Worker(
        LUMBAR_ONLY, database, spool, pipelines={"lumbar": RowCountingPipeline()}
    )

    while worker.process_next():
        pass

    with database.session() as session:
        bad, good = session.scalars(select(Job).order_by(Job.id)).all()
        assert (str(bad.state), bad.skip_reason, bad.attempts) == ("skipped", "image_error", 1)
        assert bad.skip_detail.startswith(
            "decoder_crashed: the decoder process was killed by SIGABRT"
        )
        assert str(good.state) == "done"


def test_truncated_deflated_file_is_skipped_as_unreadable_at_once(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    deflated = tmp_path / "deflated.dcm"
    subprocess.run(
        [
            require_binary("dcmconv"),
            "+td",
            str(make_radiograph(tmp_path / "spine.dcm")),
            str(deflated),
        ],
        check=True,
    )
    receive(database, spool, deflated)
    with database.session() as session:
        stored = spool.path(session.scalars(select(Job)).one().instance.spool_path)
    stored.write_bytes(stored.read_bytes()[:2000])  # as a sender cut off mid-stream would leave it
    worker = Worker(LUMBAR_ONLY, database, spool, pipelines={})

    worker.process_next()

    with database.session() as session:
        job = session.scalars(select(Job)).one()
        assert (str(job.state), job.skip_reason, job.attempts) == ("skipped", "unreadable", 1)
        assert "decompressing" in job.skip_detail


def test_worker_thread_that_dies_is_restarted_and_status_tells_why(
    running_node: Callable[..., Node], database: Database, database_url: str, tmp_path: Path
) -> None:
    pipeline = ExitingOncePipeline()
    node = running_node(pipeline)
    first = node.workers[0]
    for name in ("one.dcm", "two.dcm"):
        receive(database, node.spool, make_radiograph(tmp_path / name))

    _wait_for(lambda: _job_states(database) == ["done", "done"])

    assert not first.is_alive() and node.workers[0] is not first
    [health] = node.worker_health()
    assert health.restarts == 1 and health.last_error == "SystemExit: library gave up"
    _wait_for(lambda: _reported(database)[0].restarts == 1)
    [reported] = _status_json(tmp_path, database_url)["workers"]
    assert (reported["state"], reported["restarts"]) in {("idle", 1), ("busy", 1)}
    assert reported["last_error"] == "SystemExit: library gave up"
    with database.session() as session:
        first_job = session.scalars(select(Job).order_by(Job.id)).first()
        assert first_job.attempts == 2  # the attempt the thread died in was recorded as failed


def test_worker_on_one_job_too_long_is_reported_stuck(
    running_node: Callable[..., Node], database: Database, database_url: str, tmp_path: Path
) -> None:
    pipeline = BlockingPipeline()
    node = running_node(pipeline, stuck_after_s=0.5)
    receive(database, node.spool, make_radiograph(tmp_path / "spine.dcm"))

    try:
        _wait_for(lambda: node.worker_health()[0].state is WorkerState.STUCK)
        time.sleep(0.5)  # a heartbeat after it became stuck
        [reported] = _status_json(tmp_path, database_url)["workers"]
        assert reported["state"] == "stuck" and reported["healthy"] is False
        assert reported["job_id"] is not None
    finally:
        pipeline.release.set()
    _wait_for(lambda: _job_states(database) == ["done"])
    _wait_for(lambda: node.worker_health()[0].state is WorkerState.IDLE)


def test_workers_of_a_process_that_stopped_sending_heartbeats_read_as_gone(
    database: Database,
) -> None:
    now = utc_now()
    with database.session() as session:
        for worker_id, seen in (
            ("host:1:worker-0", now - timedelta(minutes=5)),
            ("host:2:worker-0", now),
        ):
            record_heartbeat(
                session,
                worker_id=worker_id,
                host="host",
                pid=int(worker_id.split(":")[1]),
                state=WorkerState.BUSY,
                job_id=7,
                state_since=seen,
                started_at=seen,
                restarts=0,
                last_error=None,
                now=seen,
            )
    with database.session() as session:
        health = worker_health(session, silent_after=timedelta(seconds=30), now=now)

    assert [(item.worker_id, item.state) for item in health] == [
        ("host:1:worker-0", WorkerState.GONE),
        ("host:2:worker-0", WorkerState.BUSY),
    ]
    assert not health[0].healthy and health[1].healthy


def test_stopped_node_reports_its_workers_stopped(
    running_node: Callable[..., Node], database: Database
) -> None:
    node = running_node(RowCountingPipeline())
    node.stop(grace_s=5)

    with database.session() as session:
        [health] = worker_health(
            session, silent_after=timedelta(seconds=1), now=utc_now() + timedelta(hours=1)
        )
    assert health.state is WorkerState.STOPPED


def test_job_whose_worker_fell_silent_fails_with_what_that_worker_last_reported(
    database: Database, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    receive(database, spool, make_radiograph(tmp_path / "spine.dcm"))
    owner = "host:4242:worker-0"
    with database.session() as session:
        job = claim_job(session, worker_id=owner, lease_seconds=1, pipelines=())
        job.max_attempts = 1
        seen = utc_now()
        record_heartbeat(
            session,
            worker_id=owner,
            host="host",
            pid=4242,
            state=WorkerState.BUSY,
            job_id=job.id,
            state_since=seen,
            started_at=seen,
            restarts=0,
            last_error=None,
            now=seen,
        )

    with database.session() as session:
        reclaim_expired_leases(session, utc_now() + timedelta(seconds=5))
    with database.session() as session:
        failed = session.scalars(select(Job)).one()

    assert str(failed.state) == "failed"
    assert (
        f"lease of {owner} expired on attempt 1; its worker last reported busy on job {failed.id} at "
        in failed.error
    )
