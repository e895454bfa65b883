"""Incident actions: create, get, get_all, update, acknowledge, resolve, assign.

Handlers only: they receive validated parameters and the caller, change rows,
record the event in the same transaction and return the object to dump.

`create` and `get_all`, the commands sent by the thousand, write and read the
table's columns (Core statements, rows) rather than mapped objects: the ORM's
unit of work and identity map would cost more CPU than everything else such a
command does (docs/benchmarks.md).
"""

from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, Text, bindparam, cast, func, insert, or_, select, tuple_

from incident_rpc.access import policy
from incident_rpc.access.auth import Caller
from incident_rpc.actions import dedup, silencing
from incident_rpc.actions.legacy_list import stream_incidents
from incident_rpc.dispatch.registry import Context, Form, Reply, action
from incident_rpc.errors import Conflict, IncidentNotFound, InvalidParams, NotFound
from incident_rpc.events import journal
from incident_rpc.extensions import db
from incident_rpc.models import BigId, Incident, Role, Status, User, UTCDateTime, utcnow
from incident_rpc.schemas import legacy
from incident_rpc.schemas.incidents import (
    AcknowledgeParams,
    CreateParams,
    IdParams,
    ListParams,
    ResolveParams,
    UpdateParams,
    incident_out,
    incident_page_out,
)
from incident_rpc.schemas.teams import AssignParams

INCIDENTS = Incident.__table__
# Table columns, not mapped attributes: a statement that names one goes through the
# ORM's compile and loading layers even when it selects plain columns.
NEWEST_FIRST = (INCIDENTS.c.created_at.desc(), INCIDENTS.c.id.desc())
Created = dict[str, Any] | Incident | Reply  # a new row's columns; a dedup_key's answer
# Inserts (one or many rows) answering every column, in the order of their parameters.
_INSERT = insert(INCIDENTS).returning(*INCIDENTS.c, sort_by_parameter_order=True)


def find(incident_id: int, caller: Caller, lock: bool = False) -> Incident:
    """The incident if this caller may read it; otherwise 404, exactly as for no incident.

    With `lock`, its row stays locked to the end of the transaction (FOR UPDATE; SQLite
    serializes writers anyway), read afresh even if the session already holds it."""
    incident = db.session.get(
        Incident, incident_id, with_for_update=lock or None, populate_existing=lock
    )
    if incident is None or not policy.may_read(caller, incident.created_by):
        raise IncidentNotFound(f"no incident with id {incident_id}")
    return incident


CLOSED = (Status.completed, Status.fake)  # as models.OPEN_DEDUP_KEY: no longer open


def find_target(params: dict[str, Any], caller: Caller, lock: bool = False) -> Incident:
    """The incident that `id` names, or the one open incident with `dedup_key`
    (schemas.TargetParams): 404 when there is none the caller may read."""
    if "id" in params:
        return find(params["id"], caller, lock)
    key = params["dedup_key"]
    query = select(Incident).where(Incident.dedup_key == key, Incident.status.not_in(CLOSED))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    incident = db.session.scalars(query).first()  # at most one: uq_incidents_open_dedup_key
    if incident is None or not policy.may_read(caller, incident.created_by):
        raise NotFound(f"no open incident with dedup_key {key[:64]!r}")
    return incident


# A page's columns; `details` as the JSON text it is stored as, to be passed on unparsed.
PAGE_COLUMNS = [cast(c, Text).label(c.name) if c.name == "details" else c for c in INCIDENTS.c]
FILTERS = ("status", "source", "severity", "assignee", "created_by")


@lru_cache(maxsize=256)
def page_query(
    filters: tuple[tuple[str, bool], ...],
    owner: bool,
    after: bool,
    acknowledged: bool | None,
    silenced: bool | None = None,
    text: bool = False,
) -> Select:
    """The SELECT of one shape of `get_all` (which filters, each `IS NULL` or equal to a
    value; confined to an owner, policy.confined_to; after a cursor; acknowledged or
    not, silenced or not, when asked: no value to bind, so each answer is a shape; text
    contained in the title or the description, ignoring case),
    built once and
    reused with its values bound per request: building, hashing and looking up a
    statement on every request cost more CPU than PostgreSQL spends running it."""
    query = select(*PAGE_COLUMNS)
    if owner:
        query = query.where(INCIDENTS.c.created_by == bindparam("owner"))
    for name, is_null in filters:  # assignee None: "IS NULL", the unassigned ones
        column = INCIDENTS.c[name]
        query = query.where(column.is_(None) if is_null else column == bindparam(name))
    if acknowledged is not None:
        column = INCIDENTS.c.acknowledged_at
        query = query.where(column.is_not(None) if acknowledged else column.is_(None))
    if silenced is not None:
        column = INCIDENTS.c.silenced_by
        query = query.where(column.is_not(None) if silenced else column.is_(None))
    if text:
        pattern = bindparam("text_pattern")
        query = query.where(
            or_(
                func.lower(INCIDENTS.c.title).like(pattern, escape="\\"),
                func.lower(INCIDENTS.c.description).like(pattern, escape="\\"),
            )
        )
    if after:
        position = (bindparam("after_at", type_=UTCDateTime), bindparam("after_id", type_=BigId))
        query = query.where(tuple_(INCIDENTS.c.created_at, INCIDENTS.c.id) < tuple_(*position))
    return query.order_by(*NEWEST_FIRST).limit(bindparam("limit"))


