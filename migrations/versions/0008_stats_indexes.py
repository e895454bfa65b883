"""stats indexes: the open incidents, and resolution times

`stats` (and the open-incidents gauge of /metrics) count the incidents open now by
severity, acknowledgement and age: a partial index holds only those, so the count
reads as many entries as there are open incidents, not the whole table. The
resolved-per-day figures read an index on resolved_at, which holds only resolved
incidents. The window's own counts use ix_incidents_created.

Revision ID: 0008_stats_indexes
Revises: 0006_unique_usernames
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_stats_indexes"
down_revision = "0006_unique_usernames"
branch_labels = None
depends_on = None

OPEN = "status NOT IN ('completed', 'fake')"  # models.OPEN_INCIDENT too
RESOLVED = "resolved_at IS NOT NULL"


def upgrade() -> None:
    where = {"postgresql_where": sa.text(OPEN), "sqlite_where": sa.text(OPEN)}
    columns = ["severity", "status", "created_at", "acknowledged_at"]
    op.create_index("ix_incidents_open", "incidents", columns, **where)
    where = {"postgresql_where": sa.text(RESOLVED), "sqlite_where": sa.text(RESOLVED)}
    op.create_index("ix_incidents_resolved", "incidents", ["resolved_at"], **where)


def downgrade() -> None:
    op.drop_index("ix_incidents_resolved", table_name="incidents")
    op.drop_index("ix_incidents_open", table_name="incidents")
