"""Login throttling: too many failed sign-ins answer 429 with `retry_after`.

Failures are counted in fixed windows of LOGIN_THROTTLE_WINDOW seconds in two scopes:
a username at one address (LOGIN_MAX_FAILURES) and an address whatever the names
(LOGIN_MAX_FAILURES_PER_ADDRESS). There is deliberately no scope of a username
alone: it would let anyone lock the real user out by failing on purpose. A
refusal ends with its window (attempts while refused are not counted, so it
never grows), and it never reaches other addresses. The counts live in the
database so that every worker process and every instance shares them.
"""

import hashlib
import hmac
import math
from datetime import timedelta

from flask import current_app, has_request_context, request
from sqlalchemy import case, delete, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .errors import TooManyRequests
from .extensions import db
from .models import LoginFailure, UTCDateTime, utcnow


def client_address() -> str:
    """The caller's address (behind proxies, set PROXY_FIX_X_FOR to trust them)."""
    return (request.remote_addr or "unknown") if has_request_context() else "local"


def _scope(*parts: str) -> str:
    # Keyed, so that a password typed into the username field is never stored.
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def _limits(username: str) -> dict[str, int]:
    """Each scope this sign-in counts against, with its limit (0 turns one off)."""
    config, address = current_app.config, client_address()
    limits = {
        _scope("pair", address, username): config["LOGIN_MAX_FAILURES"],
        _scope("address", address): config["LOGIN_MAX_FAILURES_PER_ADDRESS"],
    }
    return {scope: limit for scope, limit in limits.items() if limit > 0}


def _window() -> timedelta:
    return timedelta(seconds=current_app.config["LOGIN_THROTTLE_WINDOW"])


def check(username: str) -> None:
    """Raise TooManyRequests while any scope of this sign-in is over its limit."""
    limits = _limits(username)
    if not limits:
        return
    now, window = utcnow(), _window()
    rows = db.session.execute(
        select(LoginFailure.scope, LoginFailure.window_start, LoginFailure.failures).where(
            LoginFailure.scope.in_(limits), LoginFailure.window_start > now - window
        )
    )
    ends = [row.window_start + window for row in rows if row.failures >= limits[row.scope]]
    if ends:
        wait = math.ceil((max(ends) - now).total_seconds())
        raise TooManyRequests(max(wait, 1), "too many failed sign-ins; retry later")


def failed(username: str) -> None:
    """Count one failure, in a transaction of its own: the request's own rolls back."""
    limits = _limits(username)
    db.session.rollback()
    if not limits:
        return
    now = utcnow()
    cutoff = now - _window()
    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(LoginFailure).values(
        [{"scope": scope, "window_start": now, "failures": 1} for scope in limits]
    )
    current = LoginFailure.window_start > cutoff
    statement = statement.on_conflict_do_update(
        index_elements=[LoginFailure.scope],
        set_={
            "failures": case((current, LoginFailure.failures + 1), else_=1),
            "window_start": case(
                (current, LoginFailure.window_start), else_=literal(now, UTCDateTime)
            ),
        },
    )
    db.session.execute(statement)
    # Sweep a few expired rows; SKIP LOCKED (PostgreSQL) so sweepers never wait or deadlock.
    stale = (
        select(LoginFailure.scope)
        .where(LoginFailure.window_start <= cutoff)
        .limit(100)
        .with_for_update(skip_locked=True)
    )
    db.session.execute(delete(LoginFailure).where(LoginFailure.scope.in_(stale)))
    db.session.commit()


def succeeded(username: str) -> None:
    """A good password clears that name's count at this address (not the address's)."""
    db.session.execute(
        delete(LoginFailure).where(LoginFailure.scope == _scope("pair", client_address(), username))
    )