def like_escaped(text: str) -> str:
    """`text` for a LIKE pattern with ESCAPE '\\': its own % and _ match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# The times of a new row: set per row, all to the same moment.
_NOW = ("created_at", "updated_at", "last_seen_at")
# Every column of a new row but its id, with the value it takes when a create leaves it
# out. A multi-row INSERT (a batch's run of creates, a group commit) takes its columns
# from its first row and silently drops the keys that only later rows carry, so every
# row names every column. Read from the table, so that a column added later is not left
# out; a callable default other than the times would have to be set per row here.
_NEW_ROW = {
    column.name: column.default.arg if column.default is not None else None
    for column in INCIDENTS.c
    if not column.primary_key and column.name not in _NOW
}
assert all(not callable(value) for value in _NEW_ROW.values()), "set it per row in new_values"


def new_values(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every column of a new incident but its id: the command's values, else the defaults."""
    now = utcnow()
    values = {**_NEW_ROW, "created_by": ctx.actor, "created_at": now, "updated_at": now,
              "last_seen_at": now}  # fmt: skip
    values.update(params)  # `created_at` from `date`, when given
    values["silenced_by"] = silencing.silenced_by(values)
    return values


def create_many(calls: list[tuple[Context, dict[str, Any]]]) -> list[Created]:
    """Creates that a batch sends one after another: their incidents go in one INSERT
    (its rows all name the same columns: new_values)."""
    if all("dedup_key" in params for _, params in calls):
        return _add_or_repeat(calls)
    if any("dedup_key" in params for _, params in calls):
        return [create(ctx, params) for ctx, params in calls]
    values = [new_values(ctx, params) for ctx, params in calls]
    rows = [row._asdict() for row in db.session.execute(_INSERT, values)]
    for (ctx, _), row in zip(calls, rows, strict=True):
        journal.record("added", row, ctx.actor)
    return rows


def _add_or_repeat(calls: list[tuple[Context, dict[str, Any]]]) -> list[Created]:
    """Creates with a dedup_key: each a new incident, or a repeat (200) of the open one."""
    news = [(new_values(ctx, params), ctx.actor) for ctx, params in calls]
    answers: list[Created] = []
    for (ctx, _), (row, repeated) in zip(calls, dedup.add_or_repeat(news), strict=True):
        if repeated and not policy.may_read(ctx.caller, row["created_by"]):
            raise Conflict("this dedup_key belongs to an open incident you cannot read")
        answers.append(Reply(row, 200) if repeated else row)
    return answers


@action(
    "create", params=CreateParams(), role="reporter", output=incident_out, status=201,
    changes=True, many=create_many,
    legacy=Form(params=legacy.CreateParams(), output=legacy.incident_out),
)  # fmt: skip
def create(ctx: Context, params: dict[str, Any]) -> Created:
    """Open a new incident with status `new`; with a `dedup_key`, maybe repeat an open one."""
    if "dedup_key" in params:
        return _add_or_repeat([(ctx, params)])[0]
    row = db.session.execute(_INSERT, new_values(ctx, params)).one()._asdict()
    journal.record("added", row, ctx.actor)
    return row


@action("get", params=IdParams(), role="reporter", output=incident_out, reads_only=True)
def get(ctx: Context, params: dict[str, Any]) -> Incident:
    return find(params["id"], ctx.caller)


