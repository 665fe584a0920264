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


def _json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_library_warnings_are_log_events_with_quoted_values_redacted():
    import warnings

    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = logging_showwarning()
        warnings.warn("Invalid value for VR PN: 'DOE^JANE'.", UserWarning, stacklevel=1)

    (record,) = _json_lines(stream)
    assert record["event"] == "library_warning" and record["category"] == "UserWarning"
    assert record["error"] == f"Invalid value for VR PN: {REDACTED}."
    assert "DOE" not in stream.getvalue()


def logging_showwarning():
    """The hook configure_logging installed (catch_warnings restores the previous one on exit)."""
    from osteonode import logs

    return logs._log_warning


def test_pydicom_validation_messages_reach_the_log_without_the_value():
    """pydicom checks values as they are set (a report copying the patient module from a source
    header), and quotes an invalid value in its warning and its own log record."""
    import warnings

    from pydicom.dataset import Dataset

    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = logging_showwarning()
        Dataset().PatientBirthDate = "19xx0704"

    text = stream.getvalue()
    events = _json_lines(stream)
    assert {event["logger"] for event in events} == {"pydicom", "py.warnings"}
    assert all("Invalid value for VR DA: [redacted]" in line for line in text.splitlines())
    assert "19xx0704" not in text


def test_uncaught_exceptions_of_threads_are_one_json_event_with_a_redacted_traceback():
    import threading

    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=stream)

    def fail() -> None:
        raise ValueError("Unable to convert 'DOE^JANE' to 'DA' object")

    thread = threading.Thread(target=fail, name="decoder")
    thread.start()
    thread.join()

    (record,) = _json_lines(stream)
    assert record["event"] == "uncaught_exception" and record["thread"] == "decoder"
    assert "ValueError" in record["exception"] and "Traceback" in record["exception"]
    assert "DOE" not in stream.getvalue()


def test_error_fields_of_node_events_are_redacted_but_identifiers_stay():
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=stream)
    structlog.get_logger("osteonode.worker").error(
        "job_attempt_failed", sop_instance_uid="1.2.3", error="ValueError: bad value 'DOE^JANE'"
    )
    (record,) = _json_lines(stream)
    assert record["sop_instance_uid"] == "1.2.3"
    assert record["error"] == f"ValueError: bad value {REDACTED}"


def test_quoted_paths_and_uids_in_error_text_are_kept():
    from osteonode.logs import redact_quoted

    text = "[Errno 20] Not a directory: '/var/spool/incoming' for '1.2.840.1' of 'DOE^JANE'"
    assert redact_quoted(text) == (
        f"[Errno 20] Not a directory: '/var/spool/incoming' for '1.2.840.1' of {REDACTED}"
    )
