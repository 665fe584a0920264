"""``/health``: is this node process able to do its job, and if not, why.

Each check answers ``pass``, ``warn`` or ``fail`` with a sentence (the status words of the IETF
"Health Check Response Format for HTTP APIs" draft, which load balancers and monitoring tools read).
The whole answer is the worst of its checks; only ``fail`` makes the endpoint answer 503, so a
container orchestrator restarts a process that cannot receive or store, but not one that is merely
waiting for a site's model to be installed (images for it stay queued, nothing is lost).

What the checks look at is shared state (database, spool, disk) and this process's own parts
(its worker threads, the pipelines it loaded); several processes of one node each answer for
themselves.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text

from osteonode.config import NodeConfig
from osteonode.dicom.scp import StorageSCP
from osteonode.store.db import Database
from osteonode.store.spool import Spool
from osteonode.store.tables import Job, JobState

__all__ = [
    "Check",
    "CheckStatus",
    "Health",
    "ProcessParts",
    "check_health",
    "pipelines_sending_nowhere",
]

_MEBIBYTE = 1024 * 1024


class CheckStatus(enum.StrEnum):
    """How one check, or the whole process, is doing."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_SEVERITY = {CheckStatus.PASS: 0, CheckStatus.WARN: 1, CheckStatus.FAIL: 2}


@dataclass(frozen=True)
class ProcessParts:
    """What runs in this process, for the checks that concern it.

    Parameters
    ----------
    scp
        The storage SCP of this process; None in a process that only works.
    workers
        The worker threads of this process now (none for a receive-only process): a restarted
        worker replaces the one that died, so it is asked at each check.
    pipelines
        Each pipeline this process tried to load: None when loaded, else why not. Empty in a
        process without workers.
    """

    scp: StorageSCP | None = None
    workers: Callable[[], Sequence[threading.Thread]] = tuple
    pipelines: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    status: CheckStatus
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"name": self.name, "status": self.status.value, "detail": self.detail}


