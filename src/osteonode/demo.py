"""``osteonode demo``: the whole loop, with a local Orthanc as the hospital PACS.

The demo makes the small synthetic sample set (lumbar, chest, hip phantoms, some of them hard
cases), starts a real Orthanc and a real node process on free loopback ports (state under
``demo-out/``), and stores the samples in Orthanc through its REST API. Orthanc auto-forwards each
image to the node (a Lua ``OnStoredInstance`` script), the node analyses it and sends its Structured
Report and Secondary Capture back to Orthanc, into the image's study. The demo waits until every
image is analysed (or waiting for its model) and every report delivered, prints a summary table, and
the Orthanc Explorer address of each study, with a link that opens it in the OHIF viewer (served on
loopback against Orthanc's DICOMweb, when ``make install`` has put OHIF under ``var/ohif``). On a
terminal it keeps Orthanc, the viewer and the node running until Enter or Ctrl-C, so a person can
open the studies; otherwise (tests, CI) it stops them at once and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from osteonode.peers import Orthanc, OrthancError, OrthancModality, free_port
from osteonode.peers.ohif import DEFAULT_OHIF_DIST, OhifViewer
from osteonode.peers.orthanc import dicomweb_installed
from osteonode.pipelines.base import FindingSite

if TYPE_CHECKING:
    from osteonode.pipelines.registry import Pipeline

__all__ = ["DemoError", "DemoNode", "run_demo"]

log = structlog.get_logger(__name__)

#: Job states in which the node is still working on an image.
_BUSY_STATES = ("pending", "running")
#: Delivery states in which a report has not yet reached the PACS (nor been given up).
_UNDELIVERED_STATES = ("pending", "sending", "failed")
#: The node's AE title in the demo (the embedded default).
NODE_AE_TITLE = "OSTEONODE"


class DemoError(RuntimeError):
    """The demo could not run (a tool missing, the node not starting, images not acknowledged)."""


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


def write_demo_config(workdir: Path, port: int, models_dir: Path, pacs: Orthanc, http_port: int) -> Path:
    """A node.toml that keeps the demo's state under ``workdir``, uses the shipped models, sends
    every pipeline's reports to the demo's Orthanc and serves its admin page on ``http_port``."""
    lines = [
        "# Written by `osteonode demo`: the embedded defaults, with state under demo-out/ and",
        "# reports sent to the demo's Orthanc.",
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
        "[delivery]",
        "interval_s = 1.0",
        "[destinations.pacs]",
        f'ae_title = "{pacs.ae_title}"',
        'host = "127.0.0.1"',
        f"port = {pacs.dicom_port}",
        "backoff_initial_s = 2.0",
        "[http]",
        f"port = {http_port}",
    ]
    for pipeline in ("lumbar", "chest", "hip"):
        lines += [f"[pipelines.{pipeline}]", 'destinations = ["pacs"]']
    config = workdir / "node.toml"
    config.write_text("\n".join([*lines, ""]), "utf-8")
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
                [echoscu, "-aec", NODE_AE_TITLE, "127.0.0.1", str(port)], capture_output=True, check=False
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


def store_in_pacs(pacs: Orthanc, files: Sequence[Path]) -> None:
    """Store ``files`` in Orthanc through its REST API, as a modality's images arrive at the PACS."""
    for path in files:
        try:
            answer = pacs.post_instance(path)
        except (OSError, OrthancError) as error:
            raise DemoError(f"Orthanc did not store {path.name}: {error}") from None
        if answer.get("Status") not in {"Success", "AlreadyStored"}:
            raise DemoError(f"Orthanc did not store {path.name}: {answer}")


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


