"""API keys: their format, their hash, and the lookup behind a key-authenticated request.

A key is `irk_` followed by 43 URL-safe characters (256 random bits). The prefix
cannot begin a signed token (those start with base64 of JSON, `eyJ`), so
`auth.authenticate` tells the two apart by looking. Only SHA-256 of the key is
stored: a fast, unsalted hash is right for a secret of 256 random bits, since
no amount of guessing inverts it, whereas a slow password hash would cost every
request tens of milliseconds and a salt would rule out the one indexed lookup.

A worker keeps the keys it found live, by their digest (never the key itself), for
API_KEY_CACHE_SECONDS, so that a monitor's stream of requests does not read the same
row for each one (access/revocations.py). A revocation still ends a key from the next
request on in every worker of the instance; only a key revoked by another instance (or
by hand in the database) may still be accepted by this one, for at most
API_KEY_CACHE_SECONDS. A key that is not found is never kept: a new key works at once
everywhere.
"""

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, or_, select, update

from incident_rpc.access import revocations
from incident_rpc.extensions import db
from incident_rpc.models import ApiKey, utcnow

PREFIX = "irk_"
SHOWN = 12  # leading characters kept in clear (`prefix`), to tell keys apart in lists
ACTOR = "key:"  # a key acts as "key:<name>"; ':' is never in a username, so no clash
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is at most this stale
# The per-request lookup reads the table's columns, not the mapped class's, and is built
# once and bound per request (as auth's token check): through the ORM's compile and
# result layers it cost more CPU than the rest of a key-authenticated create's checks.
_KEYS = ApiKey.__table__
_LIVE = select(_KEYS.c.id, _KEYS.c.name, _KEYS.c.role, _KEYS.c.last_used_at).where(
    _KEYS.c.key_hash == bindparam("key_hash"), _KEYS.c.revoked_at.is_(None)
)


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
    hashed = digest(key)
    ttl = current_app.config["API_KEY_CACHE_SECONDS"]
    return revocations.kept("incident_rpc.keys", hashed, ttl, lambda: _read(hashed))


def _read(hashed: str) -> Any:
    row = db.session.execute(_LIVE, {"key_hash": hashed}).first()
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
