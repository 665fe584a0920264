"""Argument checks shared by the store's functions (queue, deliveries, retention)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from osteonode.store.tables import utc_now

__all__ = ["check_aware", "check_period", "check_text", "resolve_now"]


def check_text(name: str, value: Any, max_length: int, *, optional: bool = False) -> None:
    """Require a non-empty str of at most ``max_length`` characters (or None when ``optional``).

    Raises
    ------
    TypeError
        If ``value`` is not a str.
    ValueError
        If it is empty or too long.
    """
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value or len(value) > max_length:
        raise ValueError(f"{name} must have 1 to {max_length} characters, got {value!r}")


def check_aware(name: str, value: Any) -> None:
    """Require a timezone-aware datetime.

    Raises
    ------
    TypeError
        If ``value`` is not a datetime.
    ValueError
        If it is naive.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")


def check_period(name: str, value: Any) -> None:
    """Require a timedelta that is not negative.

    Raises
    ------
    TypeError
        If ``value`` is not a timedelta.
    ValueError
        If it is negative.
    """
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta, got {type(value).__name__}")
    if value < timedelta(0):
        raise ValueError(f"{name} must not be negative, got {value}")


def resolve_now(now: datetime | None) -> datetime:
    """``now`` checked to be timezone-aware, or the current UTC time when None."""
    if now is None:
        return utc_now()
    check_aware("now", now)
    return now
