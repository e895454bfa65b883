"""Sessions and self-service: sign-in, whoami, logout, password change, registration.

Sign-in and the old password of a password change go through the login throttle
(`throttle`): refused while throttled, every wrong password counted.
"""

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from incident_rpc.access import throttle
from incident_rpc.access.auth import issue_token, login, new_password_hash
from incident_rpc.dispatch.registry import Context, Form, action
from incident_rpc.errors import BadCredentials, Conflict, Forbidden, InvalidParams
from incident_rpc.extensions import db
from incident_rpc.models import Role, User
from incident_rpc.schemas import legacy
from incident_rpc.schemas.incidents import AuthorizationParams, token_out
from incident_rpc.schemas.teams import (
    NoParams,
    PasswordChangeParams,
    RegisterParams,
    user_out,
    whoami_out,
)


def checked_login(username: str, password: str) -> User:
    """`auth.login` behind the throttle. Unknown names and wrong passwords take one path:
    the attempt is counted before the check, and a right password gives it back."""
    attempt = throttle.attempt(username)
    user = login(username, password)
    throttle.succeeded(attempt)
    return user


def add_user(username: str, password: str, role: str) -> User:
    """A new user; 409 if the name is taken, ignoring case ("Admin" may not pose as "admin").

    The unique index on lower(username) decides between concurrent creates; the check
    before it only spares the usual case a failed INSERT.
    """
    password_hash = new_password_hash(password)  # first: no lock is held across it
    taken = select(User.id).where(func.lower(User.username) == username.lower())
    if db.session.scalar(taken) is not None:
        raise Conflict(f"the username {username!r} is taken")
    user = User(username=username, password_hash=password_hash, role=role)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError as error:  # the same name, created at the same moment
        raise Conflict(f"the username {username!r} is taken") from error
    return user


def session_user(ctx: Context) -> User:
    """The signed-in user; API keys have neither a session nor a password."""
    if ctx.caller is None or ctx.caller.user_id is None:
        raise Forbidden("an API key has no session or password; an admin revokes it")
    return db.session.get_one(User, ctx.caller.user_id)


def end_sessions(user_id: int) -> None:
    """Every token issued to the user so far stops working (see auth)."""
    db.session.execute(
        update(User).where(User.id == user_id).values(session_epoch=User.session_epoch + 1)
    )


@action(
    "authorization", params=AuthorizationParams(), role=None, output=token_out,
    slow=True, legacy=Form(params=legacy.AuthorizationParams()),
)  # fmt: skip
def authorization(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Exchange a username and password for a bearer token."""
    username, password = params.get("username"), params.get("password")
    credentials = (username, password)
    if not all(isinstance(text, str) and text and "\x00" not in text for text in credentials):
        raise BadCredentials()  # reached only by the legacy dialect's looser schema
    return issue_token(checked_login(username, password))


@action("whoami", params=NoParams(), role=Role.reporter, output=whoami_out, reads_only=True)
def whoami(ctx: Context, params: dict[str, Any]) -> Any:
    return ctx.caller


@action("logout", params=NoParams(), role=Role.reporter, revokes=True)
def logout(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """End every session of the caller, on every device."""
    end_sessions(session_user(ctx).id)
    return {}


@action(
    "password_change", params=PasswordChangeParams(), role=Role.reporter, output=token_out,
    revokes=True, slow=True,
)  # fmt: skip
def password_change(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Set a new password; every older token stops working, and the answer is a fresh one."""
    user = session_user(ctx)
    try:
        checked_login(user.username, params["old_password"])
    except BadCredentials as error:  # not a 401: the token is fine, a parameter is wrong
        raise InvalidParams({"old_password": ["Wrong password."]}) from error
    user.password_hash = new_password_hash(params["new_password"])
    user.session_epoch += 1
    return issue_token(user)


@action(
    "register", params=RegisterParams(), role=None, output=user_out, status=201,
    enabled_by="REGISTRATION_ENABLED", slow=True,
)  # fmt: skip
def register(ctx: Context, params: dict[str, Any]) -> User:
    """Self-service sign-up, as a reporter; unknown (404) unless REGISTRATION_ENABLED."""
    return add_user(params["username"], params["password"], Role.reporter)
