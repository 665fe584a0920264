"""Wake-ups: a committed job wakes a worker, a committed delivery wakes the sender, at once.

Workers and senders do not poll for work; they sleep until the database says there is some. A
store function that makes work (a received image's job, a job back in line, a delivery due now) marks
its session with :func:`wake_after_commit`; when that transaction commits, every waiter of the
channel in this process is woken (:class:`Wakeups`). On PostgreSQL the same mark also issues
``NOTIFY``, which the server delivers at commit to every process that ``LISTEN``\\ s
(:class:`PostgresListener`), so a scale-out receiver wakes the workers on other hosts as well.

Nothing depends on a wake-up arriving: waiters still look for work every safety-net period
(``workers.poll_interval_s``, ``delivery.interval_s``), which also covers what no commit announces,
such as a lease running out or a back-off coming due.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["Channel", "PostgresListener", "Wakeups", "wake_after_commit"]

log = structlog.get_logger(__name__)

#: Where a session keeps the channels to wake once it commits.
_SESSION_KEY = "osteonode.wake_after_commit"


class Channel(enum.StrEnum):
    """What kind of work a wake-up announces; the value is the PostgreSQL ``NOTIFY`` channel."""

    JOBS = "osteonode_jobs"
    """A job is ready to be claimed (received, released, routed to a pipeline, back in line)."""
    DELIVERIES = "osteonode_deliveries"
    """A delivery is due now (queued with its result, or queued again by an operator)."""


def wake_after_commit(session: Session, channel: Channel) -> None:
    """Wake the waiters of ``channel`` once ``session``'s transaction commits (not if it rolls back).

    Parameters
    ----------
    session
        The open session whose transaction makes the work.
    channel
        The kind of work made.
    """
    if not isinstance(session, Session):
        raise TypeError(f"session must be a Session, got {type(session).__name__}")
    channel = Channel(channel)
    pending: set[Channel] = session.info.setdefault(_SESSION_KEY, set())
    if channel in pending:
        return
    pending.add(channel)
    if session.get_bind().dialect.name == "postgresql":
        # Delivered by the server to every listening process when (and only if) this commits.
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel.value})


def take_committed_wakeups(session: Session) -> set[Channel]:
    """The channels ``session`` marked, removed from it (called after commit and rollback)."""
    return session.info.pop(_SESSION_KEY, set())


class Wakeups:
    """The waiters of one process, woken per channel.

    Each channel keeps a count of wake-ups. A waiter reads :meth:`seen` before it looks for work and
    passes that count to :meth:`wait`, which returns at once if a wake-up came in between, so a
    commit that lands while the waiter is still looking is never missed.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._counts = dict.fromkeys(Channel, 0)

    def seen(self, channel: Channel) -> int:
        """The wake-up count of ``channel`` now."""
        with self._condition:
            return self._counts[Channel(channel)]

    def wake(self, channel: Channel) -> None:
        """Wake every waiter of ``channel``."""
        with self._condition:
            self._counts[Channel(channel)] += 1
            self._condition.notify_all()

    def interrupt(self) -> None:
        """Wake every waiter of every channel (a waiter checks its stop flag on waking)."""
        with self._condition:
            for channel in Channel:
                self._counts[channel] += 1
            self._condition.notify_all()

    def wait(self, channel: Channel, seen: int, timeout_s: float) -> bool:
        """Wait until ``channel`` is woken after count ``seen``, at most ``timeout_s`` seconds.

        Returns
        -------
        bool
            True when woken, False when the timeout (the safety net) ran out.
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        channel = Channel(channel)
        with self._condition:
            return self._condition.wait_for(lambda: self._counts[channel] != seen, timeout_s)


class PostgresListener(threading.Thread):
    """Relays PostgreSQL notifications of the wake-up channels to this process's :class:`Wakeups`.

    One dedicated connection in autocommit mode ``LISTEN``\\ s on every channel. When the connection
    breaks, the listener reconnects after ``retry_s`` and wakes every channel, since notifications
    sent meanwhile are lost (the safety-net period would find the work anyway).

    Parameters
    ----------
    connect
        Opens a new psycopg connection to the node's database.
    wakeups
        The process's waiters.
    retry_s
        Pause before reconnecting after a failure.
    """

    #: How often the listener looks at its stop flag while no notification arrives.
    _STOP_CHECK_S = 0.5

    def __init__(self, connect: Callable[[], Any], wakeups: Wakeups, *, retry_s: float = 2.0) -> None:
        if not callable(connect):
            raise TypeError("connect must be callable")
        if not isinstance(wakeups, Wakeups):
            raise TypeError(f"wakeups must be Wakeups, got {type(wakeups).__name__}")
        if not retry_s > 0:
            raise ValueError(f"retry_s must be positive, got {retry_s}")
        super().__init__(name="osteonode-postgres-listener", daemon=True)
        self._connect = connect
        self._wakeups = wakeups
        self._retry_s = retry_s
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Stop listening (within about half a second)."""
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except Exception as error:  # noqa: BLE001 - a database outage must not end the thread
                log.warning("wakeup_listener_failed", error=f"{type(error).__name__}: {error}")
                self._wakeups.interrupt()
                self._stopping.wait(self._retry_s)

    def _listen(self) -> None:
        with self._connect() as connection:
            connection.autocommit = True
            for channel in Channel:
                connection.execute(f"LISTEN {channel.value}")
            # Work committed before LISTEN took effect announced nothing here: look once.
            self._wakeups.interrupt()
            while not self._stopping.is_set():
                for notification in connection.notifies(timeout=self._STOP_CHECK_S):
                    self._wakeups.wake(Channel(notification.channel))
