"""``osteonode demo``: the node on its embedded defaults, fed sample radiographs, as a PACS would.

The demo makes the small synthetic sample set (lumbar, chest, hip phantoms, some of them hard
cases), starts a real node process on a free loopback port with its state under ``demo-out/``,
sends the images with dcmtk's ``storescu`` the way a modality or PACS auto-forwards them, waits
until every job has finished or is waiting for its model, and shows ``osteonode status``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

__all__ = ["DemoError", "DemoNode", "run_demo"]

log = structlog.get_logger(__name__)

#: Job states in which the node is still working on an image.
_BUSY_STATES = ("pending", "running")


class DemoError(RuntimeError):
    """The demo could not run (a tool missing, the node not starting, images not acknowledged)."""


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DemoError(f"{tool} not found: install dcmtk (make install does)")
    return path


@dataclass(frozen=True)
class DemoNode:
    """A node process started by the demo: its configuration file, port and log."""

    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def osteonode(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run an ``osteonode`` command against this node's configuration."""
        return subprocess.run(
            [sys.executable, "-m", "osteonode", *arguments, "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "COLUMNS": "140"},  # rich tables read well at this width
        )


def write_demo_config(workdir: Path, port: int, models_dir: Path) -> Path:
    """A node.toml that keeps the demo's state under ``workdir`` and uses the shipped models."""
    config = workdir / "node.toml"
    config.write_text(
        "\n".join(
            [
                "# Written by `osteonode demo`: the embedded defaults, with state under demo-out/.",
                "[node]",
                f"port = {port}",
                "[storage]",
                f'spool_dir = "{workdir / "var" / "spool"}"',
                "min_free_mb = 64",
                "[database]",
                f'url = "sqlite:///{workdir / "var" / "osteonode.db"}"',
                "[logging]",
                'format = "json"',
                "[models]",
                f'dir = "{models_dir}"',
                "",
            ]
        ),
        "utf-8",
    )
    return config


@contextmanager
def running_node(config: Path, port: int, log_path: Path, timeout_s: float = 60.0) -> Iterator[DemoNode]:
    """Start ``osteonode serve`` and stop it with SIGTERM on exit."""
    echoscu = _require("echoscu")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "osteonode", "serve", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        node = DemoNode(config=config, port=port, log=log_path, process=process)
        try:
            deadline = time.monotonic() + timeout_s
            while subprocess.run(
                [echoscu, "-aec", "OSTEONODE", "127.0.0.1", str(port)], capture_output=True, check=False
            ).returncode:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise DemoError(f"the node did not start; see {log_path}")
                time.sleep(0.5)
            yield node
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


#: storescu's option that proposes each compressed transfer syntax (it proposes one kind per run).
_STORESCU_PROPOSALS = {
    "1.2.840.10008.1.2.5": "--propose-rle",
    "1.2.840.10008.1.2.4.70": "--propose-lossless",
    "1.2.840.10008.1.2.4.80": "--propose-jls-lossless",
    "1.2.840.10008.1.2.4.90": "--propose-j2k-lossless",
}


def send_files(port: int, files: Sequence[Path]) -> None:
    """C-STORE ``files`` to the node with dcmtk's storescu; every one must be acknowledged.

    A modality sends each image in the transfer syntax it has it in, so the files are sent in one
    storescu run per syntax, proposing that syntax.
    """
    import pydicom

    storescu = _require("storescu")
    by_syntax: dict[str, list[Path]] = {}
    for path in files:
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        by_syntax.setdefault(syntax, []).append(path)
    for syntax, group in sorted(by_syntax.items()):
        proposal = [_STORESCU_PROPOSALS[syntax]] if syntax in _STORESCU_PROPOSALS else []
        completed = subprocess.run(
            [storescu, *proposal, "-aec", "OSTEONODE", "-aet", "DEMO_MODALITY", "127.0.0.1", str(port),
             *map(str, group)],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise DemoError(f"storescu failed: {completed.stderr.strip() or completed.stdout.strip()}")


def wait_until_settled(node: DemoNode, expected_jobs: int, timeout_s: float) -> dict[str, int]:
    """Poll ``osteonode status --json`` until no job is pending or running."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = node.osteonode("status", "--json")
        if status.returncode == 0:
            counts: dict[str, int] = json.loads(status.stdout)["jobs"]
            if sum(counts.values()) >= expected_jobs and not any(counts[s] for s in _BUSY_STATES):
                return counts
        if time.monotonic() > deadline:
            raise DemoError(f"the node had not finished after {timeout_s:.0f} s; see {node.log}")
        time.sleep(1.0)


def run_demo(
    workdir: Path = Path("demo-out"),
    models_dir: Path = Path("models"),
    *,
    show: Callable[[str], None] = print,
    timeout_s: float = 300.0,
) -> dict[str, int]:
    """Run the demo and return the final job counts by state.

    Parameters
    ----------
    workdir
        Folder for the sample images, the node's configuration, spool, database and log; emptied
        first so each run starts from scratch.
    models_dir
        The models the node loads (the shipped demo weights by default).
    show
        Where progress lines go.
    timeout_s
        How long the node may take to work through the samples.
    """
    from osteonode.phantoms import make_sample_set

    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "var").mkdir(parents=True)
    show(f"making sample radiographs in {workdir / 'phantoms'} ...")
    cohorts = make_sample_set(workdir / "phantoms")
    files = sorted(path for cohort in cohorts.values() for path in cohort.parent.glob("*.dcm"))
    port = free_port()
    config = write_demo_config(workdir, port, models_dir.resolve())
    show(f"starting the node on 127.0.0.1:{port} (AE OSTEONODE), log in {workdir / 'node.log'} ...")
    with running_node(config, port, workdir / "node.log") as node:
        show(f"sending {len(files)} images with storescu ...")
        send_files(port, files)
        counts = wait_until_settled(node, len(files), timeout_s)
        show(node.osteonode("status", "--events", "5").stdout)
    rows = summarise(config, files)
    show(format_summary(rows))
    show(f"configuration used: {config}; everything about one image:")
    show(f"  .venv/bin/osteonode status --config {config} --instance {rows[0].sop_instance_uid}")
    return counts


@dataclass(frozen=True)
class SummaryRow:
    """What the node did with one sample image."""

    file: str
    sop_instance_uid: str
    decision: str
    state: str
    answer: str


def summarise(config: Path, files: Sequence[Path]) -> list[SummaryRow]:
    """One row per sample file, read from the node's database."""
    import pydicom

    from osteonode.config import load_config
    from osteonode.store.db import Database
    from osteonode.store.history import instance_history

    database = Database(load_config(config).database.url)
    rows = []
    try:
        with database.session() as session:
            for path in files:
                uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                history = instance_history(session, uid)
                job = history.jobs[-1] if history is not None and history.jobs else None
                result = history.results[-1] if history is not None and history.results else None
                if job is None:
                    decision, state = "(not received)", ""
                else:
                    decision = job.pipeline or f"skip: {job.skip_reason}"
                    if job.pipeline and job.skip_reason:
                        decision += f" (not analysed: {job.skip_reason})"
                    state = job.state
                answer = ""
                if result is not None:
                    answer = result.category if result.evaluable else f"not evaluable: {result.reason}"
                elif job is not None and job.state == "queued":
                    answer = "waiting for its model"
                rows.append(SummaryRow(f"{path.parent.name}/{path.name}", uid, decision, state, answer or ""))
    finally:
        database.dispose()
    return rows


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """The summary as an aligned plain-text table."""
    header = SummaryRow("image", "", "routed to", "job", "answer")
    table = [header, *rows]
    widths = [max(len(getattr(row, name)) for row in table) for name in ("file", "decision", "state")]
    lines = [
        f"{row.file:<{widths[0]}}  {row.decision:<{widths[1]}}  {row.state:<{widths[2]}}  {row.answer}"
        for row in table
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
