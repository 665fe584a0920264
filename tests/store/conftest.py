"""Fixtures of the store tests: a spool in a temporary directory, and receiving made-up instances."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.receipts import make_receipt

from osteonode.store.db import Database
from osteonode.store.queue import ReceiptOutcome, record_receipt
from osteonode.store.spool import Spool


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
