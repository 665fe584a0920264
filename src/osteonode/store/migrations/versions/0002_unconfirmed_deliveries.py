"""Deliveries remember when a try sent the whole object but lost the answer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

``deliveries.unconfirmed_at`` is set by the first try whose association was lost after the object
went; from then on the destination may hold the object, so the delivery ends ``maybe_sent`` rather
than ``dead`` if no later try is confirmed. The new states ``unconfirmed`` and ``maybe_sent`` fit the
existing ``VARCHAR(16)`` state column. Existing rows get NULL: none of their tries is known to have
lost an answer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("unconfirmed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # The two states exist only with the column; an older node knows them as waiting or dead.
    op.execute("UPDATE deliveries SET state = 'failed' WHERE state = 'unconfirmed'")
    op.execute("UPDATE deliveries SET state = 'dead' WHERE state = 'maybe_sent'")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("unconfirmed_at")
