"""Repeated alerts: one open incident per `dedup_key`, however many senders repeat it.

A partial unique index (models.OPEN_DEDUP_KEY) allows one incident per key among
those not completed or fake. `add_or_repeat` is INSERT ... ON CONFLICT DO UPDATE
against that index, so the database decides atomically between concurrent
senders: exactly one of them inserts, every other one bumps `occurrences` and
`last_seen_at` of the row that won. There is no read first, so there is no
check-then-insert race to lose, and the statement answers every column, so
nothing is read back either.

Creates that run together (a batch's run, a group commit) go in one statement
per round: a statement may not touch one row twice, so a key that comes again in
the same group waits for the next round, and rounds keep each key's order. Each
round takes its keys in sorted order, so that two groups sharing keys wait for
each other rather than deadlock.

On PostgreSQL a round is one prepared statement over a JSON document of its rows
(runtime/database.execute_prepared), as the events' INSERT is: SQLAlchemy's
multi-row INSERT ... RETURNING cost the worker more CPU than the database's work.
"""

from typing import Any

from sqlalchemy import Insert, String, text
from sqlalchemy.dialects import postgresql, sqlite

from incident_rpc.events import journal
from incident_rpc.extensions import db
from incident_rpc.models import OPEN_DEDUP_KEY, Incident
from incident_rpc.runtime import database, jsonio
from incident_rpc.telemetry import metrics

INCIDENTS = Incident.__table__
Row = dict[str, Any]
_REPEATED = {  # what a repeat changes of the open incident; `excluded` is the new row
    "occurrences": "incidents.occurrences + 1",
    "last_seen_at": "excluded.last_seen_at",
    "updated_at": "excluded.updated_at",
    "version": "incidents.version + 1",
}


def _sqlite_upsert() -> Insert:
    insert = sqlite.insert(INCIDENTS)
    return insert.on_conflict_do_update(
        index_elements=[INCIDENTS.c.dedup_key],
        index_where=text(OPEN_DEDUP_KEY),
        set_={name: text(expression) for name, expression in _REPEATED.items()},
    ).returning(*INCIDENTS.c)


_SQLITE_UPSERT = _sqlite_upsert()  # built once, bound per call (building cost more than running)


def _prepared_sql() -> str:
    """The upsert over `jsonb_to_recordset($1)`: the same statement as SQLite's. Strings
    are read as text, so that the INSERT, not the record, checks their lengths."""
    dialect = postgresql.dialect()
    columns = [c for c in INCIDENTS.c if not c.primary_key]
    names = ", ".join(c.name for c in columns)
    types = {c.name: "text" if isinstance(c.type, String) else c.type.compile(dialect=dialect)
             for c in columns}  # fmt: skip
    record = ", ".join(f"{name} {type_}" for name, type_ in types.items())
    updates = ", ".join(f"{name} = {expression}" for name, expression in _REPEATED.items())
    returned = ", ".join(c.name for c in INCIDENTS.c)
    return (
        f"INSERT INTO incidents ({names}) SELECT {names} FROM jsonb_to_recordset($1) AS "
        f"({record}) ON CONFLICT (dedup_key) WHERE {OPEN_DEDUP_KEY} DO UPDATE SET {updates} "
        f"RETURNING {returned}"
    )


_PREPARED = "incident_rpc_add_or_repeat"
_PREPARED_SQL = _prepared_sql()


def _upsert_round(rows: list[Row]) -> list[Row]:
    """One statement: each row inserted, or its open namesake counted again."""
    if db.engine.dialect.name != "postgresql":
        return [row._asdict() for row in db.session.execute(_SQLITE_UPSERT, rows)]
    document = jsonio.encode(rows).decode()
    result = database.execute_prepared(db.session.connection(), _PREPARED, _PREPARED_SQL, document)
    return [row._asdict() for row in result]


def add_or_repeat(news: list[tuple[Row, str]]) -> list[tuple[Row, bool]]:
    """Insert each new incident (every column but its id, and its actor), or count a
    repeat of the open one with its key. Answers each stored row and whether it was
    a repeat, in the order given; records their events in that order."""
    stored: list[Row | None] = [None] * len(news)
    waiting = list(range(len(news)))
    while waiting:
        keys: set[str] = set()
        now, later = [], []
        for n in waiting:
            key = news[n][0]["dedup_key"]
            (later if key in keys else now).append(n)
            keys.add(key)
        now.sort(key=lambda n: news[n][0]["dedup_key"])  # one lock order: no deadlocks
        by_key = {row["dedup_key"]: row for row in _upsert_round([news[n][0] for n in now])}
        for n in now:
            stored[n] = by_key[news[n][0]["dedup_key"]]
        waiting = later
    answers = []
    for (_, actor), row in zip(news, stored, strict=True):
        assert row is not None
        repeated = row["occurrences"] > 1
        if repeated:
            count = row["occurrences"]
            journal.record("updated", row, actor, {"occurrences": [count - 1, count]})
            metrics.dedup_hit()
        else:
            journal.record("added", row, actor)
        answers.append((row, repeated))
    return answers
