"""Connections and schema: engine settings, migrations at start-up, the first admin.

Start-up runs the migrations and creates the first administrator under one
lock (a PostgreSQL advisory lock, or a file lock beside the SQLite file), so
any number of workers and instances may start at once on an empty database.
"""

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import Connection, create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from incident_rpc.extensions import db
from incident_rpc.runtime import sqlite_locks

MIGRATIONS = str(Path(__file__).resolve().parents[2] / "migrations")
_MIGRATION_LOCK_KEY = 0x1C1DE47  # any constant shared by every instance
log = logging.getLogger("incident_rpc")


def engine_options(config: dict[str, Any]) -> dict[str, Any]:
    """Bounded waits everywhere: a dead database becomes a 503, never a hang.

    hide_parameters: a failed statement's error (and so its logged traceback) names
    the SQL but not the values, which are incident text, password hashes, tokens."""
    url = make_url(config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite":
        # Waits for the write lock yield to gevent (runtime/sqlite_locks.py), up to 15 s in all.
        connect_args = {"timeout": 15, "factory": sqlite_locks.Connection}
        return {"hide_parameters": True, "connect_args": connect_args}
    timeout = config["DB_CONNECT_TIMEOUT"]
    return {
        "hide_parameters": True,
        "pool_size": config["DB_POOL_SIZE"],
        "max_overflow": config["DB_POOL_SIZE"],
        "pool_timeout": timeout,
        "connect_args": {
            "connect_timeout": timeout,
            # TimeZone=UTC: timestamps arrive as aware UTC datetimes (models.UTCDateTime).
            "options": f"-c statement_timeout={config['DB_STATEMENT_TIMEOUT_MS']} -c TimeZone=UTC",
            # Notice a peer that vanished (no RST) within seconds rather than hours.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": timeout * 1000 * 3,
        },
    }


_READS = "incident_rpc.reads"  # app.extensions: the engine of read-only commands


def use_reads_session() -> None:
    """Let this request's `db.session` read through an engine of its own (actions
    declared `reads_only`): in autocommit mode on PostgreSQL, which saves a
    BEGIN and a COMMIT round trip per request, and
    on SQLite without the main engine's BEGIN IMMEDIATE, so reads never take the
    write lock. A write that slips in (an API key's last use) commits on its own."""
    if db.session.registry.has():  # already in use (e.g. a batch): stay with it
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    engine = app.extensions.get(_READS)
    if engine is None:  # made on first use: after gunicorn has forked
        options = engine_options(app.config)
        if engine_is_postgres(app.config):
            options["isolation_level"] = "AUTOCOMMIT"
        engine = app.extensions.setdefault(
            _READS, create_engine(app.config["SQLALCHEMY_DATABASE_URI"], **options)
        )
    db.session.registry.set(Session(engine, expire_on_commit=False))


def execute_prepared(connection: Connection, name: str, sql: str, document: str) -> Any:
    """PostgreSQL: run `sql`, which takes one jsonb parameter, as the prepared statement
    `name`: prepared once per pooled connection (a rollback does not undo a PREPARE), so
    that neither SQLAlchemy compiles it nor PostgreSQL plans it at every call."""
    info = connection.info  # lives as long as the database connection itself
    if name not in info:
        connection.exec_driver_sql(f"PREPARE {name}(jsonb) AS {sql}")
        info[name] = True
    return connection.exec_driver_sql(f"EXECUTE {name}(%s)", (document,))


def engine_is_postgres(config: dict[str, Any]) -> bool:
    return make_url(config["SQLALCHEMY_DATABASE_URI"]).get_backend_name() == "postgresql"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _sqlite_begin(connection: Any) -> None:
    # Take the write lock up front: a read that later writes would otherwise fail
    # with "database is locked" when another worker wrote in between. Connections
    # marked read_only (long streams) must not hold it, or they would block writers.
    read_only = connection.get_execution_options().get("read_only")
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def tune_sqlite(engine: Engine) -> None:
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_begin)


@contextmanager
def startup_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database or "instance/memory").with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    with engine.connect() as connection:
        connection.execute(select(func.pg_advisory_lock(_MIGRATION_LOCK_KEY)))
        try:
            yield
        finally:
            connection.execute(select(func.pg_advisory_unlock(_MIGRATION_LOCK_KEY)))
            connection.commit()


def ping() -> None:
    db.session.execute(text("SELECT 1"))
