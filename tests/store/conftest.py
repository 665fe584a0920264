"""Helpers for the store tests: receipts of made-up instances, a spool in a temporary directory."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from osteonode.store.db import Database
from osteonode.store.queue import Receipt, ReceiptOutcome, record_receipt
from osteonode.store.spool import Spool
from osteonode.store.tables import utc_now

DIGITAL_XRAY_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_uid_numbers = itertools.count(1)


def new_uid() -> str:
    """Return a fresh UID under a test root."""
    return f"1.2.826.0.1.3680043.10.1234.{next(_uid_numbers)}"


def make_receipt(
    sop_instance_uid: str | None = None,
    *,
    received_at: datetime | None = None,
    spool_path: str | None = None,
) -> Receipt:
    """Return a receipt of a made-up digital X-ray instance."""
    uid = sop_instance_uid or new_uid()
    return Receipt(
        sop_instance_uid=uid,
        sop_class_uid=DIGITAL_XRAY_SOP_CLASS,
        transfer_syntax_uid=EXPLICIT_VR_LITTLE_ENDIAN,
        spool_path=spool_path or f"incoming/00/{uid}.dcm",
        size_bytes=1024,
        calling_ae="MODALITY",
        called_ae="OSTEONODE",
        calling_host="127.0.0.1",
        study_instance_uid=f"{uid}.1",
        series_instance_uid=f"{uid}.2",
        modality="DX",
        received_at=received_at or utc_now(),
    )


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """An empty spool in a temporary directory."""
    return Spool(tmp_path / "spool")


@pytest.fixture
def receive(database: Database) -> Callable[..., ReceiptOutcome]:
    """Record the receipt of a new made-up instance in its own committed transaction."""

    def _receive(
        sop_instance_uid: str | None = None, *, max_attempts: int = 3, **receipt_fields: object
    ) -> ReceiptOutcome:
        with database.session() as session:
            return record_receipt(
                session, make_receipt(sop_instance_uid, **receipt_fields), max_attempts=max_attempts
            )

    return _receive
