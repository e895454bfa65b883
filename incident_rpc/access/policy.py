"""Who may read which incident: the one rule that every reading path applies.

Admins and agents read every incident; a reporter (a person, or an API key with
that role) reads only the incidents it created, and so does a `monitor` key: the
actions it may do beyond a reporter's (`acknowledge`, `resolve`) find their
incident through this rule too, so it acts only on the incidents it raised.
Whatever a caller may not read is answered as if it did not exist (404), so ids
reveal nothing. The actions
(`find`, `get_all`, comments, history), the legacy list and the live channel all
go through the functions below, and they all derive from `confined_to`.
"""

from sqlalchemy import Select

from incident_rpc.access.auth import Caller
from incident_rpc.models import Incident, Role


def confined_to(caller: Caller) -> str | None:
    """The creator whose incidents alone this caller may read; None: every incident."""
    return None if caller.has_role(Role.agent) else caller.username


def may_read(caller: Caller, created_by: str) -> bool:
    """For one incident (or one event's `data`) already in hand."""
    owner = confined_to(caller)
    return owner is None or owner == created_by


def readable(query: Select, caller: Caller) -> Select:
    """`query` (over incidents) narrowed to what the caller may read, in SQL."""
    owner = confined_to(caller)
    # The table's column: it serves ORM and Core statements alike (a mapped attribute
    # would pull a Core statement through the ORM's layers).
    return query if owner is None else query.where(Incident.__table__.c.created_by == owner)
