"""notifications: channels with their rule, and the outbox of deliveries

A delivery row is written in the transaction of the event it reports (the outbox), so
it exists exactly when its change committed; senders claim due rows with a lease.

Revision ID: 0009_notifications
Revises: 0008_stats_indexes
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_notifications"
down_revision = "0008_stats_indexes"  # re-chained at the merge of main (0007, 0008 landed first)
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notify_channels",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.Text()),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("secret_prefix", sa.String(32), nullable=False),
        sa.Column("chat_id", sa.String(64)),
        sa.Column("rule", JsonDoc, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text()),
        sa.Column("next_send_at", Stamp),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_table(
        "notify_deliveries",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "channel_id",
            sa.BigInteger(),
            sa.ForeignKey("notify_channels.id", ondelete="CASCADE"),
            nullable=False,
        ),  # fmt: skip
        sa.Column("message_id", sa.String(80), nullable=False, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("event_id", sa.BigInteger()),
        sa.Column("incident_id", sa.BigInteger()),
        sa.Column("severity", sa.String(16)),
        sa.Column("payload", JsonDoc, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("round_start", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Stamp, nullable=False),
        sa.Column("claimed_until", Stamp),
        sa.Column("claim", sa.String(32)),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("delivered_at", Stamp),
    )
    op.create_index("ix_notify_deliveries_due", "notify_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_notify_deliveries_channel", "notify_deliveries", ["channel_id", "id"])
    op.create_index("ix_notify_deliveries_incident", "notify_deliveries", ["incident_id", "id"])


def downgrade() -> None:
    op.drop_table("notify_deliveries")
    op.drop_table("notify_channels")
