"""What the node would run into at start, found before it starts: ``osteonode config check``.

:func:`osteonode.config.check_config` checks the file itself (keys, types, references between
sections, a writable spool). :func:`preflight` takes a valid configuration and looks at the world it
names, the way start-up and the first hours of running would:

* errors, which stop the node at start or leave it unable to do its job: unusable TLS files (the
  node's and each destination's), an allow-list host that does not resolve, a database that
  cannot be reached, a missing models folder;
* warnings, which the node survives but an operator should know of: an enabled pipeline whose
  model is not installed (its images wait), results that go nowhere (an enabled pipeline without
  destinations), a destination host that does not resolve now, an allow-list that admits nobody,
  a SQLite database in a folder that does not exist yet.

Nothing is created or changed: no database file or folder, no schema.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from osteonode.config import NodeConfig, TlsSettings
from osteonode.dicom.admission import resolve_allow_list
from osteonode.dicom.tls import TlsError, client_context, server_context
from osteonode.store.db import Database, DatabaseError, DatabaseNotCreated, normalize_database_url

__all__ = ["Finding", "Severity", "preflight"]


class Severity(enum.StrEnum):
    """How much a finding matters: errors make ``config check`` fail."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One thing the node would run into: the dotted key to look at, why, and how much it matters."""

    key: str
    reason: str
    severity: Severity

    def __str__(self) -> str:
        return f"{self.severity}: {self.key}: {self.reason}"


def preflight(config: NodeConfig) -> list[Finding]:
    """Everything the node would run into with ``config`` on this machine, errors first.

    Parameters
    ----------
    config
        A valid configuration (:func:`osteonode.config.load_config`).

    Returns
    -------
    list of Finding
        Empty when nothing is in the way.
    """
    if not isinstance(config, NodeConfig):
        raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
    findings = [
        *_tls(config),
        *_allow_list(config),
        *_database(config),
        *_models(config),
        *_destinations(config),
        *_results_going_nowhere(config),
    ]
    return sorted(findings, key=lambda finding: finding.severity is not Severity.ERROR)


def _tls(config: NodeConfig) -> list[Finding]:
    contexts: list[tuple[Callable[..., object], TlsSettings, str]] = []
    if config.tls.enabled:
        contexts.append((server_context, config.tls, "tls"))
    for name, destination in config.destinations.items():
        if destination.tls.enabled:
            contexts.append((client_context, destination.tls, f"destinations.{name}.tls"))
    findings = []
    for build, settings, key in contexts:
        try:
            build(settings, key=key)
        except TlsError as error:
            failed_key, _, reason = str(error).partition(": ")
            findings.append(Finding(failed_key, reason, Severity.ERROR))
    return findings


def _allow_list(config: NodeConfig) -> list[Finding]:
    key = "association.allowed_callers"
    if not config.association.allowed_callers:
        return [Finding(key, "empty: every association request will be refused", Severity.WARNING)]
    try:
        resolve_allow_list(config.association)
    except ValueError as error:
        return [Finding(key, str(error).removeprefix(f"{key}: "), Severity.ERROR)]
    return []


def _database(config: NodeConfig) -> list[Finding]:
    key = "database.url"
    try:
        Database.open_existing(config.database.url).dispose()
    except DatabaseNotCreated:
        # A database the node creates at start is no finding, unless its folder is missing too.
        url = normalize_database_url(config.database.url)
        folder = Path(url.database or "").parent
        if url.get_backend_name() == "sqlite" and not folder.is_dir():
            return [
                Finding(
                    key,
                    f"folder {folder} does not exist: the node will create it and an empty database "
                    "there when it starts (check the URL if a database should be there already)",
                    Severity.WARNING,
                )
            ]
    except DatabaseError as error:
        return [Finding(key, str(error), Severity.ERROR)]
    return []


def _models(config: NodeConfig) -> list[Finding]:
    root = config.models.dir
    if not root.is_dir():
        return [
            Finding(
                "models.dir",
                f"folder {root} does not exist: no pipeline can run, and received images wait",
                Severity.ERROR,
            )
        ]
    from osteonode.zoo import ModelCard, list_models  # torch: imported only when models exist

    found = {folder.name: card for folder, card in list_models(root)}
    findings = []
    for pipeline, settings in config.pipelines.items():
        if not settings.enabled:
            continue
        name = settings.model_name(pipeline)
        card = found.get(name)
        if isinstance(card, ModelCard):
            continue
        why = (
            f"model folder {root / name} does not exist"
            if card is None
            else f"model {name}: {card}"
        )
        findings.append(
            Finding(
                f"pipelines.{pipeline}.model",
                f"{why}: images routed to {pipeline} wait until it is installed",
                Severity.WARNING,
            )
        )
    return findings


def _destinations(config: NodeConfig) -> list[Finding]:
    findings = []
    for name, destination in config.destinations.items():
        try:
            socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            findings.append(
                Finding(
                    f"destinations.{name}.host",
                    f"{destination.host!r} does not resolve now ({error.strerror}): results for "
                    f"{name} wait and are retried",
                    Severity.WARNING,
                )
            )
    return findings


def _results_going_nowhere(config: NodeConfig) -> list[Finding]:
    findings = []
    for pipeline, settings in config.pipelines.items():
        rules_with_destinations = any(
            pipeline in rule.pipelines and rule.destinations for rule in config.routing.rules
        )
        if settings.enabled and not settings.destinations and not rules_with_destinations:
            findings.append(
                Finding(
                    f"pipelines.{pipeline}.destinations",
                    f"empty: results of {pipeline} are stored but sent nowhere",
                    Severity.WARNING,
                )
            )
    return findings
