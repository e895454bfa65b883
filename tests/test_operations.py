"""Operating the service: start-up races, settings, the CLI, and a database that goes away."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support import ADMIN, ROOT, Server, free_port, wait_for


def test_instances_starting_together_on_an_empty_database(new_database_url, tmp_path) -> None:
    """Two instances x two workers race to migrate and create the first admin: all is well."""
    url = new_database_url()
    servers = [Server(url, tmp_path / f"i{n}") for n in range(2)]
    starters = [threading.Thread(target=server.start) for server in servers]
    try:
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join()
        for server in servers:
            assert server.process and server.process.poll() is None
            token = server.login()
            users = server.rpc("user_list", token, expect=200)["data"]["users"]
            assert [user["username"] for user in users] == [ADMIN[0]]
    finally:
        for server in servers:
            server.stop_soon()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "INCIDENT_RPC_ENV")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_production_refuses_to_start_without_secret_key(tmp_path) -> None:
    done = run_python(
        "import wsgi", INCIDENT_RPC_ENV="production", INSTANCE_PATH=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )  # fmt: skip
    assert done.returncode != 0
    assert "SECRET_KEY must be set" in done.stderr
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("max_bulk", ["0", "65537"])
def test_a_max_bulk_outside_what_event_ids_can_number_refuses_to_start(tmp_path, max_bulk):
    done = run_python(
        "import wsgi", MAX_BULK=max_bulk, SECRET_KEY="k", INSTANCE_PATH=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )  # fmt: skip
    assert done.returncode != 0
    assert "MAX_BULK must be between 1 and 65536" in done.stderr


def test_development_key_is_made_once_and_kept(tmp_path) -> None:
    """Without SECRET_KEY, tokens survive a restart: the key made the first time is reused."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    first = Server(url, tmp_path / "instance", SECRET_KEY="").start()
    try:
        token = first.login()
    finally:
        first.stop()
    key = (tmp_path / "instance" / "secret_key").read_text()
    assert (
        len(key) > 40 and oct((tmp_path / "instance" / "secret_key").stat().st_mode)[-3:] == "600"
    )
    second = Server(url, tmp_path / "instance", SECRET_KEY="").start()
    try:
        second.rpc("whoami", token, expect=200)
    finally:
        second.stop_soon()


def test_cli_creates_a_user(new_database_url, tmp_path) -> None:
    url = new_database_url()
    server = Server(url, tmp_path).start()
    try:
        env = {**server.env, "FLASK_APP": "wsgi"}
        command = [sys.executable, "-m", "flask", "user-create", "carol", "--role", "agent",
                   "--password", "carol-password"]  # fmt: skip
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        token = server.login("carol", "carol-password")
        assert server.rpc("whoami", token, expect=200)["data"]["role"] == "agent"
    finally:
        server.stop_soon()


# -- the database goes away and comes back -------------------------------------------------


class Cluster:
    """A PostgreSQL cluster of our own in a temporary folder, on a free port."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.fail("PostgreSQL server binaries are not installed")
        self.bin = Path(found[-1]).parent
        # Not under pytest's tmp_path: that is private to root, and the server may not be.
        self.folder = Path(tempfile.mkdtemp(prefix="incident_rpc_cluster_"))
        self.data, self.port = self.folder / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.folder, "postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def run(self, tool: str, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, str(self.bin / tool), *args], check=True, capture_output=True,
                       timeout=120)  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l",
                 str(self.data / "log"), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def cluster(postgres) -> Iterator[Cluster]:
    """Needs PostgreSQL like the other PostgreSQL tests, but runs a server of its own."""
    own = Cluster()
    own.start()
    yield own
    try:
        own.stop("immediate")
    except subprocess.CalledProcessError:
        pass  # already stopped
    shutil.rmtree(own.folder, ignore_errors=True)


@pytest.mark.postgres
def test_database_outage_gives_503_then_recovers_without_loss(cluster: Cluster, tmp_path) -> None:
    server = Server(cluster.url, tmp_path / "instance", DB_CONNECT_TIMEOUT="2").start()
    try:
        token = server.login()
        acknowledged: list[int] = []
        answered: list[int] = []
        stop = threading.Event()

        def keep_writing() -> None:
            session = requests.Session()
            body = {"action": "create", "token": token, "description": "during the outage"}
            while not stop.is_set():
                response = session.post(f"{server.url}/rpc", json=body, timeout=30)
                answered.append(response.status_code)
                if response.status_code == 201:
                    acknowledged.append(response.json()["data"]["id"])

        writer = threading.Thread(target=keep_writing)
        writer.start()
        wait_for(lambda: 201 in answered, 30, "the writer never wrote")
        cluster.stop("immediate")  # as abrupt as a crash
        started = time.monotonic()
        down = server.post("/rpc", {"action": "get_all", "token": token})
        assert down.status_code == 503 and time.monotonic() - started < 10
        assert down.json()["error"] == "the database is unavailable; retry later"
        assert server.session.get(f"{server.url}/readyz", timeout=10).status_code == 503
        wait_for(lambda: 503 in answered, 30, "the writer never met the outage")
        cluster.start()
        wait_for(lambda: server.session.get(f"{server.url}/readyz", timeout=10).status_code == 200,
                 20, "did not recover within 20 s")  # fmt: skip
        recovered = len(answered)
        wait_for(lambda: 201 in answered[recovered:], 30, "the writer did not write again")
        stop.set()
        writer.join()
        assert set(answered) <= {201, 503} and 503 in answered
        assert answered[-1] == 201, "writes succeed again after the database returns"
        for incident_id in acknowledged:  # every acknowledged write survived the crash
            server.rpc("get", token, expect=200, id=incident_id)
        listed = server.rpc("get_all", token, expect=200, limit=1000)["data"]["incidents"]
        assert {incident["id"] for incident in listed} >= set(acknowledged[-1000:])
    finally:
        server.stop_soon()


@pytest.mark.postgres
def test_grouped_creates_meet_a_silent_database_with_one_timeout(cluster: Cluster, tmp_path):
    """The database stops answering (a listener that accepts and says nothing): a group
    of creates, or a batch, answers 503 after one connection timeout, not one each."""
    server = Server(cluster.url, tmp_path / "instance", workers=1, DB_CONNECT_TIMEOUT="1").start()
    silent = socket.socket()
    try:
        token = server.login()
        body = {"action": "create", "token": token, "description": "before"}
        assert server.post("/rpc", body).status_code == 201
        cluster.stop("immediate")
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", cluster.port))
        silent.listen(64)  # the kernel completes each handshake; nobody ever answers
        started = time.monotonic()
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(
                lambda _: requests.post(f"{server.url}/rpc", json=body, timeout=60).status_code,
                range(12),
            ))  # fmt: skip
        assert statuses == [503] * 12
        assert time.monotonic() - started < 6  # one timeout per command would take 12 s or more
        started = time.monotonic()  # a batch of them, likewise
        answers = requests.post(f"{server.url}/rpc", json=[body] * 12, timeout=60).json()
        assert [answer["status"] for answer in answers] == [503] * 12
        assert time.monotonic() - started < 6
    finally:
        silent.close()
        server.stop()
