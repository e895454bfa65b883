"""User management for administrators: create, list, change role, disable, reset password."""

from typing import Any

from sqlalchemy import select

from incident_rpc.access.auth import new_password_hash
from incident_rpc.actions.users import add_user
from incident_rpc.dispatch.registry import Context, action
from incident_rpc.errors import Conflict, NotFound
from incident_rpc.extensions import db
from incident_rpc.models import Role, User
from incident_rpc.schemas.teams import (
    NoParams,
    UserCreateParams,
    UserUpdateParams,
    user_out,
    users_out,
)


@action(
    "user_create", params=UserCreateParams(), role=Role.admin, output=user_out, status=201,
    slow=True,
)  # fmt: skip
def user_create(ctx: Context, params: dict[str, Any]) -> User:
    return add_user(params["username"], params["password"], params["role"])


@action("user_list", params=NoParams(), role=Role.admin, output=users_out, reads_only=True)
def user_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"users": list(db.session.scalars(select(User).order_by(User.username)))}


@action(
    "user_update", params=UserUpdateParams(), role=Role.admin, output=user_out, revokes=True,
    slow=True,
)  # fmt: skip
def user_update(ctx: Context, params: dict[str, Any]) -> User:
    """Change role, disable or enable, reset the password.

    Disabling and a new password end the user's sessions. The epoch moves on
    disabling too, so that enabling the user again does not revive old tokens.
    """
    # Hashed first, so that neither the lock below nor SQLite's write lock is held across it.
    password_hash = new_password_hash(params["password"]) if "password" in params else None
    user = db.session.scalar(select(User).where(User.username == params["username"]))
    if user is None:
        raise NotFound(f"no user named {params['username']!r}")
    keep_an_admin(user, params)
    revoke = "password" in params or (params.get("disabled") and not user.disabled)
    user.role = params.get("role", user.role)
    user.disabled = params.get("disabled", user.disabled)
    if password_hash is not None:
        user.password_hash = password_hash
    if revoke:
        user.session_epoch += 1
    return user


def keep_an_admin(user: User, params: dict[str, Any]) -> None:
    """Refuse the change that would leave no active administrator to undo it.

    The active admins' rows are locked (in id order, so two of these never deadlock)
    until the change commits: of two admins removing each other at once, the second
    waits, then sees the first's change and is refused (it left none when both could
    count the other as still active). SQLite's BEGIN IMMEDIATE serializes this anyway.
    """
    demoted = params.get("role", Role.admin) != Role.admin or params.get("disabled") is True
    if user.role != Role.admin or user.disabled or not demoted:
        return
    active = (
        select(User.id)
        .where(User.role == Role.admin, User.disabled.is_(False))
        .order_by(User.id)
        .with_for_update()
    )
    if not set(db.session.scalars(active)) - {user.id}:
        raise Conflict("that would leave no active administrator")
