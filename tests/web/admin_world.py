"""The admin world of the web tests: a node with its HTTP port, and how the tests talk to it."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.peers import NODE_AE, free_port, toml_document
from sqlalchemy import select

from osteonode.config import NodeConfig
from osteonode.service import Node
from osteonode.store.db import Database
from osteonode.store.tables import Delivery

REPOSITORY = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-0123456789"


@dataclass
class AdminWorld:
    """The running node, its HTTP address and the films it was sent."""

    node: Node
    config: NodeConfig
    base_url: str
    spine: Path
    not_evaluable: Path
    lateral: Path

    def get(self, path: str) -> tuple[int, str, bytes]:
        """GET a path; returns (status, content type, body) whatever the status."""
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=30) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST a body; returns (status, body) whatever the status."""
        request = urllib.request.Request(
            self.base_url + path, data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def query(self, read: Callable[[Any], Any]) -> Any:
        """Run ``read(session)`` on the node's database."""
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


def write_node_config(tmp_path: Path, *, admin_token: str | None = ADMIN_TOKEN) -> Path:
    """The node's configuration: loopback ports, a dead-end destination, the repository's models."""
    http: dict[str, Any] = {"host": "127.0.0.1", "port": free_port()}
    if admin_token is not None:
        http["admin_token"] = admin_token
    config = tmp_path / "node.toml"
    config.write_text(
        toml_document(
            {
                "node": {"ae_title": NODE_AE, "host": "127.0.0.1", "port": free_port()},
                "storage": {"spool_dir": tmp_path / "spool", "min_free_mb": 1},
                "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
                "workers": {"count": 1, "poll_interval_s": 0.1},
                "delivery": {"interval_s": 0.2},
                "logging": {"format": "json"},
                "http": http,
                "models": {"dir": REPOSITORY / "models"},
                "destinations.pacs": {
                    "ae_title": "NOBODY",
                    "host": "127.0.0.1",
                    "port": free_port(),
                    "max_attempts": 1,
                    "timeout_s": 2.0,
                },
                "pipelines.lumbar": {"destinations": ["pacs"]},
                "pipelines.chest": {"destinations": ["pacs"]},
                "pipelines.hip": {"destinations": ["pacs"]},
                # Frontal lumbar films go to `lumbar` alone, which the stand-in runs.
                "pipelines.lumbar_ap": {"enabled": False},
                "pipelines.lumbar_lateral": {"enabled": False},
            }
        ),
        encoding="utf-8",
    )
    return config
