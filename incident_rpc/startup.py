"""Start-up: every setting checked at once, the logs set up, development named as such.

gunicorn's master calls `on_starting` (gunicorn.conf.py) before any worker boots:
a bad setting stops the service with one message naming each variable, its value
(never a secret's) and what it expects, instead of each worker dying with a
traceback and gunicorn's "Worker failed to boot". `create_app` runs `check` again,
for the CLI and for apps built in-process.

Production also refuses weak secrets. The rule for SECRET_KEY is deliberately
simple: at least 32 bytes and at least 8 different characters (a repeated or
short key is refused; `secrets.token_urlsafe(48)` passes). ADMIN_PASSWORD must
pass the password policy of `user_create` (team_schemas.PASSWORD).
"""

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import select

from incident_rpc.access.auth import hash_password
from incident_rpc.config import Config, ConfigError, read_problems
from incident_rpc.extensions import db
from incident_rpc.models import Role, User
from incident_rpc.runtime import database
from incident_rpc.schemas.teams import UserCreateParams
from incident_rpc.telemetry import logs

SECRET_KEY_MIN_BYTES = 32
SECRET_KEY_MIN_DISTINCT = 8
log = logging.getLogger("incident_rpc")


def settings() -> dict[str, Any]:
    """The settings as read from the environment (what `app.config` starts from)."""
    return {name: value for name, value in vars(Config).items() if name.isupper()}


def on_starting() -> None:
    """In gunicorn's master: raises ConfigError, which gunicorn prints before it exits 1."""
    config = settings()
    check(config)
    logs.configure(config["LOG_LEVEL"], config["LOG_FORMAT"], config["ACCESS_LOG"])
    announce(config)


def check(config: Mapping[str, Any]) -> None:
    """Raise ConfigError naming every setting that cannot run."""
    problems = read_problems() + admin_problems(config, production=False)
    if config["ENV"] == "production":
        problems += production_problems(config)
    if problems:
        raise ConfigError("cannot start; fix these settings:\n  " + "\n  ".join(problems))


def production_problems(config: Mapping[str, Any]) -> list[str]:
    """What production refuses that development allows."""
    problems = admin_problems(config, production=True)
    key = config.get("SECRET_KEY")
    if not key:
        problems.insert(0, "SECRET_KEY must be set when INCIDENT_RPC_ENV=production")
    elif len(key.encode()) < SECRET_KEY_MIN_BYTES or len(set(key)) < SECRET_KEY_MIN_DISTINCT:
        problems.insert(
            0,
            f"SECRET_KEY must be at least {SECRET_KEY_MIN_BYTES} bytes with at least"
            f" {SECRET_KEY_MIN_DISTINCT} different characters, e.g. the output of"
            " python -c 'import secrets; print(secrets.token_urlsafe(48))'",
        )
    return problems


def admin_problems(config: Mapping[str, Any], production: bool) -> list[str]:
    """The first administrator by `user_create`'s rules: a username no API key can pass
    for, always; the password policy in production only (`make run` uses admin/admin)."""
    username, password = config.get("ADMIN_USERNAME"), config.get("ADMIN_PASSWORD")
    if username is None:
        missing = password is not None and not production  # (reported once, not twice)
        return ["ADMIN_USERNAME must be set when ADMIN_PASSWORD is"] if missing else []
    data = {"username": username, "role": "admin"}
    if password is not None:
        data["password"] = password
    errors = UserCreateParams().validate(data, partial=("password",))
    if production:
        return [
            f"ADMIN_PASSWORD must follow the password policy of user_create ({_rule(message)});"
            " the value is not shown"
            for message in errors.get("password", [])
        ]
    return [
        f"ADMIN_USERNAME must follow the username rule of user_create ({_rule(message)}),"
        f" not {username!r}"
        for message in errors.get("username", [])
    ]


def _rule(message: str) -> str:
    """A schema's message as a clause: "Between 8 and 256 characters." -> "between ..."."""
    return message[0].lower() + message[1:].rstrip(".")


def announce(config: Mapping[str, Any]) -> None:
    """Development says so, and what production would refuse (`make run`: admin/admin)."""
    if config["ENV"] == "production":
        return
    refused = production_problems(config)
    if refused:
        log.warning(
            "development settings (INCIDENT_RPC_ENV=development): do not expose this server;"
            " production would refuse: %s",
            "; ".join(refused),
        )


def ensure_first_admin(username: str | None, password: str | None) -> None:
    """The settings were checked at start-up (startup.admin_problems)."""
    if db.session.scalar(select(User.id).limit(1)):
        return
    if not (username and password):
        log.warning(
            "no user exists: set ADMIN_USERNAME and ADMIN_PASSWORD, or run"
            " flask --app wsgi user-create NAME --role admin"
        )
        return
    db.session.add(User(username=username, password_hash=hash_password(password), role=Role.admin))
    db.session.commit()
    log.info("created the first administrator, %s", username)


def prepare_database(app: Flask) -> None:
    """Inside an app context: tune the engine, migrate, create the first admin."""
    if db.engine.dialect.name == "sqlite":
        database.tune_sqlite(db.engine)
    if not app.config["AUTO_MIGRATE"]:
        return
    with database.startup_lock(db.engine):
        upgrade(directory=database.MIGRATIONS)
        log.info("database schema up to date (migrations run at start-up)")
        ensure_first_admin(app.config["ADMIN_USERNAME"], app.config["ADMIN_PASSWORD"])
    db.session.remove()