def wait_until_delivered(node: DemoNode, timeout_s: float) -> dict[str, int]:
    """Poll ``osteonode status --json`` until no report is waiting to be sent."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = node.osteonode("status", "--json")
        if status.returncode == 0:
            counts: dict[str, int] = json.loads(status.stdout)["deliveries"]
            if not any(counts.get(state, 0) for state in _UNDELIVERED_STATES):
                return counts
        if time.monotonic() > deadline:
            raise DemoError(
                f"reports were still waiting to be sent after {timeout_s:.0f} s; see {node.log} and"
                f" `osteonode deliveries list --config {node.config}`"
            )
        time.sleep(1.0)


def wait_for_enter(show: Callable[[str], None]) -> None:
    """Keep everything running until the person at the terminal presses Enter or Ctrl-C."""
    show("Orthanc, the viewer and the node keep running; press Enter (or Ctrl-C) to stop them.")
    try:
        input()
    except (EOFError, KeyboardInterrupt):
        pass


def run_demo(
    workdir: Path = Path("demo-out"),
    models_dir: Path = Path("models"),
    *,
    show: Callable[[str], None] = print,
    timeout_s: float = 300.0,
    wait: bool = False,
) -> dict[str, int]:
    """Run the demo and return the final job counts by state.

    Parameters
    ----------
    workdir
        Folder for the sample images, Orthanc's storage, the node's configuration, spool, database
        and logs; emptied first so each run starts from scratch.
    models_dir
        The models the node loads (the shipped demo weights by default).
    show
        Where progress lines go.
    timeout_s
        How long the node may take to work through the samples, and again to deliver the reports.
    wait
        Keep Orthanc and the node running until Enter or Ctrl-C (for a person to look).

    Raises
    ------
    DemoError
        If a tool is missing, Orthanc or the node does not start, or the work does not finish in time.
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
    pacs = Orthanc(
        workdir / "orthanc",
        forward_to=OrthancModality("osteonode", NODE_AE_TITLE, "127.0.0.1", port),
        dicomweb=dicomweb_installed(),
    )
    http_port = free_port()
    config = write_demo_config(workdir, port, models_dir.resolve(), pacs, http_port)
    show(f"starting Orthanc as the PACS: DICOM 127.0.0.1:{pacs.dicom_port} (AE {pacs.ae_title}),"
         f" web {pacs.explorer_url()} ...")
    try:
        pacs.start()
    except OrthancError as error:
        raise DemoError(str(error)) from None
    viewer = start_viewer(pacs, show)
    try:
        show(f"starting the node on 127.0.0.1:{port} (AE {NODE_AE_TITLE}), log in {workdir / 'node.log'} ...")
        with running_node(config, port, workdir / "node.log") as node:
            show(f"storing {len(files)} images in Orthanc, which forwards them to the node ...")
            store_in_pacs(pacs, files)
            counts = wait_until_settled(node, len(files), timeout_s)
            wait_until_delivered(node, timeout_s)
            show(node.osteonode("status", "--events", "5").stdout)
            rows = summarise(config, files)
            show(format_summary(rows))
            show_study_addresses(pacs, rows, show, viewer)
            show(f"the node's admin page (queue, results, models, routing): http://127.0.0.1:{http_port}/")
            show(f"configuration used: {config}; everything about one image:")
            show(f"  .venv/bin/osteonode status --config {config} --instance {rows[0].sop_instance_uid}")
            validate_demo_models(workdir / "validation", config, show)
            if wait:
                wait_for_enter(show)
            else:
                show("stopping Orthanc, the viewer and the node (`osteonode demo --wait` keeps them"
                     " running until Enter)")
    finally:
        if viewer is not None:
            viewer.stop()
        pacs.stop()
    return counts


def start_viewer(
    pacs: Orthanc, show: Callable[[str], None], dist: Path = DEFAULT_OHIF_DIST
) -> OhifViewer | None:
    """Serve OHIF against the demo's Orthanc, or say why there is no viewer and return None."""
    if not dicomweb_installed():
        show("no OHIF viewer: Orthanc's DICOMweb plugin is not installed (Debian orthanc-dicomweb)")
        return None
    if not (dist / "index.html").is_file():
        show(f"no OHIF viewer: it is not unpacked at {dist} (`make install` fetches it)")
        return None
    viewer = OhifViewer(dist, pacs).start()
    show(f"serving the OHIF viewer at {viewer.url} (reads Orthanc through DICOMweb)")
    return viewer


#: Phantoms per part in the demo's validation cohorts, and their seed (never used in training).
VALIDATION_PHANTOMS = 16
VALIDATION_SEED = 777


def validate_demo_models(out_dir: Path, config: Path, show: Callable[[str], None]) -> dict[str, Path]:
    """Validate each installed model on a small phantom cohort, as a research team would on theirs.

    Returns
    -------
    dict of str to Path
        The report of each pipeline that has a model.
    """
    from osteonode.config import load_config
    from osteonode.evaluate.cohort import run_cohort
    from osteonode.evaluate.report import ValidationSettings, validate_predictions_file
    from osteonode.phantoms import make_cohort
    from osteonode.phantoms.cohort import SAMPLE_SIZE
    from osteonode.pipelines.registry import load_pipelines

    settings = load_config(config)
    loaded = load_pipelines(settings)
    reports: dict[str, Path] = {}
    for pipeline, implementation in loaded.available.items():
        part = phantom_part(implementation)
        if part is None:
            show(f"no validation of {pipeline}: osteonode makes no phantoms of its films")
            continue
        folder = out_dir / pipeline
        show(f"validating the {pipeline} model on {VALIDATION_PHANTOMS} held-out phantoms ...")
        cohort = make_cohort(part, VALIDATION_PHANTOMS, folder / "cohort", seed=VALIDATION_SEED,
                             size=SAMPLE_SIZE)
        predictions = run_cohort(cohort, pipeline, folder, settings, workers=1, show_progress=False)
        files = validate_predictions_file(predictions, folder, ValidationSettings(n_resamples=200))
        reports[pipeline] = files.html
        show(f"  report: {files.html}")
    for pipeline, reason in loaded.unavailable.items():
        show(f"no validation of {pipeline}: {reason}")
    return reports


