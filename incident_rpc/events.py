"""The append-only event log: every committed change to an incident, in order.

`record` adds the event row inside the caller's transaction, so an event exists
exactly when its change committed.
"""

from typing import Any

from .extensions import db
from .models import Event, Incident
from .schemas import incident_out


def record(kind: str, incident: Incident, actor: str, changes: dict[str, Any] | None = None):
    """Log `kind` ("added", "updated", "resolved", ...) for the incident as it is now."""
    db.session.flush()  # the incident's id and version must be final
    event = Event(
        type=kind,
        incident_id=incident.id,
        actor=actor,
        data=incident_out.dump(incident),
        changes=changes or {},
    )
    db.session.add(event)
    return event
