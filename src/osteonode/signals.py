"""Stopping on SIGTERM / SIGINT: a light module, so a process can install its handlers first thing.

A node process spends seconds importing and loading models before it runs; a SIGTERM in that time
must still end it cleanly (exit 0), not kill it. The command line therefore installs these handlers
before it imports the heavy parts, and hands the event on.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import structlog

__all__ = ["stop_on_signals"]

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def stop_on_signals(stop_requested: threading.Event) -> Iterator[threading.Event]:
    """Set ``stop_requested`` on SIGTERM or SIGINT while the block runs; restore handlers after."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop_requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
