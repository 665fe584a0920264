"""End-to-end benchmark: a film sent by the PACS comes back as SR + Secondary Capture at the PACS.

Usage::

    python bench/e2e.py [--films 12] [--parts lumbar chest hip] [--networks demo full-size]
                        [--models models] [--size 2500] [--workdir bench-out/e2e]

The PACS is dcmtk ``storescp`` on loopback; the node is ``osteonode serve`` (SQLite, the default
workers) sending its results back to it. Phantom films of each part (``osteonode.phantoms``) are
measured with the shipped demo models (``--models``) and with the full-size networks: the paper's
ConvNeXt-S at 512 x 512 for both chest stages and the full-width VGG16 with its non-local block at
224 px for the hip, randomly initialised (the weights do not change the cost; stage 1 is set to
answer "not osteoporosis", so stage 2 always runs); lumbar keeps its demo networks. The full-size
models' bfloat16 agreement is measured and recorded in their cards when they are made
(``osteonode.precision``), so the node's ``[inference]`` defaults decide, as on a site, which run
in bfloat16 (those within 1e-3 of float32, on a CPU with native bfloat16). Each set is measured so:

* **Start-up**: seconds from starting ``serve`` to the first answered C-ECHO (goal <= 1.0 s), on
  a new database (the schema is created) and again on a restart.
* **Latency**: each film alone, from the start of its C-STORE (``storescu``) to the moment the
  last of its SR and SC is stored at the PACS; p50 and p90 per part (goal p50 <= 1.5 s with the
  demo models, <= 2.2 s for the full-size chest network in bfloat16). Beside it, where that time went, from the node's own event record: receive (C-STORE
  until the job is committed), queue wait (until a worker claims it), analysis (decode, model,
  heat-maps), reports (SR and SC built and written), commit, and delivery (until the PACS has both).
* **Throughput**: every film of every part sent at once over four associations, films per hour
  until the last report is at the PACS (goal >= 4,500).
* **Floor**, in the same run with the node stopped: the same films through the same code in one
  process with nothing waiting: decode, forward (the pipeline), encode (SR + SC) and send (both in
  one association). The latency over the floor is what queues, wake-ups and scheduling cost.

It prints figures and ratios; nothing is asserted. On a shared machine the figures move with the
load, so compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

REPOSITORY = Path(__file__).resolve().parents[1]
#: Objects each analysed film sends to the PACS: its SR and its Secondary Capture.
OBJECTS_PER_FILM = 2
PARTS = ("lumbar", "chest", "hip")
LATENCY_GOAL_S = 1.5
#: The goal with the full-size chest network in bfloat16 (the hip's VGG16 is held to it as well).
FULL_SIZE_LATENCY_GOAL_S = 2.2
THROUGHPUT_GOAL_PER_HOUR = 4500
ECHO_GOAL_S = 1.0
THROUGHPUT_SENDERS = 4


@dataclass(frozen=True)
class FilmTiming:
    """One film's trip, in seconds."""

    part: str
    total: float
    phases: dict[str, float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Pacs:
    """dcmtk ``storescp`` writing what it receives into a folder."""

    def __init__(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.folder = folder
        self.port = free_port()
        self.process = subprocess.Popen(
            ["storescp", "-aet", "PACS", "+B", "-od", str(folder), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not _echo(self.port, "PACS"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)

    def count(self) -> int:
        return sum(1 for _ in self.folder.iterdir())

    def wait_for(self, count: int, timeout_s: float = 300.0) -> float:
        """Wait until ``count`` objects are stored; the time.perf_counter() they were."""
        deadline = time.monotonic() + timeout_s
        while self.count() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the PACS has {self.count()} of {count} objects")
            time.sleep(0.005)
        return time.perf_counter()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _echo(port: int, called_ae: str) -> bool:
    done = subprocess.run(
        ["echoscu", "-aet", "BENCH", "-aec", called_ae, "-to", "2", "127.0.0.1", str(port)],
        capture_output=True, check=False,
    )
    return done.returncode == 0


def _store(port: int, files: Sequence[Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["storescu", "-aet", "BENCH", "-aec", "OSTEONODE", "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _sent(sender: subprocess.Popen[bytes]) -> None:
    _, error = sender.communicate()
    if sender.returncode != 0:
        raise RuntimeError(f"storescu failed: {error.decode(errors='replace')[-2000:]}")


def full_size_models(demo: Path, out: Path) -> Path:
    """A models folder with full-size chest and hip networks (random weights) and the demo lumbar."""
    import torch

    from osteonode.nets import build_network
    from osteonode.precision import verify_model_precision
    from osteonode.train.chest import PAPER_CONFIGURATION
    from osteonode.zoo import NetworkEntry, read_model_card, save_model

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hip import full_size_model as full_size_hip

    if (out / "chest-demo" / "model.toml").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copytree(demo / "lumbar-demo", out / "lumbar-demo")
    full_size_hip(demo / "hip-demo", 224, out / "hip-demo")
    card = read_model_card(demo / "chest-demo")
    preprocessing = PAPER_CONFIGURATION.preprocessing
    options = {"num_classes": 2, "in_chans": preprocessing.channels}
    torch.manual_seed(0)
    networks = {entry.role: build_network(PAPER_CONFIGURATION.architecture, **options) for entry in card.networks}
    with torch.no_grad():
        networks["stage1"].head.bias.copy_(torch.tensor([5.0, -5.0]))
    mean = " ".join(f"{value:g}" for value in preprocessing.mean)
    std = " ".join(f"{value:g}" for value in preprocessing.std)
    card = card.model_copy(
        update={
            "name": "chest-full-size-bench",
            "input_size": (preprocessing.size, preprocessing.size),
            "normalisation": f"x/255, mean {mean}, std {std}",
            "networks": [
                NetworkEntry(
                    role=entry.role,
                    architecture=PAPER_CONFIGURATION.architecture,
                    options=options,
                    weights=f"{entry.role}.safetensors",
                )
                for entry in card.networks
            ],
        }
    )
    save_model(out / "chest-demo", card, networks)
    for folder in ("chest-demo", "hip-demo"):
        verify_model_precision(out / folder, films=2)
    return out


def write_config(workdir: Path, port: int, pacs: Pacs, models: Path, parts: Sequence[str]) -> Path:
    lines = [
        "[node]", 'ae_title = "OSTEONODE"', 'host = "127.0.0.1"', f"port = {port}",
        "[storage]", f'spool_dir = "{workdir / "spool"}"', "min_free_mb = 256",
        "[database]", f'url = "sqlite:///{workdir / "node.db"}"',
        "[logging]", 'format = "json"',
        "[models]", f'dir = "{models}"',
        "[destinations.pacs]", 'ae_title = "PACS"', 'host = "127.0.0.1"', f"port = {pacs.port}",
    ]
    for part in parts:
        lines += [f"[pipelines.{part}]", 'destinations = ["pacs"]']
    path = workdir / "node.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Node:
    """``osteonode serve`` in its own folder, and the seconds until it answered a C-ECHO."""

    def __init__(self, workdir: Path, config: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.log = workdir / "node.log"
        started = time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "osteonode", "serve", "--config", str(config)],
                cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            )
        while not _echo(port, "OSTEONODE"):
            if self.process.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"the node did not answer:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)
        self.echo_s = time.perf_counter() - started
        # The workers start once the models are loaded.
        while b'"node_started"' not in self.log.read_bytes():
            if self.process.poll() is not None or time.perf_counter() - started > 300:
                raise RuntimeError(f"the node did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)

    def bfloat16_pipelines(self) -> list[str]:
        """The pipelines the node loaded to run in bfloat16 (its ``pipeline_loaded`` events)."""
        events = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [e["pipeline"] for e in events if e.get("event") == "pipeline_loaded" and e.get("bfloat16")]


def node_phases(database_url: str, sop_instance_uid: str, sent_from: float) -> dict[str, float]:
    """Where one film's time went, from the node's event record (seconds)."""
    from sqlalchemy import select

    from osteonode.store.db import Database
    from osteonode.store.tables import Delivery, Event, Instance, Result

    database = Database(database_url)
    deadline = time.monotonic() + 30
    try:
        # The PACS may have the objects a moment before the node has recorded them as sent.
        while True:
            with database.session() as session:
                instance = session.scalars(
                    select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
                ).one()
                events = list(
                    session.scalars(
                        select(Event).where(Event.instance_id == instance.id).order_by(Event.id)
                    )
                )
                sent = session.scalars(
                    select(Delivery.sent_at).join(Result).where(Result.instance_id == instance.id)
                ).all()
            if sent and all(sent):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node never recorded {sop_instance_uid} as sent")
            time.sleep(0.05)
    finally:
        database.dispose()
    first = {}
    for event in events:
        first.setdefault(str(event.kind), event)
    received = first["received"].at.timestamp()
    claimed = first["job_claimed"].at.timestamp()
    stored = first["result_stored"]
    seconds = stored.details.get("seconds", {})
    analysis, reports = seconds.get("analysis", 0.0), seconds.get("reports", 0.0)
    return {
        "receive": received - sent_from,
        "queue": claimed - received,
        "analysis": analysis,
        "reports": reports,
        "commit": stored.at.timestamp() - claimed - analysis - reports,
        "delivery": max(moment.timestamp() for moment in sent) - stored.at.timestamp(),
    }


def measure_latency(
    node: Node, pacs: Pacs, films: dict[str, list[Path]], database_url: str
) -> list[FilmTiming]:
    import pydicom

    timings = []
    for part, paths in films.items():
        for path in paths:
            before = pacs.count()
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            wall_started = time.time()
            started = time.perf_counter()
            _sent(_store(node.port, [path]))
            arrived = pacs.wait_for(before + OBJECTS_PER_FILM)
            phases = node_phases(database_url, uid, wall_started)
            timings.append(FilmTiming(part, arrived - started, phases))
    return timings


def measure_throughput(node: Node, pacs: Pacs, films: Sequence[Path]) -> float:
    """Films per hour with every film sent at once over ``THROUGHPUT_SENDERS`` associations."""
    before = pacs.count()
    started = time.perf_counter()
    count = min(THROUGHPUT_SENDERS, len(films))  # no sender without films (storescu needs one)
    senders = [_store(node.port, films[index::count]) for index in range(count)]
    for sender in senders:
        _sent(sender)
    finished = pacs.wait_for(before + OBJECTS_PER_FILM * len(films), timeout_s=1800)
    return len(films) / (finished - started) * 3600


def measure_floor(config_path: Path, films: dict[str, list[Path]]) -> dict[str, dict[str, float]]:
    """Median seconds of each step per part, in this process, nothing waiting in between."""
    from osteonode.config import load_config
    from osteonode.dicom.scu import send_files
    from osteonode.imaging import load_radiograph
    from osteonode.inference import share_cores
    from osteonode.outbox import device_info, write_result_objects
    from osteonode.pipelines.registry import load_pipelines
    from osteonode.store.spool import Spool

    config = load_config(config_path, environ={})
    # As one of the node's workers: its share of the cores, its precision.
    share_cores(config.inference, config.workers.count)
    loaded = load_pipelines(config)
    device = device_info(config.node)
    floor: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        spool = Spool(Path(scratch))
        for part, paths in films.items():
            pipeline, plan = loaded.available[part], loaded.plans[part]
            steps: dict[str, list[float]] = {"decode": [], "forward": [], "encode": [], "send": []}
            for path in paths:
                moments = [time.perf_counter()]
                radiograph = load_radiograph(path)
                moments.append(time.perf_counter())
                with plan.autocast():
                    result = pipeline.run(radiograph)
                moments.append(time.perf_counter())
                objects = write_result_objects(
                    result, radiograph, dict(config.destinations), spool=spool, device=device
                )
                moments.append(time.perf_counter())
                destination = config.destinations["pacs"]
                outcomes = send_files(
                    [spool.path(item.spool_path) for item in objects],
                    host=destination.host, port=destination.port,
                    called_ae_title=destination.ae_title, calling_ae_title="OSTEONODE",
                )
                moments.append(time.perf_counter())
                if not all(outcome.is_sent for outcome in outcomes):
                    raise RuntimeError(f"floor send failed: {outcomes}")
                for name, start, end in zip(steps, moments, moments[1:], strict=False):
                    steps[name].append(end - start)
            floor[part] = {name: statistics.median(values) for name, values in steps.items()}
    return floor


def report(
    echo_s: tuple[float, float],
    timings: list[FilmTiming],
    throughput: float,
    floor: dict[str, dict[str, float]],
    latency_goal_s: float = LATENCY_GOAL_S,
) -> None:
    print(f"\nC-ECHO answered {echo_s[0]:.2f} s after serve started on a new database, {echo_s[1]:.2f} s"
          f" on a restart (goal <= {ECHO_GOAL_S} s)")
    print("\nPACS -> SR + SC at the PACS, one film at a time (seconds)")
    phase_names = list(timings[0].phases)
    print(f"{'part':8s} {'p50':>6s} {'p90':>6s} {'floor':>6s} {'p50/floor':>9s}  "
          + " ".join(f"{name:>9s}" for name in phase_names))
    for part in dict.fromkeys(timing.part for timing in timings):
        mine = [timing for timing in timings if timing.part == part]
        totals = [timing.total for timing in mine]
        p50 = percentile(totals, 0.5)
        floor_s = sum(floor[part].values())
        medians = [statistics.median(t.phases[name] for t in mine) for name in phase_names]
        print(f"{part:8s} {p50:6.2f} {percentile(totals, 0.9):6.2f} {floor_s:6.2f} "
              f"{p50 / floor_s:9.2f}  " + " ".join(f"{value:9.3f}" for value in medians)
              + f"   goal p50 <= {latency_goal_s} s: {'met' if p50 <= latency_goal_s else 'NOT met'}")
    print("\nfloor, medians in one process (seconds)")
    for part, steps in floor.items():
        print(f"{part:8s} " + "  ".join(f"{name} {value:.3f}" for name, value in steps.items()))
    print(f"\nmixed batch, {THROUGHPUT_SENDERS} senders: {throughput:,.0f} films/hour "
          f"(goal >= {THROUGHPUT_GOAL_PER_HOUR:,})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--films", type=int, default=12, help="films per part (default 12)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--models", type=Path, default=REPOSITORY / "models", help="demo models")
    parser.add_argument(
        "--networks", nargs="+", choices=("demo", "full-size"), default=["demo", "full-size"]
    )
    parser.add_argument("--size", type=int, default=None, help="phantom size in pixels")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/e2e"))
    arguments = parser.parse_args()
    if arguments.films < 1:
        parser.error("--films must be at least 1")
    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} (dcmtk) is not installed")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    import pydicom

    from osteonode.phantoms import make_cohort

    workdir = arguments.workdir.resolve()
    films: dict[str, list[Path]] = {}
    for part in arguments.parts:
        folder = workdir / "films" / part
        if len(list(folder.glob("*.dcm"))) < arguments.films:
            size = {} if arguments.size is None else {"size": arguments.size}
            make_cohort(part, arguments.films, folder, seed=4242, **size)
            # As most modalities send, and as dcmtk storescu and storescp take any film:
            # uncompressed (some phantoms are written compressed).
            for path in folder.glob("*.dcm"):
                dataset = pydicom.dcmread(path)
                if dataset.file_meta.TransferSyntaxUID.is_compressed:
                    dataset.decompress()
                    dataset.save_as(path)
        films[part] = sorted(folder.glob("*.dcm"))[: arguments.films]
    for networks in arguments.networks:
        if networks == "demo":
            models, goal = arguments.models.resolve(), LATENCY_GOAL_S
        else:
            models = full_size_models(arguments.models.resolve(), workdir / "full-size-models")
            goal = FULL_SIZE_LATENCY_GOAL_S
        print(f"\n=== {networks} networks ({models})")
        run_set(workdir / networks, models, arguments.parts, films, goal)
    print("\nThe machine's load moves these figures; compare the ratios of one run.")


def run_set(
    workdir: Path, models: Path, parts: Sequence[str], films: dict[str, list[Path]],
    latency_goal_s: float = LATENCY_GOAL_S,
) -> None:
    """Measure one set of networks: start-up, latency, throughput, floor; print them."""
    node_dir = workdir / "node"
    shutil.rmtree(node_dir, ignore_errors=True)
    node_dir.mkdir(parents=True)
    pacs = Pacs(workdir / "pacs")
    try:
        port = free_port()
        config = write_config(node_dir, port, pacs, models, parts)
        first = Node(node_dir, config, port)
        first.stop()
        node = Node(node_dir, config, port)
        print(f"bfloat16 for {', '.join(node.bfloat16_pipelines()) or 'none'} ([inference] defaults)")
        try:
            timings = measure_latency(node, pacs, films, f"sqlite:///{node_dir / 'node.db'}")
            # The batch needs new SOP Instance UIDs, else the node counts duplicates.
            batch = renumbered([path for paths in films.values() for path in paths], workdir / "batch")
            throughput = measure_throughput(node, pacs, batch)
        finally:
            node.stop()
        floor = measure_floor(config, films)
    finally:
        pacs.stop()
    report((first.echo_s, node.echo_s), timings, throughput, floor, latency_goal_s)


def renumbered(paths: Sequence[Path], folder: Path) -> list[Path]:
    """Copies of ``paths`` with fresh SOP Instance UIDs."""
    import pydicom
    from pydicom.uid import generate_uid

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    copies = []
    for index, path in enumerate(paths):
        dataset = pydicom.dcmread(path)
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copy = folder / f"film{index:04d}.dcm"
        dataset.save_as(copy)
        copies.append(copy)
    return copies


if __name__ == "__main__":
    main()
