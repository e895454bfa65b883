"""silences: maintenance windows, and the window an incident arrived in

`silences` holds each window's matchers and times; `incidents.silenced_by` names the
window that matched an incident when it arrived (null: none, as for every existing row).
An index on `ends_at` serves the one query that matching at create makes.

Revision ID: 0007_silences
Revises: 0006_unique_usernames
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_silences"
down_revision = "0006_unique_usernames"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("matchers", DOCUMENT, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("silenced_by", sa.BigInteger()))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("silenced_by")
    op.drop_index("ix_silences_ends_at", table_name="silences")
    op.drop_table("silences")
