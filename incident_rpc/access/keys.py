"""API keys: their format, their hash, and the lookup behind a key-authenticated request.

A key is `irk_` followed by 43 URL-safe characters (256 random bits). The prefix
cannot begin a signed token (those start with base64 of JSON, `eyJ`), so
`auth.authenticate` tells the two apart by looking. Only SHA-256 of the key is
stored: a fast, unsalted hash is right for a secret of 256 random bits, since
no amount of guessing inverts it, whereas a slow password hash would cost every
request tens of milliseconds and a salt would rule out the one indexed lookup.
"""

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update

from incident_rpc.extensions import db
from incident_rpc.models import ApiKey, utcnow

PREFIX = "irk_"
SHOWN = 12  # leading characters kept in clear (`prefix`), to tell keys apart in lists
ACTOR = "key:"  # a key acts as "key:<name>"; ':' is never in a username, so no clash
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is at most this stale


def is_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """A fresh key, its shown prefix and its digest."""
    key = PREFIX + secrets.token_urlsafe(32)
    return key, key[:SHOWN], digest(key)


def actor(name: str) -> str:
    return ACTOR + name


def lookup(key: str) -> Any:
    """The live key's (id, name, role), or None; records its use about once a minute."""
    row = db.session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.last_used_at).where(
            ApiKey.key_hash == digest(key), ApiKey.revoked_at.is_(None)
        )
    ).first()
    now = utcnow()
    if row is not None and (row.last_used_at is None or row.last_used_at < now - TOUCH_EVERY):
        _touch(row.id, now)
    return row


def _touch(key_id: int, now: Any) -> None:
    # Committed at once, so that the row lock lasts microseconds and a request
    # that fails afterwards does not undo it. The WHERE makes racing requests no-ops.
    db.session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
    )
    db.session.commit()
