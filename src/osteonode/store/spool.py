"""The spool: DICOM files on disk, written so that a crash never leaves a half-written file.

Layout under the spool root::

    incoming/<aa>/<SOP Instance UID>.dcm     received instances
    outgoing/<aa>/<SOP Instance UID>.dcm     result objects waiting to be delivered

where ``<aa>`` is the first two hex digits of the SHA-1 of the UID, so no directory grows beyond a
few thousand entries. The database stores paths relative to the root, so a spool can be moved or
mounted elsewhere.

Every file is written to a temporary file in its final directory, flushed and fsynced, then
published under its final name with a hard link (atomic, and unlike a rename it never replaces an
existing file), and the directory is fsynced. A second file for the same UID (two associations sending the
same instance at once, or a file left by a crash before its database commit) is published as
``<UID>.<n>.dcm`` instead of overwriting the first, so discarding the loser of such a race can never
delete the winner's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import structlog

__all__ = ["Spool", "SpoolError", "SpoolWriter"]

log = structlog.get_logger(__name__)

#: Writes the content of a file into the open binary file it is given.
SpoolWriter = Callable[[BinaryIO], None]

INCOMING_DIR = "incoming"
OUTGOING_DIR = "outgoing"
FILE_SUFFIX = ".dcm"
_TEMP_PREFIX = ".tmp-"
#: A temporary file's name after the prefix: the writing host and process, then mkstemp's letters,
#: so that a process sharing the spool can tell a crashed writer's file from a live one's.
_WRITER = re.compile(r"^(?P<host>.+)-(?P<pid>[0-9]+)-[a-z0-9_]+(?:\.dcm)?$")
#: Prefix of the file :meth:`Spool.ensure_writable` writes and removes; never a stray write, so a
#: process starting beside this one does not take it for one.
_PROBE_PREFIX = ".probe-"
# Digits and dots only: every valid UID matches, and such a name can never leave its directory.
_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
_MAX_UID_LENGTH = 64
# More copies of one UID than this points at a sender in a loop, not at a race.
_MAX_COPIES = 1000


class SpoolError(OSError):
    """The spool cannot be used (missing, not writable, or a path outside it)."""


def _check_uid(sop_instance_uid: str) -> str:
    if not isinstance(sop_instance_uid, str):
        raise TypeError(f"SOP Instance UID must be a str, got {type(sop_instance_uid).__name__}")
    if len(sop_instance_uid) > _MAX_UID_LENGTH or not _UID_PATTERN.fullmatch(sop_instance_uid):
        raise ValueError(
            f"invalid SOP Instance UID {sop_instance_uid!r}: expected up to 64 digits and dots"
        )
    return sop_instance_uid


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    """Whether a process with this PID runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def _make_durable_directory(directory: Path) -> None:
    """Create ``directory`` and its missing parents, syncing each new entry into its parent.

    Without the parent's fsync a crash could lose a new directory, and every file in it.
    """
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another thread made it meanwhile
            new.mkdir()
        _fsync_directory(new.parent)


