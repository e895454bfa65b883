"""The append-only event log: every committed change to an incident, in commit order.

`record` notes an event in the session; the rows are written by the session's
`before_commit`, in the same transaction as the change, so an event exists
exactly when its change committed. Subscribers read the log with
`id > last_id ORDER BY id` and never look back, so ids must become visible in
id order:

- PostgreSQL: at commit, after every other write of the transaction is flushed,
  a transaction-scoped advisory lock is taken, the event rows draw their ids
  from the sequence, and the lock is held until the commit is done. Drawing ids
  and committing them is one critical section, so ids commit in the order they
  are drawn: a reader that sees id N already sees every committed id below N.
  `pg_notify` in the same transaction rings the listeners only if it commits.
- SQLite: BEGIN IMMEDIATE (database.py) already serializes whole write
  transactions; the commit rings an in-process doorbell (see fanout.py).

Writing at commit rather than in `record` keeps the lock out of the handler's
way: it is taken once per transaction, after the row locks the handler needed
(no deadlock with a writer that holds one of those rows and waits for the lock),
and a batch of 1,000 creates costs one INSERT and one lock, not 1,000.

A transaction that draws ids and then fails to commit leaves a hole in the ids;
holes are harmless, since nobody waits for a missing id. See the README, "Live change events".
"""

import json
from typing import Any

from sqlalchemy import Connection, event, func, select, text
from sqlalchemy.orm import Session

from .extensions import db
from .fields import Timestamp
from .models import Event, Incident, utcnow
from .schemas import incident_out

CHANNEL = "incident_events"  # the PostgreSQL NOTIFY channel
ORDER_LOCK_KEY = 0x1C1DE48  # advisory lock: any constant shared by every instance
PENDING = "incident_rpc.events_pending"  # session.info: events to write at commit
RECORDED = "incident_rpc.events_recorded"  # session.info: for local delivery (fanout.py)
_timestamp = Timestamp()
Item = tuple[int, str | None, str]  # (event id, the incident's creator, message)


def record(kind: str, incident: Incident, actor: str, changes: dict[str, Any] | None = None):
    """Log `kind` ("added", "updated", "resolved", ...) for the incident as it is now.

    The row is written when the transaction commits, and only if it commits.
    """
    db.session.flush()  # the incident's id and version must be final
    pending = db.session.info.setdefault(PENDING, [])
    pending.append(
        Event(
            type=kind,
            incident_id=incident.id,
            actor=actor,
            at=utcnow(),
            data=incident_out.dump(incident),
            changes=changes or {},
        )
    )


def write_pending(session: Session) -> list[Event]:
    """The transaction's events, in order, under the ordering lock (at before_commit).

    Leaves `session.info[RECORDED]` = (id of the event before these, their items),
    for this process's own subscribers once the commit is done (fanout.py).
    """
    pending = session.info.pop(PENDING, None)
    if not pending:
        return []
    session.flush()  # every other write first: no row lock is taken under ours
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(select(func.pg_advisory_xact_lock(ORDER_LOCK_KEY)))
    session.add_all(pending)
    session.flush()  # draws the ids now, under the lock, in the order recorded
    items = [(e.id, e.data.get("created_by"), message(e)) for e in pending]
    if postgres:
        values = {"channel": CHANNEL, "first": pending[0].id, "body": _body(items)}
        previous = session.execute(_NOTIFY, values).scalar_one()
    else:
        before = select(func.coalesce(func.max(Event.id), 0)).where(Event.id < pending[0].id)
        previous = session.execute(before).scalar_one()
    session.info[RECORDED] = (previous, items)
    return pending


# The notification is "<id of the event before these> <body>": a listener whose last id
# is that first number may take the events from the body; any other listener reads the
# table. Under the ordering lock, that previous id is final.
_NOTIFY = text(
    "SELECT previous, pg_notify(:channel, previous::text || ' ' || :body)"
    " FROM (SELECT coalesce(max(id), 0) AS previous FROM events WHERE id < :first) AS before"
)
_NOTIFY_LIMIT = 7900  # PostgreSQL refuses payloads of 8000 bytes and more


def _body(items: list[Item]) -> str:
    body = json.dumps({"last": items[-1][0], "events": items}, ensure_ascii=False)
    if len(body.encode()) < _NOTIFY_LIMIT:
        return body
    return json.dumps({"last": items[-1][0]})  # too big to carry: read them from the table


def parse_notification(payload: str) -> tuple[int, int, list[Item]]:
    """(previous id, last id, the events if carried) of a notification; ValueError if odd."""
    previous, _, body = payload.partition(" ")
    notice = json.loads(body)
    if not isinstance(notice, dict):
        raise ValueError("not an events notification")
    items = [(int(item[0]), item[1], str(item[2])) for item in notice.get("events", [])]
    return int(previous), int(notice["last"]), items


def _forget_pending(session: Session) -> None:
    session.info.pop(PENDING, None)
    session.info.pop(RECORDED, None)


# On the Session class: also the sessions that a batch joins to its transaction.
event.listen(Session, "before_commit", write_pending)
event.listen(Session, "after_rollback", _forget_pending)


def message(row: Any) -> str:
    """The wire form of an event (contract section 6), from a row or an Event."""
    return json.dumps(
        {
            "type": row.type,
            "id": row.id,
            "at": _timestamp.serialize("at", row),
            "actor": row.actor,
            "data": row.data,
        },
        ensure_ascii=False,
    )


_COLUMNS = (Event.id, Event.type, Event.at, Event.actor, Event.data)


def read_after(connection: Connection, last_id: int, limit: int) -> list[Item]:
    """Up to `limit` events after `last_id`, oldest first.

    The creator comes along so that each subscriber can apply access.may_read.
    """
    rows = connection.execute(
        select(*_COLUMNS).where(Event.id > last_id).order_by(Event.id).limit(limit)
    )
    return [(row.id, (row.data or {}).get("created_by"), message(row)) for row in rows]


def last_event_id(connection: Connection) -> int:
    return connection.execute(select(func.coalesce(func.max(Event.id), 0))).scalar_one()
