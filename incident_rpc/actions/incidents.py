"""Incident actions: create, get, get_all, update, resolve, assign.

Handlers only: they receive validated parameters and the caller, change rows,
record the event in the same transaction and return the object to dump.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import Select, literal, select, tuple_

from .. import access, dedup, events, legacy
from ..auth import Caller
from ..errors import Conflict, InvalidParams, NotFound
from ..extensions import db
from ..models import Incident, Role, Status, User, UTCDateTime, utcnow
from ..rpc import Context, Reply, action
from ..schemas import (
    CreateParams,
    IdParams,
    ListParams,
    ResolveParams,
    UpdateParams,
    incident_out,
    incident_page_out,
)
from ..team_schemas import AssignParams

NEWEST_FIRST = (Incident.created_at.desc(), Incident.id.desc())


def find(incident_id: int, caller: Caller) -> Incident:
    """The incident if this caller may read it; otherwise 404, exactly as for no incident."""
    incident = db.session.get(Incident, incident_id)
    if incident is None or not access.may_read(caller, incident.created_by):
        raise NotFound(
            f"no incident with id {incident_id}", legacy_message="Incident have not found"
        )
    return incident


def filtered(params: dict[str, Any], caller: Caller) -> Select[tuple[Incident]]:
    query = access.readable(select(Incident), caller)
    for name in ("status", "source", "severity", "assignee", "created_by"):
        if name in params:  # assignee None: "IS NULL", the unassigned ones
            query = query.where(getattr(Incident, name) == params[name])
    return query


def new_incident(ctx: Context, params: dict[str, Any]) -> Incident:
    now = utcnow()
    params.setdefault("created_at", now)  # from `date`, when given
    return Incident(status=Status.new, created_by=ctx.actor, updated_at=now, **params)


def create_many(calls: list[tuple[Context, dict[str, Any]]]) -> list[Incident | Reply]:
    """Creates that a batch sends one after another: their incidents go in one INSERT."""
    if any("dedup_key" in params for _, params in calls):
        return [create(ctx, params) for ctx, params in calls]
    incidents = [new_incident(ctx, params) for ctx, params in calls]
    db.session.add_all(incidents)
    db.session.flush()
    for (ctx, _), incident in zip(calls, incidents, strict=True):
        events.record("added", incident, ctx.actor)
    return list(incidents)


@action(
    "create", params=CreateParams(), role="reporter", output=incident_out, status=201,
    legacy_params=legacy.CreateParams(), legacy_output=legacy.incident_out, changes=True,
    many=create_many,
)  # fmt: skip
def create(ctx: Context, params: dict[str, Any]) -> Incident | Reply:
    """Open a new incident with status `new`; with a `dedup_key`, maybe repeat an open one."""
    incident = new_incident(ctx, params)
    if incident.dedup_key:
        stored, repeated = dedup.add_or_repeat(incident, ctx.actor)
        if repeated and not access.may_read(ctx.caller, stored.created_by):
            raise Conflict("this dedup_key belongs to an open incident you cannot read")
        return Reply(stored, 200) if repeated else stored
    db.session.add(incident)
    events.record("added", incident, ctx.actor)
    return incident


@action("get", params=IdParams(), role="reporter", output=incident_out)
def get(ctx: Context, params: dict[str, Any]) -> Incident:
    return find(params["id"], ctx.caller)


@action(
    "get_all", params=ListParams(), role="reporter", output=incident_page_out,
    legacy_params=legacy.ListParams(), legacy_handler=legacy.stream_incidents,
)  # fmt: skip
def get_all(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """One page, newest first; the cursor is the (created_at, id) of the page's last row."""
    query = filtered(params, ctx.caller).order_by(*NEWEST_FIRST).limit(params["limit"] + 1)
    if "cursor" in params:
        created_at, last_id = params["cursor"]
        after = tuple_(literal(created_at, UTCDateTime), literal(last_id))
        query = query.where(tuple_(Incident.created_at, Incident.id) < after)
    rows = list(db.session.scalars(query))
    page, more = rows[: params["limit"]], len(rows) > params["limit"]
    next_cursor = (page[-1].created_at, page[-1].id) if more else None
    return {"incidents": page, "next_cursor": next_cursor}


EDITABLE = ("title", "description", "status", "severity", "source", "details", "assignee")


def apply_changes(
    incident: Incident, params: dict[str, Any], actor: str, now: datetime
) -> dict[str, list[Any]]:
    """Set the editable fields that differ and record an `updated` event; the changes."""
    changes = {
        name: [getattr(incident, name), params[name]]
        for name in EDITABLE
        if name in params and getattr(incident, name) != params[name]
    }
    if not changes:
        return changes
    for name, (_, new) in changes.items():
        setattr(incident, name, new)
    incident.updated_at = now
    if "status" in changes:
        completed = incident.status == Status.completed
        incident.resolved_at = now if completed else None
        incident.resolved_by = actor if completed else None
    events.record("updated", incident, actor, changes)
    return changes


@action(
    "update", params=UpdateParams(), role="agent", output=incident_out,
    legacy_params=legacy.UpdateParams(), legacy_output=legacy.incident_out, changes=True,
)  # fmt: skip
def update(ctx: Context, params: dict[str, Any]) -> Incident:
    """Change the given fields; with `version`, only if nobody changed it since."""
    incident = find(params["id"], ctx.caller)
    if "assignee" in params:
        check_assignee(params["assignee"])
    if "version" in params and params["version"] != incident.version:
        raise Conflict(
            f"incident {incident.id} is at version {incident.version}, not {params['version']}"
        )
    apply_changes(incident, params, ctx.actor, utcnow())
    return incident


@action("resolve", params=ResolveParams(), role="agent", output=incident_out, changes=True)
def resolve(ctx: Context, params: dict[str, Any]) -> Incident:
    """Move an incident to `completed`, recording when, by whom and why."""
    incident = find(params["id"], ctx.caller)
    if incident.status == Status.completed:
        raise Conflict(f"incident {incident.id} is already resolved")
    changes = {"status": [incident.status, Status.completed.value]}
    incident.status = Status.completed
    incident.resolved_at = incident.updated_at = utcnow()
    incident.resolved_by = ctx.actor
    incident.resolution = params.get("resolution")
    events.record("resolved", incident, ctx.actor, changes)
    return incident


def check_assignee(username: str | None) -> None:
    """An assignee is an active agent (or admin), or None for nobody."""
    if username is None:
        return
    found = db.session.scalar(
        select(User.id).where(
            User.username == username,
            User.role.in_([Role.agent, Role.admin]),
            User.disabled.is_(False),
        )
    )
    if found is None:
        raise InvalidParams({"assignee": ["No active agent with that username."]})


@action("assign", params=AssignParams(), role="agent", output=incident_out)
def assign(ctx: Context, params: dict[str, Any]) -> Incident:
    """Give an incident to an agent, or to nobody with null."""
    incident = find(params["id"], ctx.caller)
    check_assignee(params["assignee"])
    if incident.assignee == params["assignee"]:
        return incident
    changes = {"assignee": [incident.assignee, params["assignee"]]}
    incident.assignee = params["assignee"]
    incident.updated_at = utcnow()
    events.record("assigned", incident, ctx.actor, changes)
    return incident
