"""Command-line administration: `flask --app wsgi user-create NAME --role admin`.

The command follows the rules of the `user_create` action: its schema (a username
no API key can pass for, the password policy) and its `add_user` (a name taken in
another case is taken), so the shell is no way around them.
"""

import click
from flask import Flask
from marshmallow import ValidationError
from sqlalchemy import select

from incident_rpc.access.auth import hash_password
from incident_rpc.actions.user_admin import keep_an_admin
from incident_rpc.actions.users import add_user
from incident_rpc.errors import RpcError
from incident_rpc.extensions import db
from incident_rpc.models import Role, User
from incident_rpc.schemas.teams import UserCreateParams


@click.command("user-create")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.admin.value)
@click.password_option(help="Prompted for (twice) when not given.")
def user_create(username: str, role: str, password: str) -> None:
    """Create a user, or reset the password and role of an existing one."""
    params = _valid({"username": username, "password": password, "role": role})
    user = db.session.scalar(select(User).where(User.username == params["username"]))
    try:
        if user is None:
            add_user(params["username"], params["password"], params["role"])
        else:  # the way back in for an administrator who lost the password
            keep_an_admin(user, {"role": params["role"]})
            user.password_hash = hash_password(params["password"])
            user.role = params["role"]
            user.session_epoch += 1  # old sessions end
        db.session.commit()
    except RpcError as error:
        db.session.rollback()
        raise click.ClickException(error.message) from error
    click.echo(f"user {username} ({role}) is ready")


def _valid(data: dict[str, str]) -> dict[str, str]:
    try:
        return UserCreateParams().load(data)
    except ValidationError as error:  # messages only: they never repeat the password
        problems = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in sorted(error.messages.items())
        )
        raise click.ClickException(problems) from error


def init_app(app: Flask) -> None:
    app.cli.add_command(user_create)
