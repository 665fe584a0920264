"""The spool writes files atomically and durably, and never overwrites a stored file."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from osteonode.service import STRAY_TEMPORARY_AGE_S
from osteonode.store.spool import Spool, SpoolError

UID = "1.2.826.0.1.3680043.10.1234.99"


def test_stored_file_reads_back_under_a_hashed_bucket(spool: Spool) -> None:
    content = b"DICM" + bytes(range(256)) * 100
    relative = spool.store_incoming(UID, content)
    bucket = hashlib.sha1(UID.encode()).hexdigest()[:2]
    assert relative == Path("incoming", bucket, f"{UID}.dcm")
    assert not relative.is_absolute()
    assert spool.path(relative).read_bytes() == content


def test_write_leaves_no_temporary_file(spool: Spool) -> None:
    relative = spool.store_incoming(UID, b"content")
    assert [p.name for p in spool.path(relative).parent.iterdir()] == [f"{UID}.dcm"]
    assert spool.stray_temporary_files() == []


def test_file_and_directories_are_fsynced_before_the_path_is_returned(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        status = os.fstat(fd)
        synced.append((status.st_dev, status.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    relative = spool.store_incoming(UID, b"durable")
    path = spool.path(relative)
    for must_be_synced in (path, path.parent, path.parent.parent, spool.root):
        status = must_be_synced.stat()
        assert (status.st_dev, status.st_ino) in synced, must_be_synced


def test_writer_callable_streams_into_the_file(spool: Spool) -> None:
    def write(file: BinaryIO) -> None:
        for chunk in (b"one ", b"two ", b"three"):
            file.write(chunk)

    relative = spool.store_incoming(UID, write)
    assert spool.path(relative).read_bytes() == b"one two three"


def test_failed_write_leaves_nothing_behind(spool: Spool) -> None:
    def write(file: BinaryIO) -> None:
        file.write(b"half a file")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        spool.store_incoming(UID, write)
    assert list(spool.root.rglob("*.dcm")) == []


def test_second_copy_of_a_uid_gets_its_own_name(spool: Spool) -> None:
    first = spool.store_incoming(UID, b"first")
    second = spool.store_incoming(UID, b"second")
    assert first != second
    assert second.name == f"{UID}.1.dcm"
    assert spool.path(first).read_bytes() == b"first"
    assert spool.delete(second)
    assert spool.path(first).read_bytes() == b"first"


def test_outgoing_files_live_apart_from_incoming(spool: Spool) -> None:
    relative = spool.write_outgoing(UID, io.BytesIO(b"result").read())
    assert relative.parts[0] == "outgoing"
    assert spool.path(relative).read_bytes() == b"result"


@pytest.mark.parametrize("uid", ["../../etc/passwd", "1.2.3/4", "", "1.2.abc", "1" * 65])
def test_invalid_uid_is_refused(spool: Spool, uid: str) -> None:
    with pytest.raises(ValueError, match="invalid SOP Instance UID"):
        spool.store_incoming(uid, b"x")


@pytest.mark.parametrize("relative", ["/etc/passwd", "../outside.dcm", "incoming/../../x", ""])
def test_paths_outside_the_spool_are_refused(spool: Spool, relative: str) -> None:
    with pytest.raises(SpoolError):
        spool.path(relative)


def test_deleting_a_missing_file_is_not_an_error(spool: Spool) -> None:
    assert spool.delete("incoming/00/1.2.3.dcm") is False


def test_free_bytes_is_positive_before_and_after_the_spool_exists(spool: Spool) -> None:
    before = spool.free_bytes()
    spool.ensure_writable()
    after = spool.free_bytes()
    assert before > 0
    assert after > 0
    assert abs(before - after) < 1024**3


def test_ensure_writable_creates_the_layout(spool: Spool) -> None:
    spool.ensure_writable()
    assert (spool.root / "incoming").is_dir()
    assert (spool.root / "outgoing").is_dir()
    assert spool.stray_temporary_files() == []


def test_ensure_writable_reports_an_unwritable_spool(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(SpoolError, match="not writable"):
        Spool(blocker / "spool").ensure_writable()


def test_writer_killed_mid_file_leaves_only_a_stray_temporary_file(spool: Spool) -> None:
    """A crash while writing never leaves a partial file under the instance's name."""
    program = f"""
import sys, time
from osteonode.store.spool import Spool

def write(file):
    file.write(b"half of an image")
    file.flush()
    print("writing", flush=True)
    time.sleep(60)

Spool({str(spool.root)!r}).store_incoming({UID!r}, write)
"""
    writer = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    assert list(spool.root.rglob(f"{UID}*")) == []
    stray = spool.stray_temporary_files()
    assert len(stray) == 1
    assert spool.delete(stray[0])
    relative = spool.store_incoming(UID, b"whole image")
    assert relative.name == f"{UID}.dcm"


def test_a_write_in_progress_is_not_taken_for_a_crash_left_file(spool: Spool) -> None:
    """Processes sharing a spool: one starting must not delete another's write in progress."""
    program = f"""
import time
from osteonode.store.spool import Spool

def write(file):
    file.write(b"part of an image")
    file.flush()
    print("writing", flush=True)
    time.sleep(60)

Spool({str(spool.root)!r}).store_incoming({UID!r}, write)
"""
    writer = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        assert spool.stray_temporary_files(older_than_s=STRAY_TEMPORARY_AGE_S) == []
        (in_progress,) = spool.stray_temporary_files()
        # Untouched for longer than a write can take, it is a leftover whoever wrote it.
        aged = time.time() - STRAY_TEMPORARY_AGE_S - 1
        os.utime(spool.root / in_progress, (aged, aged))
        assert spool.stray_temporary_files(older_than_s=STRAY_TEMPORARY_AGE_S) == [in_progress]
        os.utime(spool.root / in_progress)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    # Its writer crashed: the file is a leftover at once, however fresh.
    assert spool.stray_temporary_files(older_than_s=STRAY_TEMPORARY_AGE_S) == [in_progress]

