"""Test fixtures: throwaway databases and real gunicorn servers on them.

SQLite always; PostgreSQL when TEST_DATABASE_URL is set (then an unreachable
server is a failure, not a skip). Each server gets a database of its own.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent
ADMIN = ("admin", "admin-password-for-tests")
PG_URL = os.environ.get("TEST_DATABASE_URL", "").strip()


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    databases = PostgresDatabases(PG_URL)
    databases.create()  # fails loudly when the server is unreachable
    yield databases
    databases.drop_all()


def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'incidents.sqlite3'}"


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def new_database_url(backend: str, request: pytest.FixtureRequest, tmp_path_factory):
    """A factory of empty databases on the current backend."""
    if backend == "postgres":
        databases = request.getfixturevalue("postgres")
        return databases.create
    return lambda: sqlite_url(tmp_path_factory)


class Server:
    """A real gunicorn serving wsgi:app on a free port, with a client for the API."""

    def __init__(self, database_url: str, instance: Path, workers: int = 2, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.env = {
            **os.environ,
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
            **env,
        }
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()

    def start(self, output: Path | None = None) -> "Server":
        """With `output` (a folder), the server's stderr and stdout go to files there."""
        command = [
            sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers), "--no-control-socket",
        ]  # fmt: skip
        streams: dict[str, Any] = {}
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            streams = {
                "stderr": open(output / "stderr", "wb"),
                "stdout": open(output / "stdout", "wb"),
            }
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, **streams)
        for stream in streams.values():  # the child has its own copies
            stream.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not become ready in 30 s")

    def stop(self) -> None:
        self.session.close()  # idle keep-alive connections would hold a gevent worker's exit
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

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


@pytest.fixture(scope="session")
def server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """One shared server per backend; tests must not assume an empty database."""
    running = Server(new_database_url(), tmp_path_factory.mktemp("instance")).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def token(server: Server) -> str:
    return server.login()