def phantom_part(pipeline: Pipeline) -> str | None:
    """The phantoms that show the films a pipeline reads (None when osteonode makes none)."""
    from osteonode.phantoms import Part

    lateral = "LATERAL" in pipeline.views
    parts = {
        (FindingSite.LUMBAR_SPINE, False): Part.LUMBAR,
        (FindingSite.LUMBAR_SPINE, True): Part.LUMBAR_LATERAL,
        (FindingSite.CHEST, False): Part.CHEST,
        (FindingSite.HIP, False): Part.HIP,
    }
    part = parts.get((pipeline.site, lateral))
    return None if part is None else part.value


def show_study_addresses(
    pacs: Orthanc,
    rows: Sequence[SummaryRow],
    show: Callable[[str], None],
    viewer: OhifViewer | None = None,
) -> None:
    """Print where each study with delivered reports can be opened: Orthanc Explorer, and OHIF."""
    delivered = [row for row in rows if row.delivered and "sent" in row.delivered]
    if not delivered:
        show(f"no reports were delivered (no models installed?); Orthanc: {pacs.explorer_url()}")
        return
    show("open a study with its reports in Orthanc (SR and SC are in the image's study):")
    for row in delivered:
        study = pacs.study_id(row.study_instance_uid)
        if study is not None:
            show(f"  {row.file:<24} {pacs.explorer_url(study)}")
    if viewer is not None:
        show("or in the OHIF viewer, which opens the report with its regions and values drawn on the"
             " film (answer No when OHIF offers to track them: its own tools would replace the"
             " report's values with pixel statistics):")
        for row in delivered:
            series = report_series(pacs, row.study_instance_uid)
            show(f"  {row.file:<24} {viewer.study_url(row.study_instance_uid, series)}")


def report_series(pacs: Orthanc, study_instance_uid: str) -> str | None:
    """The Series Instance UID of the node's Structured Report in a study (None if it has none)."""
    for tags in pacs.study_instances(study_instance_uid):
        if tags.get("Modality") == "SR":
            return str(tags["SeriesInstanceUID"])
    return None


@dataclass(frozen=True)
class SummaryRow:
    """What the node did with one sample image, and what it sent back to the PACS."""

    file: str
    sop_instance_uid: str
    study_instance_uid: str
    decision: str
    state: str
    answer: str
    delivered: str


def summarise(config: Path, files: Sequence[Path]) -> list[SummaryRow]:
    """One row per sample file, read from the node's database."""
    import pydicom

    from osteonode.config import load_config
    from osteonode.store.db import Database
    from osteonode.store.deliveries import list_deliveries
    from osteonode.store.history import instance_history

    database = Database(load_config(config).database.url)
    rows = []
    try:
        with database.session() as session:
            sent_back: dict[str, list[str]] = {}
            for delivery in list_deliveries(session):
                kind = "SR" if ".88." in delivery.object_class_uid else "SC"
                sent_back.setdefault(delivery.source_uid, []).append(f"{kind} {delivery.state}")
            for path in files:
                header = pydicom.dcmread(path, stop_before_pixels=True)
                uid = str(header.SOPInstanceUID)
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
                rows.append(
                    SummaryRow(
                        f"{path.parent.name}/{path.name}", uid, str(header.StudyInstanceUID), decision,
                        state, answer or "", ", ".join(sorted(sent_back.get(uid, []))),
                    )
                )
    finally:
        database.dispose()
    return rows


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """The summary as an aligned plain-text table."""
    header = SummaryRow("image", "", "", "routed to", "job", "answer", "sent to the PACS")
    table = [header, *rows]
    names = ("file", "decision", "state", "answer")
    widths = [max(len(getattr(row, name)) for row in table) for name in names]
    lines = [
        "  ".join(f"{getattr(row, name):<{width}}" for name, width in zip(names, widths, strict=True))
        + f"  {row.delivered}"
        for row in table
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(line.rstrip() for line in lines)
