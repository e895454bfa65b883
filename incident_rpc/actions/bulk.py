"""Alert storms: resolve_many and update_many, on a list of ids or on a filter.

Both lock their targets in id order (no deadlock between two storms), touch at
most MAX_BULK incidents, record one event per incident they change, and answer
how many changed and which were skipped and why. All of it is one transaction.
"""

from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, select

from incident_rpc.actions.incidents import apply_changes, check_assignee
from incident_rpc.dispatch.registry import Context, action
from incident_rpc.errors import BadRequest, InvalidParams
from incident_rpc.events import journal
from incident_rpc.extensions import db
from incident_rpc.models import Incident, Status, utcnow
from incident_rpc.schemas.incidents import ResolveManyParams, UpdateManyParams, bulk_out

Skipped = list[dict[str, Any]]


def _criteria(wanted: dict[str, Any]) -> list[ColumnElement[bool]]:
    criteria = [
        getattr(Incident, name).in_(wanted[name])
        for name in ("status", "source", "severity")
        if name in wanted
    ]
    if "dedup_key" in wanted:
        criteria.append(Incident.dedup_key == wanted["dedup_key"])
    if "dedup_key_prefix" in wanted:
        prefix = wanted["dedup_key_prefix"]
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        criteria.append(Incident.dedup_key.like(escaped + "%", escape="\\"))
    if "created_before" in wanted:
        criteria.append(Incident.created_at < wanted["created_before"])
    if "created_after" in wanted:
        criteria.append(Incident.created_at > wanted["created_after"])
    return criteria


def targets(params: dict[str, Any]) -> tuple[list[Incident], Skipped]:
    """The incidents to act on, locked, in id order; and the ids that do not exist."""
    limit = current_app.config["MAX_BULK"]
    query = select(Incident).order_by(Incident.id).with_for_update()
    if "ids" in params:
        ids = list(dict.fromkeys(params["ids"]))  # once each, in the caller's order
        if len(ids) > limit:
            raise InvalidParams({"ids": [f"At most {limit} ids (MAX_BULK)."]})
        found = list(db.session.scalars(query.where(Incident.id.in_(ids))))
        present = {incident.id for incident in found}
        return found, [{"id": i, "reason": "not found"} for i in ids if i not in present]
    found = list(db.session.scalars(query.where(*_criteria(params["filter"])).limit(limit + 1)))
    if len(found) > limit:
        raise BadRequest(f"the filter matches more than {limit} incidents (MAX_BULK); narrow it")
    return found, []


def _answer(changed: list[int], skipped: Skipped) -> dict[str, Any]:
    return {"changed": len(changed), "ids": changed, "skipped": skipped}


@action("resolve_many", params=ResolveManyParams(), role="agent", output=bulk_out, changes=True)
def resolve_many(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Resolve every listed or matching incident that is not resolved yet."""
    found, skipped = targets(params)
    changed, now = [], utcnow()
    for incident in found:
        if incident.status == Status.completed:
            skipped.append({"id": incident.id, "reason": "already resolved"})
            continue
        changes = {"status": [incident.status, Status.completed.value]}
        incident.status = Status.completed
        incident.resolved_at = incident.updated_at = now
        incident.resolved_by = ctx.actor
        incident.resolution = params.get("resolution")
        journal.record("resolved", incident, ctx.actor, changes)
        changed.append(incident.id)
    return _answer(changed, skipped)


@action("update_many", params=UpdateManyParams(), role="agent", output=bulk_out, changes=True)
def update_many(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Set the given fields on every listed or matching incident."""
    if "assignee" in params:
        check_assignee(params["assignee"])
    found, skipped = targets(params)
    changed, now = [], utcnow()
    for incident in found:
        if not apply_changes(incident, params, ctx.actor, now):
            skipped.append({"id": incident.id, "reason": "unchanged"})
            continue
        changed.append(incident.id)
    return _answer(changed, skipped)