@action(
    "get_all", params=ListParams(), role="reporter", output=incident_page_out,
    reads_only=True, legacy=Form(params=legacy.ListParams(), handler=stream_incidents),
)  # fmt: skip
def get_all(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """One page, newest first; the cursor is the (created_at, id) of the page's last row."""
    filters = tuple((name, params[name] is None) for name in FILTERS if name in params)
    owner = policy.confined_to(ctx.caller)
    query = page_query(
        filters, owner is not None, "cursor" in params, params.get("acknowledged"),
        params.get("silenced"), "text" in params,
    )  # fmt: skip
    values = {name: params[name] for name, is_null in filters if not is_null}
    values.update(owner=owner, limit=params["limit"] + 1)
    if "text" in params:
        values["text_pattern"] = f"%{like_escaped(params['text'].lower())}%"
    if "cursor" in params:
        values["after_at"], values["after_id"] = params["cursor"]
    result = db.session.execute(query, values)
    names = tuple(result.keys())
    rows = [dict(zip(names, row, strict=True)) for row in result.all()]  # dicts dump fastest
    page, more = rows[: params["limit"]], len(rows) > params["limit"]
    next_cursor = (page[-1]["created_at"], page[-1]["id"]) if more else None
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
    acknowledged = None
    if "status" in changes:
        completed = incident.status == Status.completed
        incident.resolved_at = now if completed else None
        incident.resolved_by = actor if completed else None
        acknowledged = _acknowledgement_follows(incident, actor, now)
    journal.record("updated", incident, actor, changes)
    if acknowledged:  # every acknowledgement has its event, however it came about
        journal.record("acknowledged", incident, actor, acknowledged)
    return changes


def _acknowledgement_follows(incident: Incident, actor: str, now: datetime) -> dict | None:
    """After a status change: taking an unacknowledged incident to `processing`
    acknowledges it (its event's changes answered); back to `new`, it waits again."""
    if incident.status == Status.new:
        incident.acknowledged_at = incident.acknowledged_by = None
    elif incident.status == Status.processing and incident.acknowledged_at is None:
        incident.acknowledged_at, incident.acknowledged_by = now, actor
        return {"acknowledged_by": [None, actor]}
    return None


@action(
    "update", params=UpdateParams(), role="agent", output=incident_out,
    changes=True, legacy=Form(params=legacy.UpdateParams(), output=legacy.incident_out),
)  # fmt: skip
def update(ctx: Context, params: dict[str, Any]) -> Incident:
    """Change the given fields; with `version`, only if nobody changed it since."""
    incident = find_target(params, ctx.caller)
    if "assignee" in params:
        check_assignee(params["assignee"])
    if "version" in params and params["version"] != incident.version:
        raise Conflict(
            f"incident {incident.id} is at version {incident.version}, not {params['version']}"
        )
    apply_changes(incident, params, ctx.actor, utcnow())
    return incident


@action(
    "acknowledge", params=AcknowledgeParams(), role="agent", output=incident_out, changes=True,
    monitor=True,
)  # fmt: skip
def acknowledge(ctx: Context, params: dict[str, Any]) -> Incident:
    """Take an incident on: record who and when, and move it from `new` to `processing`."""
    incident = find_target(params, ctx.caller, lock=True)  # racing acknowledgers: one wins
    if incident.status in CLOSED:
        raise Conflict(f"incident {incident.id} is {incident.status}: nothing to acknowledge")
    if incident.acknowledged_at is not None:  # again: nothing changes, nothing is told
        return incident
    now = utcnow()
    changes: dict[str, list[Any]] = {"acknowledged_by": [None, ctx.actor]}
    if incident.status == Status.new:
        changes["status"] = [incident.status, Status.processing.value]
        incident.status = Status.processing
    incident.acknowledged_at = incident.updated_at = now
    incident.acknowledged_by = ctx.actor
    journal.record("acknowledged", incident, ctx.actor, changes)
    return incident


@action(
    "resolve", params=ResolveParams(), role="agent", output=incident_out, changes=True,
    monitor=True,
)  # fmt: skip
def resolve(ctx: Context, params: dict[str, Any]) -> Incident:
    """Move an incident to `completed`, recording when, by whom and why."""
    incident = find_target(params, ctx.caller)
    if incident.status == Status.completed:
        raise Conflict(f"incident {incident.id} is already resolved")
    changes = {"status": [incident.status, Status.completed.value]}
    incident.status = Status.completed
    incident.resolved_at = incident.updated_at = utcnow()
    incident.resolved_by = ctx.actor
    incident.resolution = params.get("resolution")
    journal.record("resolved", incident, ctx.actor, changes)
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
    journal.record("assigned", incident, ctx.actor, changes)
    return incident
