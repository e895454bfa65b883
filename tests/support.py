"""What tests share: throwaway databases, real gunicorn servers with an API client,
and the in-process app for tables of inputs and answers (common_fixtures.py serves them).

SQLite always; PostgreSQL when TEST_DATABASE_URL is set (then an unreachable
server is a failure, not a skip). Each server gets a database of its own.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import pytest
import requests
from servers import ROOT, Gunicorn, free_port  # noqa: F401  (free_port: for the tests)
from sqlalchemy.engine import make_url

ADMIN = ("admin", "admin-password-for-tests")
# For a test that restarts a server its clients stay connected to: SIGTERM closes every
# event socket with 1001, the clients reconnect at once to the worker still draining,
# and it then waits gunicorn.conf.py's graceful_timeout (10 s) for them. One second
# ends the wait just the same (GUNICORN_CMD_ARGS overrides the config file).
QUICK_STOP = {"GUNICORN_CMD_ARGS": "--graceful-timeout 1"}
PG_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, message: str) -> T:
    """Poll `condition` until it returns something true, and return that; after
    `timeout` seconds fail the test with `message`. The wait for something a test can
    observe, instead of a sleep that hopes it has happened."""
    deadline = time.monotonic() + timeout
    while not (outcome := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout} s)")
        time.sleep(0.02)
    return outcome


def system_tool(*names: str, package: str) -> str:
    """The path of an installed system tool. Tests never install anything: `.ci/run`
    installs what CI needs, and there a missing tool fails; elsewhere it skips."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    reason = f"{names[0]} is not installed (apt-get install {package}; .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class PostgresDatabases:
    """Creates databases named incident_rpc_test_* on the TEST_DATABASE_URL server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.created: list[str] = []

    def _admin_connection(self) -> Any:
        connection = psycopg2.connect(
            host=self.url.host, port=self.url.port or 5432, user=self.url.username,
            password=self.url.password, dbname=self.url.database or "postgres",
            connect_timeout=5,
        )  # fmt: skip
        connection.autocommit = True
        return connection

    def create(self) -> str:
        name = f"incident_rpc_test_{secrets.token_hex(4)}"
        connection = self._admin_connection()
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        self.created.append(name)
        return self.url.set(drivername="postgresql+psycopg2", database=name).render_as_string(
            hide_password=False
        )

    def drop_all(self) -> None:
        connection = self._admin_connection()
        with connection.cursor() as cursor:
            for name in self.created:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'incidents.sqlite3'}"


class Server(Gunicorn):
    """A real gunicorn serving wsgi:app on its own database, with a client for the API."""

    def __init__(self, database_url: str, instance: Path, workers: int = 2, **env: str) -> None:
        self.database_url = database_url
        settings = {
            "DATABASE_URL": database_url,
            "INSTANCE_PATH": str(instance),
            "SECRET_KEY": "test-secret-key",
            "ADMIN_USERNAME": ADMIN[0],
            "ADMIN_PASSWORD": ADMIN[1],
            "LOG_LEVEL": "WARNING",
            # Each server keeps up to DB_POOL_SIZE idle connections per engine and worker,
            # and a run keeps dozens of servers up: at the default of 10 they came within
            # a few of PostgreSQL's max_connections (100). 5 (+5 overflow) still exceeds
            # what HTTP_CONCURRENCY (8) lets a worker use at once.
            "DB_POOL_SIZE": "5",
            # Login throttling is off unless a test turns it on: many tests fail
            # sign-ins on purpose, all from 127.0.0.1 (test_teams.py turns it on).
            "LOGIN_MAX_FAILURES": "0",
            "LOGIN_MAX_FAILURES_PER_ADDRESS": "0",
            # No notification sender unless a test asks for one (NOTIFY_SENDER="1": the
            # tests of notifications do). Its process starts the app, 1.6 s of CPU, and
            # the suite starts hundreds of servers that never have a channel.
            "NOTIFY_SENDER": "0",
            # It yields to the workers (nice 19) in production. With the suite's other
            # servers busy on both cores its start alone took over 15 s, and waits for
            # deliveries ran out.
            "NOTIFY_SENDER_NICE": "0",
            **env,
        }
        super().__init__("wsgi:app", settings, workers=workers)
        self.session = requests.Session()

    def stop(self) -> None:
        self.session.close()  # idle keep-alive connections would hold a gevent worker's exit
        super().stop()

    def stop_soon(self) -> None:
        """For a fixture's teardown, where nothing waits on the stop: SIGTERM now, and the
        wait for the exit (1-2 s: gevent workers notice the signal within a second) at
        the session's end, in `reap`, while the next module's servers start meanwhile."""
        self.session.close()
        STOPPING[:] = [s for s in STOPPING if s.process and s.process.poll() is None]  # reaped
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            STOPPING.append(self)

    def migrate(self, *args: str) -> None:
        """`flask db ARGS` (e.g. "downgrade", "0004") on this server's database."""
        env = {**self.env, "AUTO_MIGRATE": "0"}
        command = [sys.executable, "-m", "flask", "--app", "wsgi", "db", *args]
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None and not isinstance(body, str | bytes):
            kwargs["json"] = body
        elif body is not None:
            kwargs["data"] = body
        return self.session.post(f"{self.url}{path}", timeout=30, **kwargs)

    def rpc(self, action: str, token: str | None = None, expect: int | None = None, **params):
        """Post one command; check that the HTTP code equals the envelope's status."""
        body = {"action": action, **params}
        if token is not None:
            body["token"] = token
        response = self.post("/rpc", body)
        envelope = response.json()
        assert set(envelope) == {"success", "error", "status", "data"}, envelope
        assert response.status_code == envelope["status"], envelope
        assert envelope["success"] == (envelope["status"] < 400), envelope
        if expect is not None:
            assert envelope["status"] == expect, envelope
        return envelope

    def login(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> str:
        return self.rpc("authorization", username=username, password=password, expect=200)["data"][
            "token"
        ]


STOPPING: list[Server] = []  # told to stop by stop_soon, not yet waited for


def reap() -> None:
    """Wait for every server told to stop by `stop_soon` (as `stop` does: 20 s, then kill)."""
    while STOPPING:
        Gunicorn.stop(STOPPING.pop())


class InProcessAnswer:
    """A Flask test response read like a `requests` one (`json()`, `status_code`,
    `headers`, `text`), so that a table of inputs and answers runs on either tier."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = response.get_data()
        self.text = self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class InProcess:
    """The app in this process, on `app.test_client()`: the fast tier, for the contract's
    tables (what a command answers), with Server's client methods. What needs sockets,
    processes or several workers stays on Server."""

    def __init__(self, database_url: str, **settings: Any) -> None:
        from incident_rpc import create_app

        self.database_url = database_url
        self.env = {"DATABASE_URL": database_url, "SECRET_KEY": "test-secret-key"}  # as Server's
        self.app = create_app({
            "SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": self.env["SECRET_KEY"],
            "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "LOGIN_MAX_FAILURES": 0,
            "LOGIN_MAX_FAILURES_PER_ADDRESS": 0, **settings,
        })  # fmt: skip
        self.client = self.app.test_client()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> InProcessAnswer:
        kwargs.pop("timeout", None)
        if body is not None and not isinstance(body, str | bytes):
            kwargs["json"] = body
        elif body is not None:
            kwargs["data"] = body
        return InProcessAnswer(self.client.post(path, **kwargs))

    rpc = Server.rpc
    login = Server.login

    def close(self) -> None:
        from incident_rpc.extensions import db

        with self.app.app_context():
            db.engine.dispose()
