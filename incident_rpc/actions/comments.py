"""Comments on incidents and the audit trail (`history`), read from the event log.

Whoever may read an incident (see `access`) may comment on it and read both;
anyone else gets the same 404 as for an incident that does not exist.
"""

from typing import Any

from sqlalchemy import select

from incident_rpc.actions.incidents import find
from incident_rpc.dispatch.registry import Context, action
from incident_rpc.events import journal
from incident_rpc.extensions import db
from incident_rpc.models import Comment, Event, Role, utcnow
from incident_rpc.schemas.incidents import IdParams
from incident_rpc.schemas.teams import CommentParams, comment_out, comments_out, history_out


@action("comment", params=CommentParams(), role=Role.reporter, output=comment_out, status=201)
def comment(ctx: Context, params: dict[str, Any]) -> Comment:
    """Add a note; the `commented` event commits with it."""
    incident = find(params["id"], ctx.caller)
    note = Comment(
        incident_id=incident.id, author=ctx.actor, text=params["text"], created_at=utcnow()
    )
    db.session.add(note)
    db.session.flush()
    journal.record(
        "commented", incident, ctx.actor, {"comment": {"id": note.id, "text": note.text}}
    )
    return note


@action("comments", params=IdParams(), role=Role.reporter, output=comments_out, reads_only=True)
def comments(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every comment on the incident, oldest first."""
    incident = find(params["id"], ctx.caller)
    query = select(Comment).where(Comment.incident_id == incident.id).order_by(Comment.id)
    return {"comments": list(db.session.scalars(query))}


@action("history", params=IdParams(), role=Role.reporter, output=history_out, reads_only=True)
def history(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every event of the incident, oldest first: type, actor, time and what changed."""
    incident = find(params["id"], ctx.caller)
    query = select(Event).where(Event.incident_id == incident.id).order_by(Event.id)
    return {"events": list(db.session.scalars(query))}