class Spool:
    """Crash-safe file storage for received instances and outgoing result objects.

    Parameters
    ----------
    root: pathlib.Path | str
        Directory of the spool; created (with its parents) on the first write or by
        :meth:`ensure_writable`.
    """

    def __init__(self, root: Path | str) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"spool root must be a path, got {type(root).__name__}")
        if str(root) == "":
            raise ValueError("spool root must not be empty")
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    def store_incoming(self, sop_instance_uid: str, write: SpoolWriter | bytes) -> Path:
        """Durably store a received instance.

        Parameters
        ----------
        sop_instance_uid: str
            SOP Instance UID of the instance; names the file.
        write: Callable[[BinaryIO], None] | bytes
            The encoded file (e.g. ``event.encoded_dataset()``), or a function writing it.

        Returns
        -------
        pathlib.Path
            Path of the file relative to the spool root (store this in the database).

        Raises
        ------
        ValueError
            If the UID is not a valid UID.
        SpoolError
            If no free file name is left for this UID.
        OSError
            If writing fails (e.g. the disk is full); no partial file is left behind.
        """
        return self._store(INCOMING_DIR, _check_uid(sop_instance_uid), write)

    def write_outgoing(self, sop_instance_uid: str, write: SpoolWriter | bytes) -> Path:
        """Durably store a result object that is to be delivered.

        Parameters
        ----------
        sop_instance_uid: str
            SOP Instance UID of the new object; names the file.
        write: Callable[[BinaryIO], None] | bytes
            The encoded file, or a function writing it.

        Returns
        -------
        pathlib.Path
            Path of the file relative to the spool root.

        Raises
        ------
        ValueError
            If the UID is not a valid UID.
        OSError
            If writing fails; no partial file is left behind.
        """
        return self._store(OUTGOING_DIR, _check_uid(sop_instance_uid), write)

    def _store(self, area: str, uid: str, write: SpoolWriter | bytes) -> Path:
        if not isinstance(write, (bytes, bytearray, memoryview)) and not callable(write):
            raise TypeError(f"write must be bytes or a callable, got {type(write).__name__}")
        bucket = hashlib.sha1(uid.encode("ascii"), usedforsecurity=False).hexdigest()[:2]
        directory = self.root / area / bucket
        _make_durable_directory(directory)
        prefix = f"{_TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"
        fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=FILE_SUFFIX, dir=directory)
        temp_path = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as file:
                if callable(write):
                    write(file)
                else:
                    file.write(write)
                file.flush()
                os.fsync(file.fileno())
            final_path = self._publish(temp_path, directory, uid)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp_path.unlink()
        _fsync_directory(directory)
        relative = final_path.relative_to(self.root)
        log.debug("spool_file_written", path=str(relative), size_bytes=final_path.stat().st_size)
        return relative

    @staticmethod
    def _publish(temp_path: Path, directory: Path, uid: str) -> Path:
        """Give the temporary file its final name without ever replacing an existing file."""
        for copy in range(_MAX_COPIES):
            name = f"{uid}{FILE_SUFFIX}" if copy == 0 else f"{uid}.{copy}{FILE_SUFFIX}"
            final_path = directory / name
            try:
                os.link(temp_path, final_path)
            except FileExistsError:
                continue
            return final_path
        raise SpoolError(f"{_MAX_COPIES} files for UID {uid} already in {directory}")

    def path(self, relative: Path | str) -> Path:
        """Return the absolute path of a file given by its path relative to the spool root.

        Parameters
        ----------
        relative: pathlib.Path | str
            Path as returned by :meth:`store_incoming` or stored in the database.

        Raises
        ------
        SpoolError
            If the path is absolute or leads out of the spool.
        """
        if not isinstance(relative, (str, os.PathLike)):
            raise TypeError(f"spool path must be a path, got {type(relative).__name__}")
        parts = PurePosixPath(Path(relative).as_posix())
        if parts.is_absolute() or ".." in parts.parts or str(parts) in ("", "."):
            raise SpoolError(f"spool path {str(relative)!r} is not a file inside the spool")
        return self.root / parts

    def delete(self, relative: Path | str) -> bool:
        """Delete a spool file; a file that is already gone is not an error.

        Parameters
        ----------
        relative: pathlib.Path | str
            Path relative to the spool root.

        Returns
        -------
        bool
            True if a file was deleted, False if it did not exist.
        """
        try:
            self.path(relative).unlink()
        except FileNotFoundError:
            return False
        return True

    def free_bytes(self) -> int:
        """Return the bytes available to this process on the file system of the spool."""
        existing = self.root
        while not existing.exists():
            existing = existing.parent
        return shutil.disk_usage(existing).free

    def ensure_writable(self) -> None:
        """Create the spool directories and prove that a file can be written, synced and removed.

        Raises
        ------
        SpoolError
            If the spool cannot be created or written, with the reason.
        """
        try:
            for area in (INCOMING_DIR, OUTGOING_DIR):
                _make_durable_directory(self.root / area)
            with tempfile.NamedTemporaryFile(prefix=_PROBE_PREFIX, dir=self.root) as probe:
                probe.write(b"osteonode spool probe")
                probe.flush()
                os.fsync(probe.fileno())
            _fsync_directory(self.root)
        except OSError as error:
            raise SpoolError(f"spool {str(self.root)!r} is not writable: {error}") from error

    def published_files(self) -> list[tuple[Path, float]]:
        """Return every published file (relative path) with its modification time (epoch seconds).

        Temporary files are not included (see :meth:`stray_temporary_files`).
        """
        files = []
        for area in (INCOMING_DIR, OUTGOING_DIR):
            directory = self.root / area
            if not directory.exists():
                continue
            for path in directory.rglob(f"*{FILE_SUFFIX}"):
                if path.name.startswith(_TEMP_PREFIX):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    files.append((path.relative_to(self.root), path.stat().st_mtime))
        return sorted(files)

    def stray_temporary_files(self, older_than_s: float = 0.0) -> list[Path]:
        """Return temporary files left by writes a crash interrupted (relative paths).

        They were never acknowledged, so they may be deleted. Several processes may share a
        spool: a file whose writer is a live process of this host is another process's write in
        progress, and so may be one from another host; such a file is returned only once it has
        not been written to for ``older_than_s`` seconds. A file whose writer on this host has
        ended is returned at once.
        """
        if older_than_s < 0:
            raise ValueError(f"older_than_s must not be negative, got {older_than_s}")
        if not self.root.exists():
            return []
        cutoff = time.time() - older_than_s
        host = socket.gethostname()
        stray = []
        for path in self.root.rglob(f"{_TEMP_PREFIX}*"):
            writer = _WRITER.match(path.name.removeprefix(_TEMP_PREFIX))
            ended = writer is not None and writer["host"] == host and not _running(int(writer["pid"]))
            with contextlib.suppress(FileNotFoundError):  # finished or removed meanwhile
                if path.is_file() and (ended or path.stat().st_mtime <= cutoff):
                    stray.append(path.relative_to(self.root))
        return sorted(stray)
