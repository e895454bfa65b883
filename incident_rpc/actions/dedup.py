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
"""

from functools import cache
from typing import Any

from sqlalchemy import Insert, text
from sqlalchemy.dialects import postgresql, sqlite

from incident_rpc.events import journal
from incident_rpc.extensions import db
from incident_rpc.models import OPEN_DEDUP_KEY, Incident
from incident_rpc.telemetry import metrics

INCIDENTS = Incident.__table__
Row = dict[str, Any]


@cache
def _upsert(dialect_name: str) -> Insert:
    """Built once per dialect, bound per call (building it cost more than running it)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(INCIDENTS)
    return insert.on_conflict_do_update(
        index_elements=[INCIDENTS.c.dedup_key],
        index_where=text(OPEN_DEDUP_KEY),
        set_={
            "occurrences": INCIDENTS.c.occurrences + 1,
            "last_seen_at": insert.excluded.last_seen_at,
            "updated_at": insert.excluded.updated_at,
            "version": INCIDENTS.c.version + 1,
        },
    ).returning(*INCIDENTS.c)


def add_or_repeat(news: list[tuple[Row, str]]) -> list[tuple[Row, bool]]:
    """Insert each new incident (every column but its id, and its actor), or count a
    repeat of the open one with its key. Answers each stored row and whether it was
    a repeat, in the order given; records their events in that order."""
    statement = _upsert(db.engine.dialect.name)
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
        result = db.session.execute(statement, [news[n][0] for n in now])
        by_key = {row["dedup_key"]: row for row in (r._asdict() for r in result)}
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
