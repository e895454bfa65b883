"""Maintenance windows: silence_create, silence_list, silence_expire, silence_history
(agent and up).

A window lives in the database, so every worker and instance applies it and it
survives restarts; matching an arriving incident against the active ones is
silencing.py. Each change is an event (`silence_created`, `silence_expired`) in
the log and on the live stream, in the same transaction as the change; a window's
own events are its history.
"""

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from incident_rpc.actions import silencing
from incident_rpc.dispatch.registry import Context, action
from incident_rpc.errors import Conflict, NotFound
from incident_rpc.events import journal
from incident_rpc.extensions import db
from incident_rpc.models import Event, Role, Silence, utcnow
from incident_rpc.schemas.silences import (
    SilenceCreateParams,
    SilenceIdParams,
    SilenceListParams,
    silence_out,
    silences_out,
)
from incident_rpc.schemas.teams import history_out

SILENCE_EVENTS = ("silence_created", "silence_expired")


@action("silence_create", params=SilenceCreateParams(), role=Role.agent, output=silence_out,
        status=201, changes=True)  # fmt: skip
def silence_create(ctx: Context, params: dict[str, Any]) -> Silence:
    """A new window; incidents that match it and arrive while it is active are marked."""
    now = utcnow()
    starts_at = params.get("starts_at") or now
    ends_at = params.get("ends_at") or starts_at + timedelta(seconds=params["duration"])
    silence = Silence(
        matchers=params["matchers"], starts_at=starts_at, ends_at=ends_at,
        comment=params.get("comment"), created_by=ctx.actor, created_at=now,
    )  # fmt: skip
    db.session.add(silence)
    db.session.flush()
    journal.record_other("silence_created", silence_out.dump(silence), ctx.actor)
    silencing.forget()
    return silence


@action("silence_list", params=SilenceListParams(), role=Role.agent, output=silences_out,
        reads_only=True)  # fmt: skip
def silence_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Newest first; `state` picks the active, pending or expired ones."""
    now = utcnow()
    query = select(Silence).order_by(Silence.id.desc()).limit(params["limit"])
    wanted = params.get("state")
    if wanted == "expired":
        query = query.where(Silence.ends_at <= now)
    elif wanted == "active":
        query = query.where(Silence.ends_at > now, Silence.starts_at <= now)
    elif wanted == "pending":
        query = query.where(Silence.starts_at > now)
    return {"silences": list(db.session.scalars(query))}


@action("silence_expire", params=SilenceIdParams(), role=Role.agent, output=silence_out,
        changes=True)  # fmt: skip
def silence_expire(ctx: Context, params: dict[str, Any]) -> Silence:
    """End a window now (a pending one never starts); an expired one is a 409."""
    silence = db.session.get(Silence, params["id"], with_for_update=True)
    if silence is None:
        raise NotFound(f"no silence with id {params['id']}")
    now = utcnow()
    if silence.ends_at <= now:
        raise Conflict(f"silence {silence.id} has expired already")
    changes = {"ends_at": [silence_out.dump(silence)["ends_at"], None]}
    silence.ends_at = now
    if silence.starts_at > now:
        silence.starts_at = now
    data = silence_out.dump(silence)
    changes["ends_at"][1] = data["ends_at"]
    journal.record_other("silence_expired", data, ctx.actor, changes)
    silencing.forget()
    return silence


@action("silence_history", params=SilenceIdParams(), role=Role.agent, output=history_out,
        reads_only=True)  # fmt: skip
def silence_history(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Every event of the window, oldest first, as `history` answers an incident's."""
    if db.session.get(Silence, params["id"]) is None:
        raise NotFound(f"no silence with id {params['id']}")
    query = (
        select(Event)
        .where(Event.incident_id == 0, Event.type.in_(SILENCE_EVENTS))
        .where(Event.data["id"].as_integer() == params["id"])
        .order_by(Event.id)
    )
    return {"events": list(db.session.scalars(query))}
