"""users, incidents and the event log

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "incidents",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("title", sa.String(200)),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("details", JsonDoc),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("resolved_at", Time),
        sa.Column("resolved_by", sa.String(64)),
        sa.Column("resolution", sa.Text()),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_incidents_created", "incidents", ["created_at", "id"])
    for column in ("status", "source", "severity"):
        op.create_index(f"ix_incidents_{column}_created", "incidents", [column, "created_at", "id"])
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("data", JsonDoc, nullable=False),
        sa.Column("changes", JsonDoc, nullable=False),
    )
    op.create_index("ix_events_incident_id", "events", ["incident_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("incidents")
    op.drop_table("users")