@dataclass(frozen=True)
class Health:
    """Every check, and the worst of them."""

    checks: tuple[Check, ...]

    @property
    def status(self) -> CheckStatus:
        """The worst status of any check."""
        return max(
            (check.status for check in self.checks),
            key=_SEVERITY.__getitem__,
            default=CheckStatus.PASS,
        )

    @property
    def http_status(self) -> int:
        """503 when a check failed, else 200."""
        return 503 if self.status is CheckStatus.FAIL else 200

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"status": ..., "checks": [...]}``."""
        return {"status": self.status.value, "checks": [check.to_dict() for check in self.checks]}


def check_health(
    config: NodeConfig, database: Database, spool: Spool, parts: ProcessParts
) -> Health:
    """Run every check now.

    Parameters
    ----------
    config
        The node configuration.
    database
        The node's database.
    spool
        The node's spool.
    parts
        What runs in this process.
    """
    checks = [
        _database(database),
        _spool(spool),
        _disk(config, spool),
        _dicom(parts),
        _workers(parts),
    ]
    checks.extend(_pipelines(parts))
    checks.append(_destinations(config))
    checks.append(_queue(database))
    return Health(tuple(checks))


def _database(database: Database) -> Check:
    try:
        with database.session() as session:
            session.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure to reach it is the answer
        return Check(
            "database",
            CheckStatus.FAIL,
            f"cannot query {database!r}: {type(error).__name__}: {error}",
        )
    return Check("database", CheckStatus.PASS, f"{database!r} answers")


def _spool(spool: Spool) -> Check:
    root = spool.root
    if not root.is_dir():
        return Check("spool", CheckStatus.FAIL, f"spool directory {root} does not exist")
    if not os.access(root, os.W_OK | os.X_OK):
        return Check(
            "spool", CheckStatus.FAIL, f"spool directory {root} is not writable by this process"
        )
    return Check("spool", CheckStatus.PASS, f"{root} is writable")


def _disk(config: NodeConfig, spool: Spool) -> Check:
    try:
        free_mb = spool.free_bytes() // _MEBIBYTE
    except OSError as error:
        return Check(
            "disk", CheckStatus.FAIL, f"cannot read the free space of {spool.root}: {error}"
        )
    minimum = config.storage.min_free_mb
    if free_mb < minimum:
        return Check(
            "disk",
            CheckStatus.FAIL,
            f"{free_mb} MiB free, below storage.min_free_mb = {minimum}: "
            "images are refused (0xA700)",
        )
    if free_mb < 2 * minimum:
        return Check(
            "disk",
            CheckStatus.WARN,
            f"{free_mb} MiB free, less than twice storage.min_free_mb = {minimum}",
        )
    return Check("disk", CheckStatus.PASS, f"{free_mb} MiB free (minimum {minimum})")


def _dicom(parts: ProcessParts) -> Check:
    if parts.scp is None:
        return Check("dicom", CheckStatus.PASS, "no storage SCP in this process (work only)")
    if not parts.scp.is_running:
        return Check("dicom", CheckStatus.FAIL, "the storage SCP is not accepting associations")
    return Check("dicom", CheckStatus.PASS, f"accepting associations on port {parts.scp.port}")


def _workers(parts: ProcessParts) -> Check:
    workers = parts.workers()
    if not workers:
        return Check("workers", CheckStatus.PASS, "no workers in this process (receive only)")
    alive = sum(1 for worker in workers if worker.is_alive())
    total = len(workers)
    if alive < total:
        return Check(
            "workers", CheckStatus.FAIL, f"{total - alive} of {total} worker threads have stopped"
        )
    return Check("workers", CheckStatus.PASS, f"{alive} worker threads alive")


def _pipelines(parts: ProcessParts) -> list[Check]:
    checks = []
    for name, reason in sorted(parts.pipelines.items()):
        if reason is None:
            checks.append(Check(f"pipeline:{name}", CheckStatus.PASS, "loaded"))
        else:
            checks.append(
                Check(
                    f"pipeline:{name}",
                    CheckStatus.WARN,
                    f"not loaded: {reason}; images for it stay queued",
                )
            )
    return checks


def pipelines_sending_nowhere(config: NodeConfig) -> list[str]:
    """Enabled pipelines whose results no destination receives (neither theirs nor a rule's).

    A new site's first surprise: results are made and stored, but no pipeline names a PACS.
    """
    unsent = []
    for name, settings in config.pipelines.items():
        by_rule = any(name in rule.pipelines and rule.destinations for rule in config.routing.rules)
        if settings.enabled and not settings.destinations and not by_rule:
            unsent.append(name)
    return unsent


def _destinations(config: NodeConfig) -> Check:
    unsent = pipelines_sending_nowhere(config)
    if unsent:
        return Check(
            "destinations",
            CheckStatus.WARN,
            f"results of {', '.join(unsent)} are stored but sent nowhere: name a destination in"
            " [pipelines.<name>] destinations (docs/operator-guide.md, section 4)",
        )
    return Check("destinations", CheckStatus.PASS, "every enabled pipeline sends its results")


def _queue(database: Database) -> Check:
    # Jobs waiting anywhere in the node, not only here: a growing queue is the sign that no
    # process is working it.
    waiting_states = (JobState.PENDING, JobState.QUEUED)
    try:
        with database.session() as session:
            waiting, oldest = session.execute(
                select(func.count(), func.min(Job.created_at)).where(Job.state.in_(waiting_states))
            ).one()
    except Exception as error:  # noqa: BLE001 - the database check says what is wrong
        return Check("queue", CheckStatus.WARN, f"cannot read the queue: {type(error).__name__}")
    if not waiting:
        return Check("queue", CheckStatus.PASS, "no images waiting")
    return Check(
        "queue",
        CheckStatus.PASS,
        f"{waiting} images waiting, the oldest since {oldest:%Y-%m-%d %H:%M:%S} UTC",
    )
