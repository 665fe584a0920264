"""The compose topology without containers: two receivers and two workers, as separate processes on
one PostgreSQL database and one spool, running the shipped models. Every image sent to either
receiver is analysed exactly once, and any process's /metrics counts the work of all of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fixtures.database import PostgresServer
from fixtures.peers import NODE_AE, free_port, pynetdicom_store, toml_document
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from osteonode.phantoms import make_cohort
from osteonode.phantoms.cohort import SAMPLE_SIZE
from osteonode.store.db import Database
from osteonode.store.tables import Event, EventKind, Instance, Job, JobState, Result

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPOSITORY = Path(__file__).resolve().parents[2]
IMAGES = 6
#: Loading torch and three models in four processes on a busy two-core machine.
START_TIMEOUT_S = 240


class Process:
    """One process of the node: ``osteonode <arguments>`` with its own ports and log."""

    def __init__(self, workdir: Path, config: Path, name: str, *arguments: str) -> None:
        self.name = name
        self.dicom_port, self.http_port = free_port(), free_port()
        self.log_path = workdir / f"{name}.log"
        environment = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            OSTEONODE_NODE__PORT=str(self.dicom_port),
            OSTEONODE_HTTP__PORT=str(self.http_port),
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "osteonode", *arguments, "--config", str(config)],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
            )

    def logged(self, event: str) -> bool:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and json.loads(line).get("event") == event:
                return True
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log_path.read_text()}")
        return False

    def get(self, path: str) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.http_port}{path}", timeout=30
        ) as answer:
            return answer.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"topology_{os.getpid()}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_two_receivers_and_two_workers_analyse_every_image_once(
    tmp_path: Path, postgres_url: str
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        toml_document(
            {
                "node": {"ae_title": NODE_AE, "host": "127.0.0.1"},
                "storage": {"spool_dir": tmp_path / "spool", "min_free_mb": 1},
                "database": {"url": postgres_url},
                "workers": {"count": 1, "poll_interval_s": 0.2, "reclaim_interval_s": 2.0},
                "logging": {"format": "json"},
                "models": {"dir": REPOSITORY / "models"},
                "http": {"host": "127.0.0.1"},
                # The lumbar view classifiers have no shipped weights: films go to `lumbar` only.
                "pipelines.lumbar_ap": {"enabled": False},
                "pipelines.lumbar_lateral": {"enabled": False},
            }
        ),
        "utf-8",
    )
    cohort = make_cohort("lumbar", IMAGES, tmp_path / "phantoms", seed=11, size=SAMPLE_SIZE)
    films = sorted(cohort.parent.glob("*.dcm"))
    processes = [
        Process(tmp_path, config, "receiver-a", "serve", "--no-workers"),
        Process(tmp_path, config, "receiver-b", "serve", "--no-workers"),
        Process(tmp_path, config, "worker-a", "worker"),
        Process(tmp_path, config, "worker-b", "worker"),
    ]
    receivers, workers = processes[:2], processes[2:]
    try:
        _wait(
            lambda: all(p.logged("scp_listening") for p in receivers),
            START_TIMEOUT_S,
            "receivers listening",
        )
        for index, receiver in enumerate(receivers):
            # pynetdicom sends each phantom in its own transfer syntax (some are RLE).
            assert pynetdicom_store(receiver.dicom_port, films[index::2]) == [0x0000] * (
                IMAGES // 2
            )
        _wait(
            lambda: all(p.logged("worker_started") for p in workers),
            START_TIMEOUT_S,
            "workers started",
        )

        database = Database(postgres_url)
        try:

            def finished() -> bool:
                with database.session() as session:
                    states = list(session.scalars(select(Job.state)))
                return len(states) == IMAGES and all(state is JobState.DONE for state in states)

            _wait(finished, START_TIMEOUT_S, "every job done")
            with database.session() as session:
                instances = list(session.scalars(select(Instance)))
                results_per_instance = Counter(session.scalars(select(Result.instance_id)))
                stored = list(
                    session.scalars(select(Event).where(Event.kind == EventKind.RESULT_STORED))
                )
        finally:
            database.dispose()
        metrics = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(receivers[0].get("/metrics"))
            for sample in family.samples
        }
        health = json.loads(receivers[1].get("/health"))
    finally:
        exit_codes = [process.stop() for process in processes]

    assert exit_codes == [0, 0, 0, 0]
    assert sorted(instance.sop_instance_uid for instance in instances) == sorted(
        str(pydicom.dcmread(film, stop_before_pixels=True).SOPInstanceUID) for film in films
    )
    assert all((tmp_path / "spool" / instance.spool_path).is_file() for instance in instances)
    assert set(results_per_instance.values()) == {1} and len(results_per_instance) == IMAGES
    assert len(stored) == IMAGES
    # A receiver, which analyses nothing itself, counts what the workers did.
    assert metrics[("osteonode_images_received_total", ())] == IMAGES
    assert metrics[("osteonode_images_analysed_total", (("pipeline", "lumbar"),))] == IMAGES
    # Phase durations come from PostgreSQL's timestamps: every analysis took some time.
    assert metrics[("osteonode_phase_duration_seconds_count", (("phase", "analysis"),))] == IMAGES
    assert metrics[("osteonode_phase_duration_seconds_sum", (("phase", "analysis"),))] > 0
    # Only the missing destination is worth a warning: this node sends its results nowhere.
    assert {check["name"] for check in health["checks"] if check["status"] != "pass"} == {
        "destinations"
    }
