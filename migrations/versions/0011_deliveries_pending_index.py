"""deliveries: an index of the pending ones only, and room on each page for updates

The due index held every delivery, and each delivery is written three times (inserted,
claimed, recorded), so every version of every row entered it. The partial index holds
pending versions only (a recorded delivery's new version stays out of it) and is in the
claim's order (next_attempt_at, id). On PostgreSQL pages keep 30% free, so that a
claim, which changes no indexed column, can update its row in place (a HOT update,
which touches no index at all).

Revision ID: 0011_deliveries_pending_index
Revises: 0010_deliveries_no_channel_fk
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_deliveries_pending_index"
down_revision = "0010_deliveries_no_channel_fk"
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_notify_deliveries_due", "notify_deliveries")
    op.create_index(
        "ix_notify_deliveries_pending", "notify_deliveries", ["next_attempt_at", "id"],
        postgresql_where=PENDING, sqlite_where=PENDING,
    )  # fmt: skip
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE notify_deliveries SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE notify_deliveries RESET (fillfactor)")
    op.drop_index("ix_notify_deliveries_pending", "notify_deliveries")
    op.create_index("ix_notify_deliveries_due", "notify_deliveries", ["state", "next_attempt_at"])
