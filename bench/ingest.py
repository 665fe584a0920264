"""Ingest benchmark: osteonode against dcmtk's storescp, the same radiographs sent by storescu.

Usage::

    python bench/ingest.py [--count 200] [--rounds 3] [--senders 1 4] [--workdir bench-out/ingest]
                           [--no-workers]

Each file is a synthetic 2048 x 1792 16-bit DX image (about 7 MB). The files are split between
``--senders`` dcmtk ``storescu`` processes sending at once, each over one association (maximum PDU
128 KiB, dcmtk's upper limit), first to ``storescp`` and then to ``osteonode serve``, in alternating
rounds; each sender count is measured in turn. The figures are wall-clock time of each ``storescu`` run:
instances/s and MB/s (1 MB = 10^6 bytes of file size); the median rounds are compared, as
osteonode's speed over storescp's. Every run starts after ``sync``, so no run pays for the dirty
pages of the one before.

Fairness: ``storescp`` writes every file to disk too (``+B``, bit-preserving, exactly as received)
but it never fsyncs, whereas osteonode fsyncs each file and its directory and commits a database
transaction (SQLite, ``synchronous=FULL``) before it answers, and by default also routes each image
in worker threads while receiving (``--no-workers`` measures the receiver alone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
ROWS, COLUMNS = 2048, 1792
STORESCU_MAX_PDU = "131072"


@dataclass(frozen=True)
class Run:
    """One receiver's measurement."""

    receiver: str
    instances: int
    seconds: float
    megabytes: float

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return self.megabytes / self.seconds


def make_images(directory: Path, count: int) -> list[Path]:
    """Write ``count`` radiograph-sized DX files that differ in their UIDs (one pixel array)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(ROWS, COLUMNS), dtype=np.uint16).tobytes()
    study_uid = generate_uid()
    paths = []
    for index in range(count):
        path = directory / f"image{index:04d}.dcm"
        paths.append(path)
        if path.exists():
            continue
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = DX_FOR_PRESENTATION
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.Modality = "DX"
        ds.BodyPartExamined = "LSPINE"
        ds.ViewPosition = "AP"
        ds.InstanceNumber = index + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        ds.save_as(path, enforce_file_format=True)
    return paths


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_for_log_event(log: Path, name: str, process: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    """Wait until the node's JSON log has an event called ``name``."""
    deadline = time.monotonic() + timeout_s
    while f'"event": "{name}"'.encode() not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {name} event in {log}")
        time.sleep(0.1)


def send(port: int, called_ae: str, files: list[Path], senders: int = 1) -> float:
    """Send all files, split between ``senders`` concurrent associations; the wall-clock seconds."""
    commands = [
        ["storescu", "-aet", "BENCH", "-aec", called_ae, "--max-send-pdu", STORESCU_MAX_PDU,
         "127.0.0.1", str(port), *map(str, files[index::senders])]
        for index in range(senders)
    ]
    # Start each run with no dirty pages left by the one before (they would slow its writes).
    os.sync()
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    errors = [process.communicate()[1] for process in processes]
    seconds = time.perf_counter() - started
    for process, error in zip(processes, errors, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed:\n{error[-2000:]}")
    return seconds


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bench_storescp(workdir: Path, files: list[Path], megabytes: float, senders: int) -> Run:
    output = workdir / "storescp-out"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-pdu", STORESCU_MAX_PDU, "+B", "-dhl",
         "-od", str(output), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        seconds = send(port, "STORESCP", files, senders)
    finally:
        stop(process)
    stored = len(list(output.iterdir()))
    if stored != len(files):
        raise RuntimeError(f"storescp stored {stored} of {len(files)} files")
    return Run(f"dcmtk storescp x{senders}", len(files), seconds, megabytes)


def bench_osteonode(
    workdir: Path, files: list[Path], megabytes: float, workers: bool, senders: int
) -> Run:
    node_dir = workdir / "osteonode"
    shutil.rmtree(node_dir, ignore_errors=True)
    node_dir.mkdir(parents=True)
    port = free_port()
    config = node_dir / "node.toml"
    config.write_text(
        "\n".join([
            "[node]", 'ae_title = "OSTEONODE"', 'host = "127.0.0.1"', f"port = {port}",
            "[storage]", f'spool_dir = "{node_dir / "spool"}"', "min_free_mb = 512",
            "[database]", f'url = "sqlite:///{node_dir / "node.db"}"',
            "[logging]", 'format = "json"', 'level = "INFO"', "",
        ]),
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "osteonode", "serve", "--config", str(config)]
    if not workers:
        command.append("--no-workers")
    with (node_dir / "node.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=node_dir, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        # The node answers before its models are loaded; measure receiving, not start-up.
        wait_for_log_event(node_dir / "node.log", "node_started", process)
        seconds = send(port, "OSTEONODE", files, senders)
    finally:
        stop(process)
    stored = len(list((node_dir / "spool").rglob("*.dcm")))
    if stored != len(files):
        raise RuntimeError(f"osteonode stored {stored} of {len(files)} files")
    name = "osteonode" + ("" if workers else " --no-workers")
    return Run(f"{name} x{senders}", len(files), seconds, megabytes)


def median_run(runs: list[Run]) -> Run:
    """The run with the median time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda run: run.seconds)[(len(runs) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="number of files (default 200)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per receiver; medians compared"
    )
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/ingest"))
    parser.add_argument("--no-workers", action="store_true", help="run osteonode without workers")
    parser.add_argument(
        "--senders", type=int, nargs="+", default=[1, 4], help="concurrent senders (default 1 4)"
    )
    arguments = parser.parse_args()
    if arguments.count < 1 or arguments.rounds < 1 or min(arguments.senders) < 1:
        parser.error("--count, --rounds and --senders must be at least 1")
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} (dcmtk) is not installed")
    # The node runs in its own folder, so every path written into its configuration is absolute.
    workdir = arguments.workdir.resolve()

    files = make_images(workdir / "images", arguments.count)
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    print(f"{len(files)} files, {megabytes / len(files):.2f} MB each, {megabytes:.0f} MB in all")
    for senders in arguments.senders:
        references, nodes = [], []
        for round_number in range(1, arguments.rounds + 1):
            # Alternating rounds spread the disk's own ups and downs over both receivers.
            references.append(bench_storescp(workdir, files, megabytes, senders))
            nodes.append(
                bench_osteonode(workdir, files, megabytes, not arguments.no_workers, senders)
            )
            for run in (references[-1], nodes[-1]):
                print(f"round {round_number}  {describe(run)}")
        reference, node = median_run(references), median_run(nodes)
        print(f"median   {describe(reference)}")
        print(f"median   {describe(node)}")
        ratio = node.instances_per_second / reference.instances_per_second
        goal = "goal >= 1.2x with four senders; " if senders == 4 else ""
        print(
            f"osteonode / storescp with {senders} sender(s): {ratio:.2f}x "
            f"({goal}storescp writes but does not fsync)"
        )


def describe(run: Run) -> str:
    return (
        f"{run.receiver:26s} {run.seconds:7.2f} s  {run.instances_per_second:6.1f} instances/s"
        f"  {run.megabytes_per_second:6.1f} MB/s"
    )


if __name__ == "__main__":
    main()
