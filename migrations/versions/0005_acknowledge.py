"""acknowledgement: who took an incident on, and when

Both columns are nullable: existing incidents read as not acknowledged.

Revision ID: 0005_acknowledge
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_acknowledge"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("acknowledged_by", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("acknowledged_by")
        batch.drop_column("acknowledged_at")
