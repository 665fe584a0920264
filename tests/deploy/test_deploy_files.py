"""deploy/: the systemd unit passes ``systemd-analyze verify``, the compose file passes
``docker-compose config`` and describes one node (two receivers, two workers, one PostgreSQL, one
spool, Orthanc as the PACS) whose parts agree with each other, and the image pins CPU PyTorch.

Containers cannot run on the test machine; the same topology is started without them in
``tests/node/test_topology.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.peers import require_binary

from osteonode.config import SHIPPED_PIPELINES, load_config
from osteonode.peers.orthanc import _NODE_OUTPUT_CLASS_PREFIXES

REPOSITORY = Path(__file__).resolve().parents[2]
DEPLOY = REPOSITORY / "deploy"
NODE_SERVICES = ("receiver-a", "receiver-b", "worker-a", "worker-b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    values = {
        key: re.sub(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}", "secret", value).replace(
            "${OSTEONODE_ADMIN_TOKEN:-}", ""
        )
        for key, value in service["environment"].items()
    }
    return values


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    # verify checks that ExecStart exists: point it at this checkout's osteonode.
    installed = Path(sys.executable).parent / "osteonode"
    unit = (DEPLOY / "systemd" / "osteonode@.service").read_text("utf-8")
    assert "ExecStart=/opt/osteonode/venv/bin/osteonode $NODE_COMMAND" in unit
    (tmp_path / "osteonode@.service").write_text(
        unit.replace("/opt/osteonode/venv/bin/osteonode", str(installed))
    )

    verified = subprocess.run(
        [analyze, "verify", str(tmp_path / "osteonode@node.service")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )

    assert verified.returncode == 0, verified.stderr
    assert "osteonode" not in verified.stderr, verified.stderr
    for hardening in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "User=osteonode",
    ):
        assert hardening in unit


def test_shipped_environment_file_names_a_command_and_leaves_the_configuration_loadable() -> None:
    text = (DEPLOY / "systemd" / "node.env").read_text("utf-8")
    environment = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    unit = (DEPLOY / "systemd" / "osteonode@.service").read_text("utf-8")
    environment["OSTEONODE_CONFIG"] = re.search(
        r"^Environment=OSTEONODE_CONFIG=(\S+)$", unit, re.M
    ).group(1)

    assert environment["NODE_COMMAND"] == "serve"
    # The node reads every OSTEONODE_* variable as a key override: the unit's own must not be one.
    shipped = REPOSITORY / "node_config" / "node.toml"
    assert load_config(shipped, environ=environment).node.ae_title == "OSTEONODE"


def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    docker_compose = require_binary("docker-compose")
    environment = dict(
        os.environ, POSTGRES_PASSWORD="secret", OSTEONODE_ADMIN_TOKEN="0123456789abcdef"
    )
    checked = subprocess.run(
        [
            docker_compose,
            "--project-name",
            "osteonode",
            "--file",
            str(DEPLOY / "compose.yaml"),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
    )
    assert checked.returncode == 0, checked.stderr

    unset = {key: value for key, value in environment.items() if key != "POSTGRES_PASSWORD"}
    refused = subprocess.run(
        [docker_compose, "--file", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=unset,
    )
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD" in refused.stderr


def test_compose_runs_two_receivers_and_two_workers_on_one_database_and_one_spool(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    commands = {name: services[name]["command"] for name in NODE_SERVICES}
    assert commands == {
        "receiver-a": ["serve", "--no-workers"],
        "receiver-b": ["serve", "--no-workers"],
        "worker-a": ["worker"],
        "worker-b": ["worker"],
    }
    for name in NODE_SERVICES:
        service = services[name]
        assert service["volumes"] == ["spool:/var/lib/osteonode"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        url = _environment(service)["OSTEONODE_DATABASE__URL"]
        assert url == "postgresql+psycopg://osteonode:secret@postgres:5432/osteonode"
    postgres = services["postgres"]["environment"]
    assert (postgres["POSTGRES_DB"], postgres["POSTGRES_USER"]) == ("osteonode", "osteonode")
    # Each process's HTTP port reaches only the host's loopback.
    published = [
        port for name in NODE_SERVICES for port in services[name]["ports"] if port.endswith(":8480")
    ]
    assert len(published) == 4 and all(port.startswith("127.0.0.1:") for port in published)


def test_container_configuration_loads_and_sends_to_the_compose_orthanc(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    environment = _environment(compose["services"]["worker-a"])
    config = load_config(DEPLOY / "node.toml", environ=environment)
    orthanc = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text("utf-8"))

    assert config.storage.spool_dir.parent == Path("/var/lib/osteonode")
    assert config.models.dir == Path("/opt/osteonode/models")
    assert config.database.url.startswith("postgresql+psycopg://")
    assert config.http.admin_token is None  # an unset variable means no token, not a bad one
    pacs = config.destinations["pacs"]
    assert (pacs.ae_title, pacs.host, pacs.port) == (
        orthanc["DicomAet"],
        "orthanc",
        orthanc["DicomPort"],
    )
    assert {name: settings.destinations for name, settings in config.pipelines.items()} == {
        name: ["pacs"] for name in SHIPPED_PIPELINES
    }
    assert (
        f"{orthanc['DicomPort']}:{orthanc['DicomPort']}" in compose["services"]["orthanc"]["ports"]
    )
    # Orthanc forwards to the receivers by service name, AE title and container port.
    receivers = {name: entry for name, entry in orthanc["DicomModalities"].items()}
    assert sorted(entry[1] for entry in receivers.values()) == ["receiver-a", "receiver-b"]
    assert all(
        entry[0] == config.node.ae_title and entry[2] == config.node.port
        for entry in receivers.values()
    )
    script = (DEPLOY / "orthanc" / "forward.lua").read_text("utf-8")
    lua_receivers = re.search(r"RECEIVERS = \{([^}]*)\}", script).group(1)
    assert sorted(re.findall(r"'([^']+)'", lua_receivers)) == sorted(receivers)
    lua_prefixes = re.search(r"NODE_OUTPUT_CLASSES = \{([^}]*)\}", script).group(1)
    assert tuple(re.findall(r"'([^']+)'", lua_prefixes)) == _NODE_OUTPUT_CLASS_PREFIXES


def test_image_pins_the_cpu_torch_of_pyproject_and_checks_health() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text("utf-8")
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text("utf-8"))
    pinned = next(item for item in project["project"]["dependencies"] if item.startswith("torch=="))
    defaults = load_config(None, environ={"OSTEONODE_CONFIG": str(DEPLOY / "node.toml")})

    assert f"ARG TORCH_VERSION={pinned.removeprefix('torch==')}" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert f"EXPOSE {defaults.node.port} {defaults.http.port}" in dockerfile
    assert f"http://127.0.0.1:{defaults.http.port}/health" in dockerfile
    assert "USER osteonode" in dockerfile
    copied = [
        source
        for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert "models" in copied and all((REPOSITORY / source).exists() for source in copied), copied
