"""Logging set-up: structlog for the node's own events, the standard library's records alongside.

Lines are readable on a terminal and JSON objects otherwise, so a log shipper can parse what a
service writes while an administrator at a console can read it. Patient identity never reaches a
log line: event fields that could carry it are replaced before rendering, and pynetdicom's debug
output, which can dump whole datasets, is never enabled.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from osteonode.config import LoggingSettings

__all__ = ["REDACTED", "configure_logging", "redact_patient_identity"]

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


def redact_patient_identity(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name says it identifies a patient."""
    for key in list(event_dict):
        if key.replace("_", "").lower() in _IDENTIFYING_FIELDS:
            event_dict[key] = REDACTED
    return event_dict


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
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([] if console else [structlog.processors.format_exc_info]),
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
