"""Pixel decoding in a supervised child process, so a crashing decoder cannot take the node down.

The decoders the node relies on are native code (pylibjpeg's C and Rust plugins, GDCM's C++). A
malformed file can make them abort the whole process (an uncaught C++ exception ends in SIGABRT), raise
a Rust panic (``pyo3_runtime.PanicException``, a :class:`BaseException` that ordinary ``except
Exception`` handlers miss) or loop. :class:`DecoderProcess` runs them in a warm child process, one per
worker: the worker sends a file path over a pipe, the child reads the file, decodes its stored values
with :func:`osteonode.imaging.pixels.decode_stored_values` and sends the array back as raw bytes,
received straight into a preallocated numpy array (one copy; about 40 ms for a 4300 x 4300 16-bit
image, see ``bench/pixels.py``).

A child that dies, or that does not answer within the decode timeout (it is then killed), costs only
that file: :meth:`DecoderProcess.decode` raises an :class:`~osteonode.imaging.pixels.ImageError` whose
reason (``decoder_crashed``, ``decoder_timeout``) and message name what happened, the worker records
it as the job's final reason, and the file is never decoded again. The next call starts a fresh
child. The child's address space is capped (``limits.decoder_memory_mb``), so a decoder that
allocates without bound fails in the child instead of driving the host into the OOM killer.

The child is started with the ``spawn`` method: the node's process holds threads (SCP, workers,
scheduler) and torch, which must not be forked.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import structlog

from osteonode.imaging.pixels import ImageError, ImageErrorReason, decode_stored_values

__all__ = ["DecoderProcess"]

log = structlog.get_logger(__name__)

#: How long a child that was asked to stop may take before it is killed.
_STOP_GRACE_S = 2.0
#: Longest wait for a fresh child to say it is ready (imports of pydicom and the decoder plugins).
_START_TIMEOUT_S = 60.0
#: Array element types a decoder may return (stored values of greyscale images).
_STORED_DTYPES = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"}
)


class DecoderProcess:
    """A warm child process that decodes pixel data for one worker.

    Parameters
    ----------
    timeout_s : float
        Longest a decode may take; the child is then killed and the file refused as
        ``decoder_timeout``.
    memory_limit_mb : int or None
        Address-space limit of the child (``RLIMIT_AS``); None leaves it unlimited.
    name : str
        Name of the child process (shown by ``ps``), for the logs.

    Notes
    -----
    Not meant to be shared between threads; calls are serialised by a lock all the same. The child
    starts at the first :meth:`decode` (or :meth:`start`) and again after each crash.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        memory_limit_mb: int | None = None,
        name: str = "osteonode-decoder",
    ) -> None:
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float))
            or not timeout_s > 0
        ):
            raise ValueError(f"timeout_s must be a positive number, got {timeout_s!r}")
        if memory_limit_mb is not None and (
            isinstance(memory_limit_mb, bool)
            or not isinstance(memory_limit_mb, int)
            or memory_limit_mb < 1
        ):
            raise ValueError(
                f"memory_limit_mb must be a positive int or None, got {memory_limit_mb!r}"
            )
        if not isinstance(name, str) or not name:
            raise TypeError("name must be a non-empty str")
        self._timeout_s = float(timeout_s)
        self._memory_limit_mb = memory_limit_mb
        self._name = name
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self.starts = 0
        """Children started so far (the first one included)."""
        self.crashes = 0
        """Children that died or were killed while decoding."""

    @property
    def pid(self) -> int | None:
        """Process ID of the running child, or None when none runs."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def start(self) -> None:
        """Start the child now rather than at the first decode (it then waits warm)."""
        with self._lock:
            self._ensure_started()

    def decode(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
        """Decode the stored values of the file at ``path`` in the child.

        Parameters
        ----------
        path : str or os.PathLike
            A DICOM file whose header the caller has already checked (limits included).

        Returns
        -------
        (numpy.ndarray, str)
            The stored values (rows x columns) and the name of the plugin that decoded them.

        Raises
        ------
        ImageError
            What the decoder said (as in-process decoding would), or ``decoder_crashed`` when the
            child died, or ``decoder_timeout`` when it did not answer in time.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        with self._lock:
            connection = self._ensure_started()
            started = time.monotonic()
            try:
                connection.send(os.fspath(path))
                if not connection.poll(self._timeout_s):
                    self._kill("timeout")
                    raise ImageError(
                        ImageErrorReason.DECODER_TIMEOUT,
                        f"the decoder gave no answer within {self._timeout_s:g} s and was stopped; "
                        "the file is not decoded again",
                    )
                reply = connection.recv()
                if reply[0] == "error":
                    raise ImageError(ImageErrorReason(reply[1]), reply[2])
                _, dtype, shape, plugin = reply
                try:
                    stored = _empty_array(dtype, shape)
                except ImageError:
                    self._discard()  # its bytes are still in the pipe: start the next file afresh
                    raise
                remaining = self._timeout_s - (time.monotonic() - started)
                if stored.nbytes and not connection.poll(max(remaining, 0.001)):
                    self._kill("timeout")
                    raise ImageError(
                        ImageErrorReason.DECODER_TIMEOUT,
                        f"the decoder did not finish sending pixels within {self._timeout_s:g} s",
                    )
                if stored.nbytes:
                    connection.recv_bytes_into(memoryview(stored).cast("B"))
                return stored, plugin
            except (EOFError, OSError) as error:
                raise self._crashed(error) from None

    def close(self) -> None:
        """Stop the child (it finishes nothing: a decode in flight is abandoned)."""
        with self._lock:
            connection, process = self._connection, self._process
            self._connection = self._process = None
        if connection is not None:
            try:
                connection.send(None)
            except OSError:
                pass
            connection.close()
        if process is not None:
            process.join(_STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()

    def _ensure_started(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._connection is not None:
            return self._connection
        self._discard()
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve, args=(child_end, self._memory_limit_mb), name=self._name, daemon=True
        )
        process.start()
        child_end.close()
        # The child says it is ready once its imports are done, so the first decode's timeout does
        # not include starting Python.
        if not parent_end.poll(_START_TIMEOUT_S):
            process.kill()
            process.join()
            raise RuntimeError(f"the decoder process did not start within {_START_TIMEOUT_S:g} s")
        try:
            parent_end.recv()
        except EOFError:
            process.join()
            raise RuntimeError(
                f"the decoder process exited at start (exit code {process.exitcode})"
            ) from None
        self._process, self._connection = process, parent_end
        self.starts += 1
        log.info("decoder_started", decoder=self._name, pid=process.pid, starts=self.starts)
        return parent_end

    def _crashed(self, error: BaseException) -> ImageError:
        process = self._process
        if process is not None:
            process.join(_STOP_GRACE_S)
        self._kill("crash")
        code = process.exitcode if process is not None else None
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        elif code is not None:
            how = f"exited with code {code}"
        else:
            how = f"stopped answering ({type(error).__name__})"
        return ImageError(
            ImageErrorReason.DECODER_CRASHED,
            f"the decoder process {how} while decoding this file; it is quarantined and not decoded again",
        )

    def _kill(self, why: str) -> None:
        """Kill the child (crash or timeout) and count it; the next decode starts a fresh one."""
        process = self._process
        self.crashes += 1
        log.warning(
            "decoder_lost",
            decoder=self._name,
            pid=process.pid if process is not None else None,
            why=why,
            exit_code=process.exitcode if process is not None else None,
            crashes=self.crashes,
        )
        self._discard()

    def _discard(self) -> None:
        connection, process = self._connection, self._process
        self._connection = self._process = None
        if connection is not None:
            connection.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join()


def _empty_array(dtype: str, shape: tuple[int, int]) -> np.ndarray:
    """The array the child's bytes are received into, after checking what the child announced."""
    if (
        dtype not in _STORED_DTYPES
        or len(shape) != 2
        or not all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise ImageError(
            ImageErrorReason.DECODER_FAILURE,
            f"the decoder returned an unusable array ({dtype}, {shape})",
        )
    return np.empty(shape, dtype=np.dtype(dtype))


def _serve(connection: Connection, memory_limit_mb: int | None) -> None:
    """The child's loop: decode each path it is sent until it is sent None or the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when the child stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_limit_mb is not None:
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    connection.send("ready")
    while True:
        try:
            path = connection.recv()
        except EOFError:  # the parent is gone
            return
        if path is None:
            return
        try:
            stored, plugin = _decode_file(Path(path))
        except ImageError as error:
            connection.send(("error", error.reason.value, error.message))
            continue
        except BaseException as error:  # noqa: BLE001 - a Rust panic is a BaseException; report it
            connection.send(
                (
                    "error",
                    ImageErrorReason.DECODER_FAILURE.value,
                    f"{type(error).__name__}: {error}",
                )
            )
            continue
        stored = np.ascontiguousarray(stored)
        connection.send(("ok", stored.dtype.name, tuple(int(n) for n in stored.shape), plugin))
        if stored.nbytes:
            connection.send_bytes(memoryview(stored).cast("B"))


def _decode_file(path: Path) -> tuple[np.ndarray, str]:
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # the parent read this header; a failure here is a damaged file
        raise ImageError(
            ImageErrorReason.UNREADABLE_FILE, f"cannot read the file for decoding: {error}"
        ) from error
    return decode_stored_values(dataset)
