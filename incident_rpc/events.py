"""The append-only event log: every committed change to an incident, in commit order.

`record` adds the event row inside the caller's transaction, so an event exists
exactly when its change committed. Subscribers read the log with `id > last_id
ORDER BY id` and never look back, so ids must become visible in id order:

- PostgreSQL: `record` takes a transaction-scoped advisory lock just before the
  event row draws its id from the sequence, and holds it until commit. Drawing an
  id and committing it are one critical section, so ids commit in the order they
  are drawn; a reader that sees id N already sees every committed id below N.
  `pg_notify` in the same transaction rings the listeners only if it commits.
- SQLite: BEGIN IMMEDIATE (database.py) already serializes whole write
  transactions; the commit rings an in-process doorbell (see fanout.py).

A transaction that draws an id and then rolls back leaves a hole in the ids;
holes are harmless, since nobody waits for a missing id. See docs/events.md.
"""

import json
from typing import Any

from sqlalchemy import Connection, func, select

from .extensions import db
from .fields import Timestamp
from .models import Event, Incident, utcnow
from .schemas import incident_out

CHANNEL = "incident_events"  # the PostgreSQL NOTIFY channel
ORDER_LOCK_KEY = 0x1C1DE48  # advisory lock: any constant shared by every instance
RECORDED = "incident_rpc.events_recorded"  # session.info flag read by the doorbell
_timestamp = Timestamp()


def record(kind: str, incident: Incident, actor: str, changes: dict[str, Any] | None = None):
    """Log `kind` ("added", "updated", "resolved", ...) for the incident as it is now.

    Must be the caller's last write before commit: on PostgreSQL the ordering
    lock is held from here to the end of the transaction.
    """
    session = db.session
    session.flush()  # the incident's id and version must be final; row locks taken first
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(select(func.pg_advisory_xact_lock(ORDER_LOCK_KEY)))
    event = Event(
        type=kind,
        incident_id=incident.id,
        actor=actor,
        at=utcnow(),
        data=incident_out.dump(incident),
        changes=changes or {},
    )
    session.add(event)
    session.flush()  # draws the id now, under the lock
    if postgres:
        session.execute(select(func.pg_notify(CHANNEL, str(event.id))))
    session.info[RECORDED] = True
    return event


def message(event: Any) -> str:
    """The wire form of an event (contract section 6), from a row or an Event."""
    return json.dumps(
        {
            "type": event.type,
            "id": event.id,
            "at": _timestamp.serialize("at", event),
            "actor": event.actor,
            "data": event.data,
        },
        ensure_ascii=False,
    )


_COLUMNS = (Event.id, Event.type, Event.at, Event.actor, Event.data)


def read_after(connection: Connection, last_id: int, limit: int) -> list[tuple[int, str]]:
    """Up to `limit` events after `last_id`, oldest first, as (id, message) pairs."""
    rows = connection.execute(
        select(*_COLUMNS).where(Event.id > last_id).order_by(Event.id).limit(limit)
    )
    return [(row.id, message(row)) for row in rows]


def last_event_id(connection: Connection) -> int:
    return connection.execute(select(func.coalesce(func.max(Event.id), 0))).scalar_one()
