"""The transactional outbox: delivery rows written with the events they report.

The commit step (dispatch/transaction.py) calls `write_deliveries` with the events
just written (ids set), before the commit: one SELECT of the enabled channels and one
INSERT of the matching deliveries, in the same transaction as the change. On
PostgreSQL the INSERT is a prepared statement over one JSON document of the rows, as
the events' is (events/journal.py): through SQLAlchemy's executemany it cost more CPU
than the rows themselves. A command
that rolls back leaves no delivery; one that commits leaves them for the sender
(sender.py), which the commit step then wakes.

Silenced incidents: `silenced_by`, when the incident's wire form carries it, or the
column when the model has one (then one SELECT of the silenced ids among these).
"""

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from incident_rpc.models import Incident, utcnow
from incident_rpc.notify import rows, rules
from incident_rpc.notify.models import Channel, Delivery
from incident_rpc.runtime import database, jsonio

# Read at every commit that wrote events: the table's columns, built once (through the
# ORM's compile and result layers this SELECT cost more CPU than the events' INSERT).
_CHANNELS = Channel.__table__
_ENABLED = select(_CHANNELS.c.id, _CHANNELS.c.rule).where(_CHANNELS.c.enabled.is_(True))


def write_deliveries(session: Session, events: list[dict[str, Any]]) -> int:
    """Add a delivery for every (event, enabled channel) that the channel's rule takes;
    how many."""
    if not events:
        return 0
    channels = [(row.id, rules.with_defaults(row.rule)) for row in session.execute(_ENABLED)]
    if not channels:
        return 0
    silenced = _silenced(session, events, channels)
    now = utcnow()
    matched = [
        rows.delivery_row(channel_id, event["type"], event["incident_id"], event["data"],
                          now, event_id=event["id"], at=event["at"], actor=event["actor"])
        for event in events
        for channel_id, rule in channels
        if rules.matches(rule, event["type"], event["data"], event["incident_id"] in silenced)
    ]  # fmt: skip
    if matched:
        _insert(session, matched)
    return len(matched)


_INSERT = "incident_rpc_write_deliveries"
_INSERT_SQL = """
INSERT INTO notify_deliveries (channel_id, message_id, type, event_id, incident_id, severity,
                               payload, state, attempts, round_start, next_attempt_at, created_at)
SELECT * FROM jsonb_to_recordset($1) AS (channel_id bigint, message_id text, type text,
    event_id bigint, incident_id bigint, severity text, payload jsonb, state text,
    attempts integer, round_start integer, next_attempt_at timestamptz, created_at timestamptz)
"""


def _insert(session: Session, matched: list[dict[str, Any]]) -> None:
    if session.get_bind().dialect.name == "postgresql":
        document = jsonio.encode(matched).decode()
        database.execute_prepared(session.connection(), _INSERT, _INSERT_SQL, document)
    else:
        session.execute(insert(Delivery), matched)


def _silenced(
    session: Session, events: list[dict[str, Any]], channels: list[tuple[int, dict[str, Any]]]
) -> set[int]:
    if all(rule["include_silenced"] for _, rule in channels):
        return set()
    found = {e["incident_id"] for e in events if (e["data"] or {}).get("silenced_by")}
    column = getattr(Incident, "silenced_by", None)  # the silences' column, once merged
    unknown = {e["incident_id"] for e in events if "silenced_by" not in (e["data"] or {})}
    if column is not None and unknown:
        query = select(Incident.id).where(Incident.id.in_(unknown), column.is_not(None))
        found |= set(session.scalars(query))
    return found
