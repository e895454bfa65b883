"""stats indexes: the open incidents, and resolution times

`stats` (and the open-incidents gauge of /metrics) count the incidents open now by
severity, acknowledgement and age: a partial index holds only those, so the count
reads as many entries as there are open incidents, not the whole table. The
resolved-per-day figures read an index on resolved_at, which holds only resolved
incidents. On PostgreSQL, ix_incidents_created (the window's range) gets the columns
`stats` reads of each incident as INCLUDE columns: the counts and durations of a window
then come from an index-only scan instead of a visit to each row, at the price of a
wider entry per insert into an index that every insert writes anyway.

Revision ID: 0008_stats_indexes
Revises: 0007_silences
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_stats_indexes"
down_revision = "0007_silences"
branch_labels = None
depends_on = None

OPEN = "status NOT IN ('completed', 'fake')"  # models.OPEN_INCIDENT too
RESOLVED = "resolved_at IS NOT NULL"
INCLUDED = ["status", "severity", "source", "assignee", "acknowledged_at", "resolved_at"]


def upgrade() -> None:
    where = {"postgresql_where": sa.text(OPEN), "sqlite_where": sa.text(OPEN)}
    columns = ["severity", "status", "created_at", "acknowledged_at"]
    op.create_index("ix_incidents_open", "incidents", columns, **where)
    where = {"postgresql_where": sa.text(RESOLVED), "sqlite_where": sa.text(RESOLVED)}
    op.create_index("ix_incidents_resolved", "incidents", ["resolved_at"], **where)
    if op.get_bind().dialect.name == "postgresql":
        _created_index(postgresql_include=INCLUDED)


def _created_index(**include: list[str]) -> None:
    op.drop_index("ix_incidents_created", table_name="incidents")
    op.create_index("ix_incidents_created", "incidents", ["created_at", "id"], **include)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _created_index()
    op.drop_index("ix_incidents_resolved", table_name="incidents")
    op.drop_index("ix_incidents_open", table_name="incidents")
