"""Who the caller is: password hashes, signed tokens, and the token check.

A token is `{"u": user id, "e": session epoch}` signed with itsdangerous under
SECRET_KEY, with the signing time inside. Logout, a password change or
disabling a user bumps the epoch, so every older token fails the check of its user's
row: one indexed primary-key lookup, kept by each worker for TOKEN_CACHE_SECONDS
until the instance's next change of credentials (access/revocations.py). An API key
(`keys.PREFIX`) is accepted wherever a token is, and costs one indexed lookup of its
hash (kept the same way: access/keys.py).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import bindparam, select
from werkzeug.security import check_password_hash, generate_password_hash

from incident_rpc.access import keys, revocations
from incident_rpc.errors import BadCredentials, ExpiredToken, InvalidToken, MissingToken
from incident_rpc.extensions import db
from incident_rpc.models import KeyRole, Role, User
from incident_rpc.runtime import offload
from incident_rpc.schemas.fields import MAX_ID

# A monitor key ranks as a reporter; the actions it may do beyond that say so
# (`@action(..., monitor=True)`), and access/policy.py confines it to what it raised.
ROLE_RANK: dict[str, int] = {Role.reporter: 1, KeyRole.monitor: 1, Role.agent: 2, Role.admin: 3}
_TOKEN_SALT = "incident-rpc-token"
# The per-request check reads the table's columns, not the mapped class's: a
# Core SELECT skips the ORM's compile and result layers (about 90 us of CPU each).
_USERS = User.__table__
_CALLER = select(_USERS.c.username, _USERS.c.role, _USERS.c.disabled, _USERS.c.session_epoch)
_CALLER = _CALLER.where(_USERS.c.id == bindparam("user_id"))  # built once, bound per request
# Checked when the username is unknown, so that a wrong username costs as
# much time as a wrong password and does not reveal which names exist. A hash of a
# random password that was thrown away, written out rather than made at import (a
# scrypt hash at every process start: each worker's master, sender and CLI command);
# a test checks that it is still of werkzeug's default method, as new hashes are.
_DUMMY_HASH = (
    "scrypt:32768:8:1$yA3R2AFbnlsgqrCt$919990d38ea69323e595ef6633bda27be2f9303a31f619550cd80ffb"
    "25fd53927d419d46cb2971b022d71bde9e407d593a432d7094985420cda3f66502bbdd73"
)


@dataclass(frozen=True)
class Caller:
    username: str
    role: str
    user_id: int | None = None
    key_id: int | None = None

    def has_role(self, needed: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[needed]

    @property
    def is_monitor(self) -> bool:
        return self.role == KeyRole.monitor


def hash_password(password: str) -> str:
    return offload.run(generate_password_hash, password)


def _outside_transaction(function: Callable[..., Any], *args: Any) -> Any:
    """Slow work (scrypt, about 80 ms of CPU) with no transaction open.

    Callers have only read so far (the token, a user), and that transaction is
    committed first. Held across the work, SQLite's write lock would stop every other
    writer of every worker, and on PostgreSQL a transaction that has written holds
    back every later event of the cluster (events/journal.py) and keeps its row locks.
    Never inside a batch's shared transaction: actions declared `slow` run alone.
    """
    db.session.commit()
    return offload.run(function, *args)


def new_password_hash(password: str) -> str:
    """`hash_password` for a command: call it before the command writes anything."""
    return _outside_transaction(generate_password_hash, password)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_TOKEN_SALT)


def login(username: str, password: str) -> User:
    """The user with these credentials, or BadCredentials (same time either way).

    The session's transaction ends before the password is checked (see below)."""
    user = db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    password_hash = user.password_hash if user else _DUMMY_HASH
    right = _outside_transaction(check_password_hash, password_hash, password)
    if not right or not user or user.disabled:
        raise BadCredentials()
    return user


def issue_token(user: User) -> dict[str, Any]:
    ttl = current_app.config["TOKEN_TTL"]
    issued = datetime.now(UTC).replace(microsecond=0)
    token = _serializer().dumps({"u": user.id, "e": user.session_epoch})
    return {
        "token": token,
        "token_type": "bearer",
        "expires_in": ttl,
        "expires_at": issued + timedelta(seconds=ttl),
    }


def authenticate(token: Any) -> Caller:
    """The caller a token belongs to; 401 for anything missing, bad, expired or revoked."""
    if token is None or token == "":
        raise MissingToken()
    if not isinstance(token, str) or len(token) > 1024:
        raise InvalidToken()
    if keys.is_key(token):
        return _key_caller(token)
    try:
        claims, signed_at = _signed(token, current_app.config["SECRET_KEY"])
    except BadData as error:  # tampered, truncated, another key, not ours at all
        raise InvalidToken() from error
    if time.time() - signed_at.timestamp() > current_app.config["TOKEN_TTL"]:
        raise ExpiredToken()
    if not _well_formed(claims):
        raise InvalidToken()
    user_id, ttl = claims["u"], current_app.config["TOKEN_CACHE_SECONDS"]
    row = revocations.kept("incident_rpc.tokens", user_id, ttl, lambda: _user(user_id))
    if row is None or row.disabled or row.session_epoch != claims["e"]:
        raise InvalidToken()
    return Caller(row.username, row.role, user_id=user_id)


def _user(user_id: int) -> Any:
    return db.session.execute(_CALLER, {"user_id": user_id}).first()


def _well_formed(claims: Any) -> bool:
    """Claims as issue_token writes them. `type(...) is int`, not isinstance: True is an
    int to Python (and user 1, or epoch 1, to SQLite); a boolean PostgreSQL will not
    compare with an integer column at all. A user id fits the column."""
    return (
        isinstance(claims, dict)
        and type(claims.get("u")) is int
        and 0 < claims["u"] <= MAX_ID
        and type(claims.get("e")) is int
    )


@lru_cache(maxsize=4096)
def _signed(token: str, secret_key: str) -> tuple[Any, datetime]:
    """A token's claims and signing time, if its signature is good; BadData if not.

    Cached: an agent sends the same token thousands of times, and the answer for one
    token and key never changes (its age and its user's epoch are checked on every
    request). A bad token raises, and exceptions are never cached.
    """
    serializer = URLSafeTimedSerializer(secret_key, salt=_TOKEN_SALT)
    return serializer.loads(token, return_timestamp=True)


def _key_caller(key: str) -> Caller:
    row = keys.lookup(key)
    if row is None:  # unknown or revoked: no difference to the caller
        raise InvalidToken()
    return Caller(keys.actor(row.name), row.role, key_id=row.id)
