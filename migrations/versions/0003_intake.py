"""monitoring intake: dedup keys on incidents, remembered answers for request ids

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"  # written after 0001; chained after main's 0002 when merging it
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Time = sa.DateTime(timezone=True)
# Must stay equal to models.OPEN_DEDUP_KEY (a migration never imports the app's models).
OPEN_DEDUP_KEY = "dedup_key IS NOT NULL AND status NOT IN ('completed', 'fake')"
NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("dedup_key", sa.String(255)))
        batch.add_column(sa.Column("occurrences", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("last_seen_at", Time))
    op.execute("UPDATE incidents SET last_seen_at = created_at")
    # Defaults in the database too, so that rows written by other tools (or tests)
    # without these columns stay valid; the app always sets both.
    with op.batch_alter_table("incidents") as batch:
        batch.alter_column("last_seen_at", existing_type=Time, nullable=False, server_default=NOW)
    op.create_index(
        "uq_incidents_open_dedup_key", "incidents", ["dedup_key"], unique=True,
        postgresql_where=sa.text(OPEN_DEDUP_KEY), sqlite_where=sa.text(OPEN_DEDUP_KEY),
    )  # fmt: skip
    op.create_table(
        "request_replays",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("caller", sa.String(80), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("answer", JsonDoc),
        sa.UniqueConstraint("caller", "request_id", name="uq_request_replays_caller"),
    )
    op.create_index("ix_request_replays_created_at", "request_replays", ["created_at"])


def downgrade() -> None:
    op.drop_table("request_replays")
    op.drop_index("uq_incidents_open_dedup_key", "incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("last_seen_at")
        batch.drop_column("occurrences")
        batch.drop_column("dedup_key")
