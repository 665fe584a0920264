"""``/health`` says what is wrong and answers 503 only when the process cannot do its job; the
actions that change state need the admin token."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_world import ADMIN_TOKEN, AdminWorld, write_node_config
from fixtures.peers import NodeProcess, free_port, make_radiograph

from osteonode.config import NodeConfig, load_config
from osteonode.store.db import Database
from osteonode.store.spool import Spool
from osteonode.web import AdminServer, ProcessParts


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def serve_alone(tmp_path: Path) -> Iterator:
    """Start an AdminServer alone (no SCP, no workers) for a configuration and process parts."""
    started: list[tuple[AdminServer, Database]] = []

    def start(config: NodeConfig, parts: ProcessParts) -> str:
        config = config.model_copy(
            update={"http": config.http.model_copy(update={"port": free_port()})}
        )
        database = Database(config.database.url)
        database.upgrade()
        spool = Spool(config.storage.spool_dir)
        spool.ensure_writable()
        server = AdminServer(config, database, spool, parts)
        server.start()
        started.append((server, database))
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server, database in started:
        server.stop()
        database.dispose()


def test_health_passes_on_a_working_node_and_names_each_check(admin_world: AdminWorld) -> None:
    status, health = _get_json(admin_world.base_url + "/health")

    assert status == 200
    assert health["status"] == "pass"
    checks = {check["name"]: check for check in health["checks"]}
    assert {"database", "spool", "disk", "dicom", "workers", "pipeline:lumbar", "queue"} <= set(
        checks
    )
    assert (
        checks["dicom"]["detail"]
        == f"accepting associations on port {admin_world.config.node.port}"
    )
    assert checks["workers"]["detail"] == "1 worker threads alive"
    assert checks["pipeline:lumbar"]["detail"] == "loaded"


def test_health_warns_of_an_unloaded_pipeline_and_a_dead_worker_fails_it(
    tmp_path: Path, serve_alone
) -> None:
    config = load_config(write_node_config(tmp_path), environ={})
    dead_worker = threading.Thread(target=lambda: None)
    dead_worker.start()
    dead_worker.join()
    waiting_url = serve_alone(
        config,
        ProcessParts(
            pipelines={
                "lumbar": None,
                "chest": "model folder models/chest-site not found",
            },
        ),
    )
    stopped_url = serve_alone(config, ProcessParts(workers=lambda: [dead_worker]))

    waiting_status, waiting = _get_json(waiting_url + "/health")
    stopped_status, stopped = _get_json(stopped_url + "/health")

    assert (waiting_status, waiting["status"]) == (200, "warn")
    chest = next(check for check in waiting["checks"] if check["name"] == "pipeline:chest")
    assert (
        chest["detail"]
        == "not loaded: model folder models/chest-site not found; images for it stay queued"
    )
    assert (stopped_status, stopped["status"]) == (503, "fail")
    workers = next(check for check in stopped["checks"] if check["name"] == "workers")
    assert workers["detail"] == "1 of 1 worker threads have stopped"


def test_health_fails_when_the_disk_is_below_the_minimum_that_receiving_needs(
    tmp_path: Path, serve_alone
) -> None:
    config = load_config(
        write_node_config(tmp_path), environ={"OSTEONODE_STORAGE__MIN_FREE_MB": str(1 << 30)}
    )
    status, health = _get_json(serve_alone(config, ProcessParts()) + "/health")

    assert (status, health["status"]) == (503, "fail")
    disk = next(check for check in health["checks"] if check["name"] == "disk")
    assert disk["status"] == "fail" and "images are refused (0xA700)" in disk["detail"]


def _multipart(fields: dict[str, str], file: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file.name}"\r\n'
        "Content-Type: application/dicom\r\n\r\n".encode()
        + file.read_bytes()
        + b"\r\n"
    )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_retry_and_route_tester_need_the_admin_token(
    admin_world: AdminWorld, tmp_path: Path
) -> None:
    dead = admin_world.deliveries()[0].id
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    no_token = admin_world.post(f"/deliveries/{dead}/retry", b"", form)
    wrong = admin_world.post(f"/deliveries/{dead}/retry", b"token=not-the-token", form)
    body, content_type = _multipart({}, admin_world.lateral)
    route_unauthorised = admin_world.post("/route", body, {"Content-Type": content_type})
    route = admin_world.post(
        "/route", body, {"Content-Type": content_type, "Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    retried = admin_world.post(f"/deliveries/{dead}/retry", f"token={ADMIN_TOKEN}".encode(), form)

    assert no_token == (401, b"wrong or missing admin token\n")
    assert wrong == (401, b"wrong or missing admin token\n")
    assert route_unauthorised[0] == 401
    assert route[0] == 200
    assert b"skipped: <b>lateral_view</b>" in route[1]
    assert retried[0] == 200
    assert f"delivery {dead} queued again".encode() in retried[1]


def test_actions_are_refused_without_a_configured_token(tmp_path: Path, serve_alone) -> None:
    config = load_config(write_node_config(tmp_path, admin_token=None), environ={})
    url = serve_alone(config, ProcessParts())
    film = make_radiograph(tmp_path / "film.dcm")
    body, content_type = _multipart({"token": "anything-at-all-here"}, film)
    request = urllib.request.Request(
        url + "/route", data=body, headers={"Content-Type": content_type}, method="POST"
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    with urllib.request.urlopen(url + "/", timeout=30) as page:
        html = page.read().decode()

    assert refused.value.code == 403
    assert "set [http] admin_token" in refused.value.read().decode()
    assert 'action="/route"' not in html and "Set [http] admin_token to upload files here" in html


def test_health_warns_when_a_pipelines_results_are_sent_nowhere(
    tmp_path: Path, serve_alone
) -> None:
    config = load_config(
        write_node_config(tmp_path), environ={"OSTEONODE_PIPELINES__HIP__DESTINATIONS": "[]"}
    )
    status, health = _get_json(serve_alone(config, ProcessParts()) + "/health")

    assert (status, health["status"]) == (200, "warn")
    destinations = next(check for check in health["checks"] if check["name"] == "destinations")
    assert destinations["detail"].startswith("results of hip are stored but sent nowhere")


def test_config_show_never_prints_the_admin_token(tmp_path: Path) -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "osteonode",
            "config",
            "show",
            "--config",
            str(write_node_config(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert shown.returncode == 0, shown.stderr
    assert ADMIN_TOKEN not in shown.stdout
    assert json.loads(shown.stdout)["http"]["admin_token"] == "**********"


def test_serve_warns_at_start_when_results_are_sent_nowhere(node: NodeProcess) -> None:
    [warning] = node.wait_for_events("results_sent_nowhere")

    assert warning["level"] == "warning"
    enabled = [
        name
        for name, settings in load_config(node.config_path).pipelines.items()
        if settings.enabled
    ]
    assert warning["pipelines"] == enabled and "lumbar" in enabled
