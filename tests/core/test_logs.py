"""Log lines: JSON for machines, readable for people, and never a patient's identity."""

from __future__ import annotations

import io
import json
import logging

import structlog

from osteonode.config import LoggingSettings
from osteonode.logs import REDACTED, configure_logging


def test_json_lines_when_not_a_terminal_without_patient_identity():
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="auto"), stream=stream)
    structlog.get_logger("osteonode.test").info(
        "instance_received", sop_instance_uid="1.2.3", patient_name="DOE^JANE", PatientID="12345"
    )
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["event"] == "instance_received"
    assert record["sop_instance_uid"] == "1.2.3"
    assert record["patient_name"] == REDACTED and record["PatientID"] == REDACTED
    assert record["level"] == "info" and record["timestamp"].endswith("Z")
    assert "DOE" not in stream.getvalue() and "12345" not in stream.getvalue()


def test_console_format_is_readable_text():
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="console"), stream=stream)
    structlog.get_logger("osteonode.test").warning("disk_low", free_mb=12)
    line = stream.getvalue()
    assert "disk_low" in line and "free_mb=12" in line
    assert not line.lstrip().startswith("{")


def test_standard_library_records_share_the_format_and_level():
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json", level="warning"), stream=stream)
    logging.getLogger("pynetdicom.test").warning("association refused")
    logging.getLogger("pynetdicom.test").info("not shown at WARNING")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["event"] == "association refused"


def test_pynetdicom_debug_output_is_never_enabled():
    configure_logging(LoggingSettings(format="json", level="DEBUG"), stream=io.StringIO())
    assert logging.getLogger("pynetdicom").getEffectiveLevel() == logging.INFO
