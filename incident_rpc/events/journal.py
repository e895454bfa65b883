"""The append-only event log: every committed change to an incident, in id order.

`record` notes an event in the session; `write_pending` writes the rows just before
the commit (dispatch/transaction.py), in the same transaction as the change, so an event
exists exactly when its change committed. Subscribers read the log with
`id > last_id ORDER BY id` and never look back, so no event may ever become
visible below an id that a reader has already passed:

- PostgreSQL: an event's id is its transaction's id (xid8) << 16, plus its number
  within the transaction. A transaction that is still running has an xid at or
  above the oldest running xid (`pg_snapshot_xmin`) of any snapshot taken while
  it runs, and every later transaction's xid is higher still. So a reader that
  takes only ids below (that xmin << 16) of its own snapshot (`read_after`) sees
  every event it will ever see below that point: nothing commits behind it. No
  lock orders the writers' commits, and none waits for another's fsync: ids
  are ordered by when a transaction began writing, and a reader holds back the
  events of a younger transaction until the older ones are done.
- SQLite: BEGIN IMMEDIATE (runtime/database.py) serializes whole write transactions, so
  the table's autoincrement ids already commit in order.

After the commit, `fanout.pass_on` hands the written events (`Chunk`s) to this
worker's subscribers and, through a NOTIFY, to every other listener.
See docs/design/event-ordering.md and docs/design/fan-out.md.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, literal_column, select
from sqlalchemy.orm import Session

from incident_rpc.errors import PayloadTooLarge
from incident_rpc.extensions import db
from incident_rpc.models import Event, Incident, utcnow
from incident_rpc.runtime import database, jsonio
from incident_rpc.schemas.fields import Timestamp
from incident_rpc.schemas.incidents import incident_out

CHANNEL = "incident_events"  # the PostgreSQL NOTIFY channel
ID_SHIFT = 16  # the bits of an id that number events within one transaction
PENDING = "incident_rpc.events_pending"  # session.info: events to write at commit
RECORDED = "incident_rpc.events_recorded"  # session.info: Chunks written, to pass on
_timestamp = Timestamp()
Item = tuple[int, str | None, str]  # (event id, the incident's creator, message)


class TooManyEvents(PayloadTooLarge):
    """More events in one transaction than ids can number (config.MAX_BULK stays below)."""

    message = f"more than {1 << ID_SHIFT} changes in one transaction; send fewer at once"


def record(
    kind: str,
    incident: Incident | dict[str, Any],
    actor: str,
    changes: dict[str, Any] | None = None,
) -> None:
    """Log `kind` ("added", "updated", "resolved", ...) for the incident as it is now.

    `incident` is a mapped Incident or a dict of its columns. The event is
    written when the transaction commits, and only if it commits.
    """
    if isinstance(incident, Incident):
        db.session.flush()  # the incident's id and version must be final
    incident_id = incident["id"] if isinstance(incident, dict) else incident.id
    _note(kind, incident_id, actor, incident_out.dump(incident), changes)


def record_other(
    kind: str, data: dict[str, Any], actor: str, changes: dict[str, Any] | None = None
) -> None:
    """Log a change to something other than an incident (a silence): `data` is its
    dumped output; its event has incident id 0, so no incident's history shows it."""
    _note(kind, 0, actor, data, changes)


def _note(
    kind: str, incident_id: int, actor: str, data: dict, changes: dict[str, Any] | None
) -> None:
    db.session.info.setdefault(PENDING, []).append(
        {"type": kind, "incident_id": incident_id, "actor": actor, "at": utcnow(),
         "data": data, "changes": changes or {}}
    )  # fmt: skip


# One statement for any number of events: the ids continue after this transaction's
# earlier events (a batch commits each command's events at its own savepoint) and stop
# short of the next transaction's. It also answers what a listener needs to pass the
# events on without reading them back (see `Chunk`): the last id below them, and
# whether that id is final, i.e. no older transaction is still running. Prepared once
# per connection: planning it took twice as long as running it.
_WRITE_EVENTS = "incident_rpc_write_events"
_WRITE_EVENTS_SQL = f"""
WITH t AS (SELECT pg_current_xact_id()::text::bigint << {ID_SHIFT} AS low,
                  pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {ID_SHIFT} AS horizon),
first AS (SELECT coalesce(max(e.id) + 1, t.low) AS id, t.low + {1 << ID_SHIFT} AS next_low
          FROM t LEFT JOIN events AS e ON e.id >= t.low AND e.id < t.low + {1 << ID_SHIFT}
          GROUP BY t.low),
inserted AS (
    INSERT INTO events (id, type, incident_id, actor, at, data, changes)
    SELECT first.id + r.n - 1, r.type, r.incident_id, r.actor, r.at, r.data, r.changes
    FROM first,
         ROWS FROM (jsonb_to_recordset($1) AS (type text, incident_id bigint,
                    actor text, at timestamptz, data jsonb, changes jsonb))
         WITH ORDINALITY AS r(type, incident_id, actor, at, data, changes, n)
    WHERE first.id + r.n - 1 < first.next_low
    RETURNING id)
SELECT (SELECT count(*) FROM inserted) AS written, first.id AS first_id,
       (SELECT coalesce(max(id), 0) FROM events WHERE id < first.id) AS previous,
       (SELECT horizon = low FROM t) AS final
FROM first
"""


