"""The fixtures every test module may ask for (root conftest.py loads this plugin)."""

from collections.abc import Iterator

import pytest
from support import PG_URL, InProcess, PostgresDatabases, Server, sqlite_url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    databases = PostgresDatabases(PG_URL)
    databases.create()  # fails loudly when the server is unreachable
    yield databases
    databases.drop_all()


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


@pytest.fixture(scope="session")
def server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """One shared server per backend; tests must not assume an empty database."""
    running = Server(new_database_url(), tmp_path_factory.mktemp("instance")).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def token(server: Server) -> str:
    return server.login()


@pytest.fixture(scope="session")
def app(new_database_url) -> Iterator[InProcess]:
    """The app in this process on its own database, one per backend (the fast tier)."""
    running = InProcess(new_database_url())
    yield running
    running.close()


@pytest.fixture(scope="session")
def app_token(app: InProcess) -> str:
    return app.login()
