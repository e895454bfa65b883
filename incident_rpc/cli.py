"""Command-line administration: `flask --app wsgi user-create NAME --role admin`."""

import click
from flask import Flask
from sqlalchemy import select

from .auth import hash_password
from .extensions import db
from .models import Role, User


@click.command("user-create")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.admin.value)
@click.password_option(help="Prompted for (twice) when not given.")
def user_create(username: str, role: str, password: str) -> None:
    """Create a user, or reset the password and role of an existing one."""
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        user = User(username=username)
        db.session.add(user)
    user.password_hash = hash_password(password)
    user.role = role
    user.session_epoch = (user.session_epoch or 0) + 1  # old sessions end
    db.session.commit()
    click.echo(f"user {username} ({role}) is ready")


def init_app(app: Flask) -> None:
    app.cli.add_command(user_create)
