"""The fixtures every test module may ask for (root conftest.py loads this plugin)."""

from collections.abc import Callable, Iterator

import pytest
from support import PG_URL, InProcess, PostgresDatabases, Server, reap, sqlite_url


@pytest.fixture(scope="session", autouse=True)
def reaper() -> Iterator[None]:
    """The servers told to stop by `stop_soon` (fixtures' teardowns) have exited before
    the session ends: made first, so torn down last."""
    yield
    reap()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    databases = PostgresDatabases(PG_URL)
    databases.create()  # fails loudly when the server is unreachable
    yield databases
    reap()  # no server left on the databases
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
def shared_servers(new_database_url, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """`shared_servers(workers=2, **settings)`: one server per backend, worker count and
    settings, shared by every module of the session that asks for the same ones (a
    gunicorn start is 2-3 s). Tests on one must not assume an empty database, nor what
    other modules left in it, and must not end credentials or processes they did not make."""
    running: dict[tuple[int, tuple[tuple[str, str], ...]], Server] = {}

    def shared(workers: int = 2, **settings: str) -> Server:
        key = (workers, tuple(sorted(settings.items())))
        if key not in running:
            instance = tmp_path_factory.mktemp("shared")
            running[key] = Server(new_database_url(), instance, workers, **settings).start()
        return running[key]

    yield shared
    for server in running.values():
        server.stop_soon()


@pytest.fixture(scope="session")
def server(shared_servers) -> Server:
    """The shared server of the defaults (two workers), per backend."""
    return shared_servers()


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
