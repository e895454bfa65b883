"""event ids from the writing transaction's id (PostgreSQL): no lock orders commits

On PostgreSQL an event's id becomes (the transaction's xid8 << 16) + its number
within the transaction, written by the app (events.py); the table's sequence
default goes. SQLite keeps its autoincrement ids (it serializes writers).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Must stay equal to events.ID_SHIFT (a migration never imports the app).
ID_SHIFT = 16


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Ids already in the log came from the sequence, one per event; every event's
    # transaction took an xid, so they are far below the next xid << 16. Checked anyway:
    # a new id below an old one would be skipped by every subscriber.
    op.execute(
        f"""DO $$ BEGIN
        IF (SELECT coalesce(max(id), 0) FROM events)
           >= pg_current_xact_id()::text::bigint << {ID_SHIFT} THEN
            RAISE EXCEPTION 'events.id already exceeds the transaction-based ids';
        END IF;
        END $$"""
    )
    op.execute("ALTER TABLE events ALTER COLUMN id DROP DEFAULT")
    op.execute("DROP SEQUENCE IF EXISTS events_id_seq")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE events_id_seq OWNED BY events.id")
    op.execute("SELECT setval('events_id_seq', (SELECT coalesce(max(id), 0) + 1 FROM events))")
    op.execute("ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq')")
