"""Idempotent retries: the first answer to a changing command sent with a `request_id`.

An agent whose request timed out cannot know whether it ran, so it sends it again
with the same `request_id`; within REQUEST_ID_TTL (24 hours) the same caller gets
the first answer back and nothing runs twice. The claim is a row inserted in the
command's own transaction before the handler runs. A concurrent duplicate's insert
waits on the unique constraint (caller, request_id) until the first transaction
ends: if it committed, the duplicate finds its answer; if it rolled back (the
command failed and changed nothing), the duplicate runs. So only successful
answers are remembered, and retrying a failure is harmless.
"""

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app
from marshmallow import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from incident_rpc.access.auth import Caller
from incident_rpc.errors import Conflict, InvalidParams
from incident_rpc.extensions import db
from incident_rpc.models import RequestReplay, utcnow
from incident_rpc.schemas.fields import Text

_REQUEST_ID = Text(blank=False, max_length=255)
_PURGE_EVERY = 600.0  # seconds between sweeps of expired rows, per process
_last_purge = 0.0


def take_request_id(params: dict[str, Any]) -> str | None:
    """Remove `request_id` from the parameters; it belongs to the dispatcher, not the action."""
    if "request_id" not in params:
        return None
    try:
        return _REQUEST_ID.deserialize(params.pop("request_id"))
    except ValidationError as error:
        raise InvalidParams({"request_id": error.messages}) from error


def _caller_key(caller: Caller | None) -> str:
    if caller is None:
        return "anonymous"
    if caller.key_id is not None:
        return f"key:{caller.key_id}"
    return f"user:{caller.user_id}" if caller.user_id is not None else f"name:{caller.username}"


def _fingerprint(action: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([action, params], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Claim:
    row_id: int
    earlier: dict[str, Any] | None = None

    def remember(self, answer: dict[str, Any]) -> None:
        """Store the answer in the same transaction as the change it reports."""
        db.session.execute(
            update(RequestReplay).where(RequestReplay.id == self.row_id).values(answer=answer)
        )


def claim(caller: Caller | None, request_id: str, action: str, params: dict[str, Any]) -> Claim:
    """Claim the request id, or return the earlier answer given to it."""
    now = utcnow()
    cutoff = now - timedelta(seconds=current_app.config["REQUEST_ID_TTL"])
    _purge_now_and_then(cutoff)
    key, fingerprint = _caller_key(caller), _fingerprint(action, params)
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    inserted = db.session.execute(
        dialect.insert(RequestReplay)
        .values(caller=key, request_id=request_id, fingerprint=fingerprint, created_at=now)
        .on_conflict_do_nothing(index_elements=["caller", "request_id"])
        .returning(RequestReplay.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return Claim(inserted)
    row = db.session.execute(
        select(RequestReplay).where(
            RequestReplay.caller == key, RequestReplay.request_id == request_id
        )
    ).scalar_one()
    if row.created_at < cutoff:  # expired: the id may be used afresh
        refreshed = db.session.execute(
            update(RequestReplay)
            .where(RequestReplay.id == row.id, RequestReplay.created_at < cutoff)
            .values(created_at=now, fingerprint=fingerprint, answer=None)
        )
        if refreshed.rowcount == 1:
            return Claim(row.id)
        db.session.refresh(row)
    if row.fingerprint != fingerprint:
        raise Conflict("this request_id was already used for a different command")
    if row.answer is None:
        raise Conflict("a command with this request_id is still running; retry")
    return Claim(row.id, earlier=row.answer)


def _purge_now_and_then(cutoff: Any) -> None:
    global _last_purge
    if time.monotonic() - _last_purge < _PURGE_EVERY:
        return
    _last_purge = time.monotonic()
    db.session.execute(delete(RequestReplay).where(RequestReplay.created_at < cutoff))
