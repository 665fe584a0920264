"""Fuzz benchmark: mutated radiographs sent to a running node, which must survive and account for each.

Usage::

    python bench/fuzz.py [--count 2000] [--seed 1] [--senders 4] [--workers 2]
                         [--workdir bench-out/fuzz] [--json figures.json]

Three small synthetic radiographs (chest PA, lumbar AP, pelvis AP; 12 bits) are encoded in every
transfer syntax the node accepts (native, deflated, RLE, JPEG baseline / extended / lossless,
JPEG-LS, JPEG 2000, HTJ2K) with the dcmtk and GDCM tools. Each fuzzed file takes one of them and
one to three mutations: header values (rows and columns a little or absurdly wrong, bit depths,
photometric interpretation, frames, rescale, VOI and Modality LUTs, spacing, missing elements, the
transfer syntax relabelled), pixel data (bytes flipped, cut short, lengthened), encapsulated
fragments (garbage fragments, truncated codestreams, broken headers, extra and empty fragments),
truncation of the whole dataset, and absurd declared sizes (beyond and just within ``[limits]``,
and files over ``limits.max_file_mb``). Senders stream the files as they are (pynetdicom's chunked
sending, the way a broken modality would: nothing is re-encoded) over several associations at once
to ``osteonode serve`` with its demo models.

It prints: files sent, acknowledged (success or warning status), refused, lost (acknowledged but
without an instance and job in the database), node deaths (the process exited; it is restarted),
worker deaths (worker threads supervision restarted, or left dead), decoder processes lost (crashed
or timed out, each costing one file), peak resident memory of the node process and of its decoder
processes, jobs without a final state, and final jobs without a reason; then the jobs' outcomes.
Exit status 1 when the node died, a worker died, a file was lost or a job was left without a final
state or a reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments, itemize_fragment
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    generate_uid,
)

from osteonode.config import NodeConfig

REPOSITORY = Path(__file__).resolve().parents[1]
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
NODE_AE, SENDER_AE = "OSTEONODE", "FUZZER"
#: The three bases: body part, view, study description.
BASES = (
    ("CHEST", "PA", "XR CHEST PA"),
    ("LSPINE", "AP", "XR LUMBAR SPINE AP"),
    ("PELVIS", "AP", "XR PELVIS"),
)
BASE_SIZE = 384
#: Re-encodings: name -> command line before the input and output paths (None: written by pydicom).
ENCODINGS: dict[str, list[str] | None] = {
    "explicit-le": None,
    "implicit-le": ["dcmconv", "+ti"],
    "explicit-be": ["dcmconv", "+tb"],
    "deflated": ["dcmconv", "+td"],
    "rle": ["dcmcrle"],
    "jpeg-baseline": ["dcmcjpeg", "+eb"],
    "jpeg-extended": ["dcmcjpeg", "+ee"],
    "jpeg-lossless": ["dcmcjpeg", "+el"],
    "jpeg-lossless-sv1": ["dcmcjpeg", "+e1"],
    "jpeg-ls-lossless": ["dcmcjpls", "+el"],
    "jpeg-ls-near": ["dcmcjpls", "+en"],
    "j2k-lossless": ["gdcmconv", "--j2k"],
    "j2k-lossy": ["gdcmconv", "--j2k", "--lossy", "-q", "30"],
    "htj2k-lossless": ["gdcmconv", "--j2k"],  # relabelled: a Part 1 codestream is valid HTJ2K
}
#: The node's limits in this benchmark: the defaults, with a file limit small enough to send past.
LIMITS = {"max_rows": 16384, "max_columns": 16384, "max_pixels": 40_000_000, "max_file_mb": 24}
ACKNOWLEDGED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
FINAL_STATES = frozenset({"done", "skipped", "failed"})


# Base images -------------------------------------------------------------------------------------


def base_dataset(body_part: str, view: str, description: str, bits: int, seed: int) -> Dataset:
    """A small synthetic radiograph (DX For Presentation) with a bright band where bone would be."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:BASE_SIZE, 0:BASE_SIZE]
    picture = 0.25 + 0.35 * (y / BASE_SIZE) + 0.3 * np.exp(-(((x - BASE_SIZE / 2) / 40.0) ** 2))
    picture += rng.normal(0.0, 0.02, size=picture.shape)
    top = (1 << bits) - 1
    pixels = np.clip(picture * top, 0, top).astype(np.uint8 if bits <= 8 else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientAge = "Fuzz^Case", "FUZZ-1", "F", "067Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyDescription = "20260101", "120000", description
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", body_part, view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = BASE_SIZE
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    return ds


def encoded_bases(directory: Path) -> list[Path]:
    """Every base in every encoding the installed tools can make."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (body_part, view, description) in enumerate(BASES):
        for name, command in ENCODINGS.items():
            bits = 8 if name == "jpeg-baseline" else 12
            target = directory / f"{body_part.lower()}-{name}.dcm"
            paths.append(target)
            if target.exists():
                continue
            source = directory / f"{body_part.lower()}-{bits}bit-source.dcm"
            if not source.exists():
                base_dataset(body_part, view, description, bits, seed=index).save_as(
                    source, enforce_file_format=True
                )
            if command is None:
                shutil.copyfile(source, target)
                continue
            if shutil.which(command[0]) is None:
                paths.pop()
                continue
            subprocess.run([*command, str(source), str(target)], check=True, capture_output=True)
            if name.startswith("htj2k"):
                ds = pydicom.dcmread(target)
                ds.file_meta.TransferSyntaxUID = HTJ2KLossless
                ds.save_as(target, enforce_file_format=True)
    return paths


# Mutations ---------------------------------------------------------------------------------------

Mutation = Callable[[Dataset, random.Random], str]


def _fragments(ds: Dataset) -> list[bytes] | None:
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return None
    return list(generate_fragments(ds.PixelData))


def _set_fragments(ds: Dataset, fragments: list[bytes]) -> None:
    """One frame in these fragments, after an empty Basic Offset Table (the writer adds the delimiter)."""
    items = b"".join(
        itemize_fragment(fragment + b"\x00" * (len(fragment) % 2)) for fragment in fragments
    )
    ds.PixelData = itemize_fragment(b"") + items


def rows_columns_off(ds: Dataset, rng: random.Random) -> str:
    keyword = rng.choice(["Rows", "Columns"])
    delta = rng.choice([-10, -2, -1, 1, 2, 10, 100])
    setattr(ds, keyword, max(1, getattr(ds, keyword) + delta))
    return f"{keyword} {delta:+d}"


def absurd_size(ds: Dataset, rng: random.Random) -> str:
    rows, columns = rng.choice(
        [(65535, 65535), (8192, 8192), (40000, 2), (6000, 6000), (1, 65535), (0, 384)]
    )
    ds.Rows, ds.Columns = rows, columns
    return f"declares {rows} x {columns}"


def bit_depths(ds: Dataset, rng: random.Random) -> str:
    allocated, stored = rng.choice(
        [(8, 12), (16, 16), (32, 12), (1, 1), (16, 0), (12, 12), (8, 8), (16, 17)]
    )
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, max(stored - 1, 0)
    if rng.random() < 0.3:
        ds.PixelRepresentation = 1
    return f"bits allocated {allocated}, stored {stored}"


def photometric(ds: Dataset, rng: random.Random) -> str:
    value = rng.choice(["MONOCHROME1", "RGB", "YBR_FULL_422", "PALETTE COLOR", "", "MONOCHROME3"])
    ds.PhotometricInterpretation = value
    if value in ("RGB", "YBR_FULL_422") and rng.random() < 0.5:
        ds.SamplesPerPixel = 3
    return f"photometric {value!r}"


def frames(ds: Dataset, rng: random.Random) -> str:
    ds.NumberOfFrames = rng.choice(["2", "0", "1000", "1"])
    return f"frames {ds.NumberOfFrames}"


def rescale(ds: Dataset, rng: random.Random) -> str:
    ds.RescaleSlope, ds.RescaleIntercept = rng.choice(
        [("0", "0"), ("1e300", "-1e300"), ("-1", "4095"), ("1", "1e38")]
    )
    return f"rescale {ds.RescaleSlope} {ds.RescaleIntercept}"


def luts(ds: Dataset, rng: random.Random) -> str:
    item = Dataset()
    item.LUTDescriptor = rng.choice([[0, 0, 16], [4096, 0, 0], [2, 65535, 64], [256, 0, 8]])
    item.LUTData = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 2, 64])))
    keyword = rng.choice(["ModalityLUTSequence", "VOILUTSequence"])
    setattr(ds, keyword, Sequence([item]))
    if rng.random() < 0.5:
        ds.WindowCenter, ds.WindowWidth = rng.choice(
            [("0", "0"), ("-5", "-1"), ("1e308", "1e-308")]
        )
    return f"{keyword} descriptor {list(item.LUTDescriptor)}"


def spacing(ds: Dataset, rng: random.Random) -> str:
    ds.PixelSpacing = rng.choice([["0", "0"], ["-1", "0.1"], ["1e-300", "1e300"], ["0.1"]])
    return f"spacing {ds.PixelSpacing}"


def missing_element(ds: Dataset, rng: random.Random) -> str:
    keyword = rng.choice(
        [
            "Rows",
            "Columns",
            "BitsAllocated",
            "BitsStored",
            "PhotometricInterpretation",
            "PixelData",
            "PixelRepresentation",
            "SamplesPerPixel",
            "Modality",
            "BodyPartExamined",
        ]
    )
    if keyword in ds:
        delattr(ds, keyword)
    return f"without {keyword}"


def relabelled_syntax(ds: Dataset, rng: random.Random) -> str:
    # The file meta is what the sender proposes, so another decoder gets these bytes.
    syntaxes = [
        UID(s)
        for s in (
            "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.81",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.201",
        )
    ]
    current = ds.file_meta.TransferSyntaxUID
    candidates = [s for s in syntaxes if s != current]
    if current.is_encapsulated:
        ds.file_meta.TransferSyntaxUID = rng.choice(candidates)
    else:  # native bytes must become fragments to be labelled compressed
        _set_fragments(ds, [bytes(ds.PixelData[: 1 << 16])])
        ds.file_meta.TransferSyntaxUID = rng.choice(candidates)
    return f"labelled {ds.file_meta.TransferSyntaxUID.name}"


def flipped_bytes(ds: Dataset, rng: random.Random) -> str:
    fragments = _fragments(ds)
    count = rng.choice([1, 4, 32, 512])
    if fragments is None:
        data = bytearray(ds.PixelData)
        for _ in range(count):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        ds.PixelData = bytes(data)
        return f"{count} pixel bytes flipped"
    index = rng.randrange(len(fragments))
    data = bytearray(fragments[index])
    head = rng.random() < 0.5  # the codestream's header (markers, RLE segment table) or anywhere
    for _ in range(count):
        data[rng.randrange(min(len(data), 128) if head else len(data))] = rng.getrandbits(8)
    fragments[index] = bytes(data)
    _set_fragments(ds, fragments)
    return f"{count} bytes flipped in {'the header of ' if head else ''}fragment {index}"


def cut_pixels(ds: Dataset, rng: random.Random) -> str:
    fragments = _fragments(ds)
    if fragments is None:
        data = bytes(ds.PixelData)
        ds.PixelData = data[: rng.randrange(len(data)) & ~1]
        return "native pixel data cut"
    fragment = fragments[-1]
    fragments[-1] = fragment[: rng.randrange(len(fragment))]
    _set_fragments(ds, fragments)
    return "codestream cut"


def longer_pixels(ds: Dataset, rng: random.Random) -> str:
    extra = rng.randbytes(rng.choice([2, 1024, 1 << 20]))
    fragments = _fragments(ds)
    if fragments is None:
        ds.PixelData = bytes(ds.PixelData) + extra
        return f"{len(extra)} bytes appended to the pixel data"
    fragments.append(extra)
    _set_fragments(ds, fragments)
    return f"garbage fragment of {len(extra)} bytes appended"


def garbage_fragments(ds: Dataset, rng: random.Random) -> str:
    how = rng.choice(["random", "empty", "many", "marker soup"])
    if how == "random":
        fragments = [rng.randbytes(rng.choice([16, 4096, 65536]))]
    elif how == "empty":
        fragments = [b""]
    elif how == "many":
        fragments = [rng.randbytes(64) for _ in range(rng.choice([2, 50, 500]))]
    else:  # valid-looking JPEG / J2K markers with nonsense between them
        markers = [
            b"\xff\xd8",
            b"\xff\x4f\xff\x51",
            b"\xff\xc0",
            b"\xff\xc3",
            b"\xff\xf7",
            b"\xff\x90",
            b"\xff\xd9",
        ]
        fragments = [
            b"".join(rng.choice(markers) + rng.randbytes(rng.randrange(64)) for _ in range(40))
        ]
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        ds.file_meta.TransferSyntaxUID = UID(
            rng.choice(
                [
                    "1.2.840.10008.1.2.4.90",
                    "1.2.840.10008.1.2.4.80",
                    "1.2.840.10008.1.2.5",
                    "1.2.840.10008.1.2.4.70",
                ]
            )
        )
    _set_fragments(ds, fragments)
    return f"garbage fragments ({how})"


def broken_offset_table(ds: Dataset, rng: random.Random) -> str:
    fragments = _fragments(ds)
    if fragments is None:
        return rows_columns_off(ds, rng)
    data = bytearray(ds.PixelData)
    for position in rng.sample(
        range(min(16, len(data))), 3
    ):  # item tag and length of the offset table
        data[position] = rng.getrandbits(8)
    ds.PixelData = bytes(data)
    return "offset table item broken"


#: Mutations and their weights.
MUTATIONS: tuple[tuple[Mutation, int], ...] = (
    (rows_columns_off, 4),
    (absurd_size, 3),
    (bit_depths, 3),
    (photometric, 2),
    (frames, 1),
    (rescale, 1),
    (luts, 1),
    (spacing, 1),
    (missing_element, 2),
    (relabelled_syntax, 3),
    (flipped_bytes, 6),
    (cut_pixels, 4),
    (longer_pixels, 2),
    (garbage_fragments, 4),
    (broken_offset_table, 2),
)


@dataclass(frozen=True)
class Case:
    """One fuzzed file."""

    path: Path
    sop_instance_uid: str
    transfer_syntax: str
    description: str


def make_case(bases: list[Path], index: int, directory: Path, rng: random.Random) -> Case:
    """Mutate a random base into a new file with its own SOP Instance UID."""
    base = rng.choice(bases)
    ds = copy.deepcopy(_read_base(base))
    uid = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    functions, weights = zip(*MUTATIONS, strict=True)
    done = []
    for function in rng.choices(functions, weights, k=rng.choice([1, 1, 2, 3])):
        try:
            done.append(function(ds, rng))
        except (
            ValueError,
            IndexError,
            TypeError,
            AttributeError,
            KeyError,
        ):  # an earlier one removed its target
            done.append(f"{function.__name__} not applicable")
    path = directory / f"case{index:05d}.dcm"
    try:
        ds.save_as(path, enforce_file_format=True)
    # Some mutations cannot be written: send the base with only the new UID.
    except Exception as error:
        ds = copy.deepcopy(_read_base(base))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(path, enforce_file_format=True)
        done = [f"unmutated ({type(error).__name__} writing the mutation)"]
    roll = rng.random()
    if roll < 0.05:  # the dataset itself cut short; the file meta (what the sender needs) intact
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(400, len(data))])
        done.append("dataset truncated")
    elif roll < 0.06:  # a file over limits.max_file_mb
        with path.open("ab") as stream:
            stream.write(
                b"\xfe\xff\xdd\xe0" + b"\x00" * 4
            )  # a stray sequence delimiter, then padding
            stream.write(b"\x00" * int((LIMITS["max_file_mb"] + 1) * 1024 * 1024))
        done.append("padded past limits.max_file_mb")
    syntax = str(ds.file_meta.TransferSyntaxUID)
    return Case(path, uid, syntax, f"{base.stem}: " + "; ".join(done))


_BASES: dict[Path, Dataset] = {}


def _read_base(path: Path) -> Dataset:
    if path not in _BASES:
        _BASES[path] = pydicom.dcmread(path)
    return _BASES[path]


# The node ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NodeUnderTest:
    """``osteonode serve`` in a subprocess, restarted (and counted) whenever it dies."""

    def __init__(self, workdir: Path, workers: int, models: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.database_url = f"sqlite:///{workdir / 'node.db'}"
        self.config = workdir / "node.toml"
        self.log = workdir / "node.log"
        limits = "\n".join(f"{key} = {value}" for key, value in LIMITS.items())
        # A pipeline whose model is not installed would keep its jobs queued (by design): off here.
        missing = [
            f"[pipelines.{name}]\nenabled = false\n"
            for name, settings in NodeConfig().pipelines.items()
            if not (models / settings.model_name(name)).is_dir()
        ]
        self.config.write_text(
            f'[node]\nae_title = "{NODE_AE}"\nhost = "127.0.0.1"\nport = {self.port}\n'
            f'[storage]\nspool_dir = "{workdir / "spool"}"\nmin_free_mb = 64\n'
            f'[database]\nurl = "{self.database_url}"\n'
            f"[workers]\ncount = {workers}\npoll_interval_s = 0.2\nreclaim_interval_s = 5\n"
            f"heartbeat_interval_s = 2\nmax_attempts = 2\nlease_seconds = 300\n"
            f"[limits]\n{limits}\ndecode_timeout_s = 60\n"
            f'[logging]\nformat = "json"\n[models]\ndir = "{models}"\n' + "".join(missing),
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.deaths: list[int] = []
        self.starts = 0
        self._lock = threading.Lock()

    def start(self, timeout_s: float = 300.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "osteonode", "serve", "--config", str(self.config)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the node exited at start ({self.process.returncode}); see {self.log}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the node did not listen within {timeout_s:g} s; see {self.log}")

    def ensure_alive(self) -> None:
        """Restart the node if it died, counting the death."""
        with self._lock:
            if self.process is not None and self.process.poll() is not None:
                self.deaths.append(self.process.returncode)
                self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class MemoryWatch:
    """Peak resident memory of the node process and of its child (decoder) processes, sampled."""

    node_peak_mb: float = 0.0
    child_peak_mb: float = 0.0
    total_peak_mb: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, node: NodeUnderTest) -> threading.Thread:
        def run() -> None:
            while not self._stop.wait(0.1):
                process = node.process
                if process is None or process.poll() is not None:
                    continue
                own = _rss_mb(process.pid)
                children = [_rss_mb(pid) for pid in _children(process.pid)]
                self.node_peak_mb = max(self.node_peak_mb, own)
                self.child_peak_mb = max([self.child_peak_mb, *children])
                self.total_peak_mb = max(self.total_peak_mb, own + sum(children))
                self.samples += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


# Sending -----------------------------------------------------------------------------------------


@dataclass
class Sent:
    statuses: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> status (-1: none)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_all(node: NodeUnderTest, cases: list[Case], senders: int) -> Sent:
    """Stream the files over ``senders`` associations at once; each file once."""
    from pynetdicom import AE, _config

    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    syntaxes = sorted({case.transfer_syntax for case in cases})
    sent = Sent()
    queue = list(reversed(cases))
    queue_lock = threading.Lock()

    def next_case() -> Case | None:
        with queue_lock:
            return queue.pop() if queue else None

    def sender() -> None:
        ae = AE(ae_title=SENDER_AE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        for syntax in syntaxes:
            ae.add_requested_context(DX_FOR_PRESENTATION, syntax)
        association = None
        case = next_case()
        while case is not None:
            if association is None or not association.is_established:
                node.ensure_alive()
                association = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE)
                if not association.is_established:
                    time.sleep(0.5)
                    continue
            try:
                response = association.send_c_store(case.path)
                status = int(response.Status) if "Status" in response else -1
            # No accepted context, an aborted association: the file is not acknowledged.
            except Exception as error:
                status = -1
                with sent.lock:
                    sent.errors[type(error).__name__] += 1
                association.abort()
            with sent.lock:
                sent.statuses[case.sop_instance_uid] = status
            case = next_case()
        if association is not None and association.is_established:
            association.release()

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


# Accounting --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFacts:
    state: str
    reason: str | None


def job_facts(database_url: str) -> dict[str, list[JobFacts]]:
    """Each stored instance's jobs (one per pipeline it was routed to): state and reason (result,
    skip reason + detail, error)."""
    from sqlalchemy import select

    from osteonode.store.db import Database
    from osteonode.store.tables import Instance, Job, Result

    database = Database(database_url)
    try:
        with database.session() as session:
            results = set(session.scalars(select(Result.job_id)))
            facts: dict[str, list[JobFacts]] = {}
            for instance, job in session.execute(
                select(Instance, Job).join(Job, Job.instance_id == Instance.id)
            ):
                if str(job.state) == "done":
                    reason = "result stored" if job.id in results else None
                elif str(job.state) == "skipped":
                    reason = (
                        f"{job.skip_reason}: {job.skip_detail}"
                        if job.skip_reason and job.skip_detail
                        else None
                    )
                else:
                    reason = job.error or None
                facts.setdefault(instance.sop_instance_uid, []).append(
                    JobFacts(str(job.state), reason)
                )
            return facts
    finally:
        database.dispose()


def worker_deaths(database_url: str) -> int:
    from osteonode.store.db import Database
    from osteonode.store.tables import WorkerState
    from osteonode.store.workers import worker_health

    database = Database(database_url)
    try:
        with database.session() as session:
            health = worker_health(session, silent_after=timedelta(days=1))
        return sum(item.restarts + (item.state is WorkerState.DEAD) for item in health)
    finally:
        database.dispose()


def log_events(path: Path, name: str) -> list[dict]:
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == name:
                found.append(event)
    return found


def outcome_label(facts: JobFacts) -> str:
    if facts.state == "skipped" and facts.reason:
        reason, _, detail = facts.reason.partition(": ")
        return (
            f"skipped {reason}: {detail.split(':')[0]}"
            if reason == "image_error"
            else f"skipped {reason}"
        )
    return facts.state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="fuzzed files to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--senders", type=int, default=4, help="concurrent associations")
    parser.add_argument("--workers", type=int, default=2, help="the node's analysis workers")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/fuzz"))
    parser.add_argument("--models", type=Path, default=REPOSITORY / "models")
    parser.add_argument(
        "--settle-s", type=float, default=1800, help="longest wait for final states"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir / "node", ignore_errors=True)
    shutil.rmtree(workdir / "cases", ignore_errors=True)
    (workdir / "node").mkdir(parents=True)
    (workdir / "cases").mkdir(parents=True)
    rng = random.Random(args.seed)
    bases = encoded_bases(workdir / "bases")
    cases = [make_case(bases, index, workdir / "cases", rng) for index in range(args.count)]
    (workdir / "cases.tsv").write_text(
        "".join(
            f"{case.path.name}\t{case.sop_instance_uid}\t{case.description}\n" for case in cases
        )
    )
    node = NodeUnderTest(workdir / "node", args.workers, args.models.resolve())
    memory = MemoryWatch()
    started = time.monotonic()
    node.start()
    idle_mb = _rss_mb(node.process.pid) if node.process else 0.0
    watcher = memory.watch(node)
    sent = send_all(node, cases, args.senders)
    sending_s = time.monotonic() - started
    acknowledged = {uid for uid, status in sent.statuses.items() if status in ACKNOWLEDGED}
    deadline = time.monotonic() + args.settle_s
    while True:
        node.ensure_alive()
        facts = job_facts(node.database_url)
        jobs = [job for uid in acknowledged for job in facts.get(uid, [])]
        open_jobs = [job for job in jobs if job.state not in FINAL_STATES]
        if not open_jobs or time.monotonic() > deadline:
            break
        time.sleep(2)
    settle_s = time.monotonic() - started - sending_s
    deaths = worker_deaths(node.database_url)
    node.ensure_alive()
    node.stop()
    memory.stop()
    watcher.join()
    lost = sorted(uid for uid in acknowledged if uid not in facts)
    without_reason = [job for job in jobs if job.state in FINAL_STATES and not job.reason]
    decoder_lost = log_events(node.log, "decoder_lost")
    figures = {
        "sent": len(sent.statuses),
        "acknowledged": len(acknowledged),
        "refused": sum(
            1 for status in sent.statuses.values() if status not in ACKNOWLEDGED and status != -1
        ),
        "no_response": sum(1 for status in sent.statuses.values() if status == -1),
        "lost": len(lost),
        "node_deaths": len(node.deaths),
        "node_exit_codes": node.deaths,
        "worker_deaths": deaths,
        "decoder_processes_lost": len(decoder_lost),
        "decoder_crashes": sum(1 for event in decoder_lost if event.get("why") == "crash"),
        "decoder_timeouts": sum(1 for event in decoder_lost if event.get("why") == "timeout"),
        "node_rss_idle_mb": round(idle_mb, 1),
        "node_rss_peak_mb": round(memory.node_peak_mb, 1),
        "decoder_rss_peak_mb": round(memory.child_peak_mb, 1),
        "total_rss_peak_mb": round(memory.total_peak_mb, 1),
        "jobs_without_final_state": len(open_jobs),
        "final_jobs_without_reason": len(without_reason),
        "sending_s": round(sending_s, 1),
        "settling_s": round(settle_s, 1),
        "jobs": len(jobs),
        "outcomes": dict(Counter(outcome_label(job) for job in jobs).most_common()),
        "send_errors": dict(sent.errors),
        "limits": LIMITS,
    }
    print(
        f"fuzz: {args.count} files (seed {args.seed}), {args.senders} senders, {args.workers} workers"
    )
    for key in (
        "sent",
        "acknowledged",
        "refused",
        "no_response",
        "lost",
        "node_deaths",
        "worker_deaths",
        "decoder_processes_lost",
        "decoder_crashes",
        "decoder_timeouts",
        "node_rss_idle_mb",
        "node_rss_peak_mb",
        "decoder_rss_peak_mb",
        "total_rss_peak_mb",
        "jobs_without_final_state",
        "final_jobs_without_reason",
        "sending_s",
        "settling_s",
    ):
        print(f"  {key:<28}{figures[key]}")
    print(f"  limits: {LIMITS}")
    print(f"  outcomes of the {len(jobs)} jobs of acknowledged files (a film may have several):")
    for label, count in figures["outcomes"].items():
        print(f"    {count:>6}  {label}")
    if sent.errors:
        print(f"  send errors: {dict(sent.errors)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    broken = (
        figures["node_deaths"]
        or figures["worker_deaths"]
        or figures["lost"]
        or figures["jobs_without_final_state"]
        or figures["final_jobs_without_reason"]
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
