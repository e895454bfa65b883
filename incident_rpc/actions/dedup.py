"""Repeated alerts: one open incident per `dedup_key`, however many senders repeat it.

A partial unique index (models.OPEN_DEDUP_KEY) allows one incident per key among
those not completed or fake. `add_or_repeat` is a single INSERT ... ON CONFLICT
DO UPDATE against that index, so the database decides atomically between
concurrent senders: exactly one of them inserts, every other one bumps
`occurrences` and `last_seen_at` of the row that won. There is no read first,
so there is no check-then-insert race to lose.
"""

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite

from incident_rpc.events import journal
from incident_rpc.extensions import db
from incident_rpc.models import OPEN_DEDUP_KEY, Incident, utcnow
from incident_rpc.telemetry import metrics


def add_or_repeat(incident: Incident, actor: str) -> tuple[Incident, bool]:
    """Insert the (transient) incident, or count a repeat of the open one with its key.

    Answers the stored incident and whether it was a repeat; records its event.
    """
    now = utcnow()
    values = {
        column.key: getattr(incident, column.key)
        for column in Incident.__table__.columns
        if getattr(incident, column.key, None) is not None
    }  # unset attributes are left out, so that the columns' defaults apply
    values.update(occurrences=1, last_seen_at=now, version=1)
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(Incident)
        .values(values)
        .on_conflict_do_update(
            index_elements=[Incident.dedup_key],
            index_where=text(OPEN_DEDUP_KEY),
            set_={
                "occurrences": Incident.occurrences + 1,
                "last_seen_at": now,
                "updated_at": now,
                "version": Incident.version + 1,
            },
        )
        .returning(Incident.id, Incident.occurrences)
    )
    incident_id, occurrences = db.session.execute(statement).one()
    stored = db.session.get(Incident, incident_id, populate_existing=True)
    assert stored is not None  # the statement above just wrote it
    if occurrences == 1:
        journal.record("added", stored, actor)
        return stored, False
    journal.record("updated", stored, actor, {"occurrences": [occurrences - 1, occurrences]})
    metrics.dedup_hit()
    return stored, True