@dataclass(frozen=True)
class Chunk:
    """One commit's events, ready to pass on: a listener whose last id is `previous`
    may publish them without reading the log, when `final` says that nothing can
    still commit below them (no older transaction was running when they were
    written). Anything else, and the listener reads the log. `events`: each event's
    type and data as written here (for the metrics, which need not parse `items`
    again); empty in a Chunk heard from another process."""

    previous: int
    final: bool
    items: list[Item]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def write_pending(session: Session) -> list[dict[str, Any]]:
    """Write the command's recorded events, in order, just before its commit
    (dispatch/transaction.py); their Chunk waits in `session.info[RECORDED]` for
    `take_recorded` after the commit. Answers the events written, ids set (the
    notification outbox's rows for them go into the same transaction)."""
    pending = session.info.pop(PENDING, None)
    if not pending:
        return []
    session.flush()  # the changes first, as the events describe them
    for row in pending:
        row["at"] = _timestamp.serialize("at", row)
    if session.get_bind().dialect.name == "postgresql":
        document = jsonio.encode(pending).decode()
        written, first_id, previous, final = database.execute_prepared(
            session.connection(), _WRITE_EVENTS, _WRITE_EVENTS_SQL, document
        ).one()
        if written < len(pending):
            raise TooManyEvents()  # the commit fails; what was written is rolled back
    else:  # BEGIN IMMEDIATE: no other writer until we commit, so max + 1 is ours
        previous = session.execute(select(func.coalesce(func.max(Event.id), 0))).scalar_one()
        first_id, final = previous + 1, True
        rows = [{**row, "id": first_id + n, "at": datetime.fromisoformat(row["at"])}
                for n, row in enumerate(pending)]  # fmt: skip
        session.execute(insert(Event), rows)
    for n, row in enumerate(pending):
        row["id"] = first_id + n
    items = [
        (row["id"], row["data"].get("created_by"),
         _wire(row["type"], row["id"], row["at"], row["actor"], row["data"]))
        for row in pending
    ]  # fmt: skip
    events = [(row["type"], row["data"]) for row in pending]
    session.info.setdefault(RECORDED, []).append(Chunk(previous, final, items, events))
    return pending


def forget_pending(session: Session) -> None:
    """After a rollback: what was recorded is undone."""
    session.info.pop(PENDING, None)
    if not in_outer_transaction(session):  # a batch keeps what its savepoints wrote
        session.info.pop(RECORDED, None)


def take_recorded(session: Session) -> list[Chunk]:
    """The Chunks written since the last call: committed now, to be passed on."""
    return session.info.pop(RECORDED, None) or []


def in_outer_transaction(session: Session) -> bool:
    """A session joined to a batch's transaction (dispatch/transaction.shared): its commits and
    rollbacks are only a savepoint's."""
    bind = session.get_bind()
    return isinstance(bind, Connection) and bind.in_transaction()


def message(row: Any) -> str:
    """The wire form of an event read from the log (contract section 6)."""
    return _wire(row.type, row.id, _timestamp.serialize("at", row), row.actor, row.data)


def _wire(kind: str, event_id: int, at: str, actor: str, data: Any) -> str:
    event = {"type": kind, "id": event_id, "at": at, "actor": actor, "data": data}
    return jsonio.encode(event).decode()


_COLUMNS = (Event.id, Event.type, Event.at, Event.actor, Event.data)
# The first id that a transaction still running (or yet to begin) may write: every
# id below it is final. In the same statement as the read, so of the same snapshot.
_HORIZON = literal_column(f"pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {ID_SHIFT}")


def read_after(connection: Connection, last_id: int, limit: int) -> tuple[list[Item], bool]:
    """Up to `limit` final events after `last_id`, oldest first, and whether any
    later event is held back because an older transaction is still running.

    The creator comes along so that each subscriber can apply access.may_read.
    """
    query = select(*_COLUMNS).where(Event.id > last_id).order_by(Event.id).limit(limit)
    if connection.dialect.name != "postgresql":
        rows = connection.execute(query).all()
        return [_item(row) for row in rows], False
    rows = connection.execute(query.add_columns(_HORIZON.label("horizon"))).all()
    final = [row for row in rows if row.id < row.horizon]
    return [_item(row) for row in final], len(final) < len(rows)


def _item(row: Any) -> Item:
    return row.id, (row.data or {}).get("created_by"), message(row)


def last_event_id(connection: Connection) -> int:
    """The last final event's id: a subscriber starting here misses nothing later."""
    query = select(func.coalesce(func.max(Event.id), 0))
    if connection.dialect.name == "postgresql":
        query = query.where(Event.id < _HORIZON)
    return connection.execute(query).scalar_one()
