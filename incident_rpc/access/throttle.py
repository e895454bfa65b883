"""Login throttling: too many failed sign-ins answer 429 with `retry_after`.

Failures are counted in fixed windows of LOGIN_THROTTLE_WINDOW seconds in two scopes:
a username at one address (LOGIN_MAX_FAILURES) and an address whatever the names
(LOGIN_MAX_FAILURES_PER_ADDRESS). There is deliberately no scope of a username
alone: it would let anyone lock the real user out by failing on purpose. A
refusal ends with its window (attempts while refused are not counted, so it
never grows), and it never reaches other addresses. The counts live in the
database so that every worker process and every instance shares them.

A sign-in counts as a failure from the moment it starts (`attempt`) until its
password proves right (`succeeded`): so at most the limit of password checks run
per scope and window, however many arrive at once.
"""

import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, has_request_context, request
from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from incident_rpc.errors import TooManyRequests
from incident_rpc.extensions import db
from incident_rpc.models import LoginFailure, UTCDateTime, utcnow


def client_address() -> str:
    """The caller's address (behind proxies, set PROXY_FIX_X_FOR to trust them)."""
    return (request.remote_addr or "unknown") if has_request_context() else "local"


def _scope(*parts: str) -> str:
    # Keyed, so that a password typed into the username field is never stored.
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def _pair(username: str) -> str:
    return _scope("pair", client_address(), username)


def _limits(username: str) -> dict[str, int]:
    """Each scope this sign-in counts against, with its limit (0 turns one off)."""
    config = current_app.config
    limits = {
        _pair(username): config["LOGIN_MAX_FAILURES"],
        _scope("address", client_address()): config["LOGIN_MAX_FAILURES_PER_ADDRESS"],
    }
    return {scope: limit for scope, limit in limits.items() if limit > 0}


def _window() -> timedelta:
    return timedelta(seconds=current_app.config["LOGIN_THROTTLE_WINDOW"])


@dataclass(frozen=True)
class Attempt:
    """A sign-in under way: counted as a failure in each scope until `succeeded`."""

    pair: str | None = None  # the scope of the name at this address: cleared on success
    address: str | None = None  # the address's scope: its count given back on success
    window_start: datetime | None = None  # of the address's count, to give back to it


def attempt(username: str) -> Attempt:
    """Count this sign-in as a failure before its password is checked, or refuse it.

    Counting first is what makes the limit hold under concurrency: one UPSERT adds
    the attempt to each scope and answers the new counts, each scope's row locked
    until the commit, so every concurrent attempt sees the ones before it (checking
    first, then counting after the 80-ms password check, let 15 of 40 concurrent
    wrong passwords through a limit of 5). Over a limit: rolled back (a refused
    attempt is not counted), 429. Commits: call it before the command writes anything.
    """
    limits = _limits(username)
    if not limits:
        return Attempt()
    now, window = utcnow(), _window()
    current = LoginFailure.window_start > now - window
    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(LoginFailure)
        .values([{"scope": scope, "window_start": now, "failures": 1} for scope in limits])
        .on_conflict_do_update(
            index_elements=[LoginFailure.scope],
            set_={
                "failures": case((current, LoginFailure.failures + 1), else_=1),
                "window_start": case(
                    (current, LoginFailure.window_start), else_=literal(now, UTCDateTime)
                ),
            },
        )
        .returning(LoginFailure.scope, LoginFailure.window_start, LoginFailure.failures)
    )
    counted = {row.scope: row for row in db.session.execute(statement)}
    ends = [
        row.window_start + window for row in counted.values() if row.failures > limits[row.scope]
    ]
    if ends:
        db.session.rollback()
        wait = math.ceil((max(ends) - now).total_seconds())
        raise TooManyRequests(max(wait, 1), "too many failed sign-ins; retry later")
    _sweep(now - window)
    db.session.commit()
    pair, address = _pair(username), _scope("address", client_address())
    return Attempt(
        pair if pair in counted else None,
        address if address in counted else None,
        counted[address].window_start if address in counted else None,
    )


def _sweep(cutoff: datetime) -> None:
    """Delete a few expired rows; SKIP LOCKED (PostgreSQL) so sweepers never wait or deadlock."""
    stale = (
        select(LoginFailure.scope)
        .where(LoginFailure.window_start <= cutoff)
        .limit(100)
        .with_for_update(skip_locked=True)
    )
    db.session.execute(delete(LoginFailure).where(LoginFailure.scope.in_(stale)))


def succeeded(attempt: Attempt) -> None:
    """The password was right: clear the name's count at this address and give the
    address's one back (to the window it was counted in), in a transaction of its own."""
    if attempt.pair is not None:
        db.session.execute(delete(LoginFailure).where(LoginFailure.scope == attempt.pair))
    if attempt.address is not None:
        db.session.execute(
            update(LoginFailure)
            .where(
                LoginFailure.scope == attempt.address,
                LoginFailure.window_start == attempt.window_start,
                LoginFailure.failures > 0,
            )
            .values(failures=LoginFailure.failures - 1)
        )
    db.session.commit()
