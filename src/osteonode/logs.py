"""Logging set-up: structlog for the node's own events, the standard library's records alongside.

Lines are readable on a terminal and JSON objects otherwise, so a log shipper can parse what a
service writes while an administrator at a console can read it. Everything the process has to say
goes through the one handler: the node's events, the standard-library records of the libraries,
Python warnings (``library_warning``) and uncaught exceptions of any thread (``uncaught_exception``,
with the traceback as a field), so nothing reaches standard error outside the structured log.

Patient identity never reaches a log line:

* event fields whose name says they identify a patient are replaced;
* text written by others (library log records, warnings, exception messages and tracebacks, and
  the ``error`` field that carries an exception's text) has every quoted span replaced, because that
  is where pydicom and Python's ``repr`` put element values: ``Invalid value for VR DA:
  '19xx0101'`` becomes ``Invalid value for VR DA: [redacted]``; quoted file paths and UIDs, which
  the node writes itself, are kept;
* pynetdicom's debug output, which can dump whole datasets, is never enabled.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog

from osteonode.config import LoggingSettings

__all__ = [
    "REDACTED",
    "configure_logging",
    "redact_library_text",
    "redact_patient_identity",
    "redact_quoted",
]

REDACTED = "[redacted]"

#: Event fields that may never be logged with a value (compared in lower case, ``_`` removed).
_IDENTIFYING_FIELDS = frozenset(
    {
        "patientname",
        "patientid",
        "patientbirthdate",
        "otherpatientids",
        "otherpatientnames",
        "patientaddress",
        "patientmothersbirthname",
        "accessionnumber",
        "referringphysicianname",
    }
)


#: Fields that hold text written by others (exceptions, tracebacks, library messages).
_LIBRARY_TEXT_FIELDS = ("error", "exception", "stack")
#: A quoted span as Python's repr and pydicom's messages write values: 'x', "x", b'x', with escapes.
_QUOTED = re.compile(r"b?'(?:[^'\\\n]|\\.)*'" + r'|b?"(?:[^"\\\n]|\\.)*"')


#: Quoted spans kept as they are: paths (the node's own files) and UIDs carry no patient identity.
_NOT_IDENTITY = re.compile(r"b?['\"](?:[^'\"]*/[^'\"]*|[0-9.]+)['\"]")


def redact_quoted(text: str) -> str:
    """``text`` with every quoted span replaced by :data:`REDACTED`, except paths and UIDs."""
    return _QUOTED.sub(lambda quoted: quoted[0] if _NOT_IDENTITY.fullmatch(quoted[0]) else REDACTED, text)


def redact_patient_identity(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name says it identifies a patient."""
    for key in list(event_dict):
        if key.replace("_", "").lower() in _IDENTIFYING_FIELDS:
            event_dict[key] = REDACTED
    return event_dict


def redact_library_text(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact quoted values in text that others wrote.

    Applied to the message of every standard-library record (the libraries' own log lines) and to
    the ``error``, ``exception`` and ``stack`` fields of every event.
    """
    if event_dict.get("_from_structlog") is False and isinstance(event_dict.get("event"), str):
        event_dict["event"] = redact_quoted(event_dict["event"])
    for key in _LIBRARY_TEXT_FIELDS:
        if isinstance(event_dict.get(key), str):
            event_dict[key] = redact_quoted(event_dict[key])
    return event_dict


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: a warning becomes a ``library_warning`` event."""
    structlog.get_logger("py.warnings").warning(
        "library_warning",
        category=category.__name__,
        error=str(message),
        location=f"{filename}:{lineno}",
    )


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None, thread: str
) -> None:
    structlog.get_logger("osteonode").critical(
        "uncaught_exception", thread=thread, exc_info=(kind, error, traceback)
    )


def _log_uncaught_in_thread(arguments: threading.ExceptHookArgs) -> None:
    if arguments.exc_value is None or arguments.exc_type is SystemExit:
        return
    name = arguments.thread.name if arguments.thread is not None else "unknown"
    _log_uncaught(arguments.exc_type, arguments.exc_value, arguments.exc_traceback, name)


def _log_uncaught_in_main(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    _log_uncaught(kind, error, traceback, threading.current_thread().name)


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> None:
    """Route structlog and standard-library logging to one handler in the configured format.

    Parameters
    ----------
    settings
        Level and format (``auto`` picks console output when ``stream`` is a terminal).
    stream
        Where lines go; standard error by default.
    """
    stream = sys.stderr if stream is None else stream
    console = settings.format == "console" or (settings.format == "auto" and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_patient_identity,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            # Tracebacks become text first (the console renderer prints an ``exception`` field as
            # it is), so that the text can be redacted before anything is written.
            structlog.processors.format_exc_info,
            redact_library_text,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.getLevelNamesMapping()[settings.level]
    root.setLevel(level)
    # pynetdicom's DEBUG level prints whole datasets, patient identity included.
    logging.getLogger("pynetdicom").setLevel(max(level, logging.INFO))
    for chatty in ("apscheduler", "alembic", "sqlalchemy.engine"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    # Warnings and uncaught exceptions would otherwise be printed raw to standard error.
    warnings.showwarning = _log_warning
    sys.excepthook = _log_uncaught_in_main
    threading.excepthook = _log_uncaught_in_thread
