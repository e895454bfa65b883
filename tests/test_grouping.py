"""Group commit (incident_rpc/dispatch/group_commit.py): creates that arrive together share one
commit, and each still gets the answer, the row and the event it would get alone.

On PostgreSQL a test holds a lock on the incidents table so that one create waits
in the database while the others queue behind it: when the lock goes, the queue
runs as one group, which the event ids show (an event id is its transaction's id
shifted left, events.ID_SHIFT).
"""

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import sqlalchemy
from queueing import RawRequest, TableLock, wait_until_read
from support import Server, wait_for

from incident_rpc.events.journal import ID_SHIFT

PASSWORD = "a-password-for-grouping-tests"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_user(server: Server, admin: str, role: str) -> tuple[str, str]:
    """A new user's name and token."""
    name = unique(role)
    server.rpc("user_create", admin, expect=201, username=name, password=PASSWORD, role=role)
    return name, server.login(name, PASSWORD)


def post(server: Server, command: dict[str, Any], header_token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {header_token}"} if header_token else {}
    response = requests.post(f"{server.url}/rpc", json=command, headers=headers, timeout=60)
    answer = response.json()
    assert response.status_code == answer["status"], answer
    return answer


def events_of(server: Server, incident_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """Each incident's (event id, type) pairs, read straight from the database."""
    engine = sqlalchemy.create_engine(server.database_url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT incident_id, id, type FROM events"
                            " WHERE incident_id IN :ids ORDER BY id")
            .bindparams(sqlalchemy.bindparam("ids", expanding=True)),
            {"ids": incident_ids},
        )  # fmt: skip
        found: dict[int, list[tuple[int, str]]] = {incident_id: [] for incident_id in incident_ids}
        for incident_id, event_id, kind in rows:
            found[incident_id].append((event_id, kind))
    engine.dispose()
    return found


@pytest.fixture(scope="module")
def one_worker(shared_servers) -> Server:
    """One worker, so that concurrent requests meet in one process (shared)."""
    return shared_servers(workers=1)


def test_concurrent_creates_each_get_their_own_answer(one_worker: Server) -> None:
    """Two callers (body and header tokens), with invalid commands and a bad token
    among them: every valid create is stored once, as its caller, with its event."""
    admin = one_worker.login()
    reporter_name, reporter = new_user(one_worker, admin, "reporter")
    sends = []
    for n in range(60):
        text = f"grouped {n} {uuid.uuid4().hex[:6]}"
        if n % 10 == 3:
            sends.append(({"action": "create", "token": admin, "description": " "}, None, 400))
        elif n % 10 == 7:
            sends.append(({"action": "create", "token": admin + "x", "description": text},
                          None, 401))  # fmt: skip
        elif n % 2:
            sends.append(({"action": "create", "description": text}, reporter, 201))
        else:
            sends.append(({"action": "create", "token": admin, "description": text}, None, 201))
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda send: post(one_worker, send[0], send[1]), sends))

    assert [answer["status"] for answer in answers] == [expected for *_, expected in sends]
    created = [(send, answer["data"]) for send, answer in zip(sends, answers, strict=True)
               if answer["status"] == 201]  # fmt: skip
    assert len({incident["id"] for _, incident in created}) == len(created)
    for (command, header_token, _), incident in created:
        assert incident["description"] == command["description"]
        assert incident["created_by"] == (reporter_name if header_token else "admin")
        stored = one_worker.rpc("get", admin, expect=200, id=incident["id"])["data"]
        assert stored == incident
    logged = events_of(one_worker, [incident["id"] for _, incident in created])
    assert all([kind for _, kind in log] == ["added"] for log in logged.values())


# --- PostgreSQL: a queue held behind a lock ------------------------------------------


def queue_behind_a_lock(
    server: Server, commands: list[dict[str, Any]], while_held: Callable[[], None] = lambda: None
) -> tuple[Any, list[Any]]:
    """Send a first create, wait until it waits on the lock, send `commands` while it
    waits, call `while_held`, then release the lock: the answers to the first create
    and to `commands`."""
    token = server.login()
    first: dict[str, Any] = {}
    command = {"action": "create", "token": token, "description": "first"}
    with TableLock(server) as lock:
        holder = threading.Thread(target=lambda: first.update(post(server, command)))
        holder.start()
        wait_for(lock.waiting, 10, "the first create never reached the lock")
        sent = [RawRequest(server, command) for command in commands]
        wait_until_read(server, sent)  # they have arrived and queue behind the first
        while_held()
    holder.join(30)
    answers = [request.answer() for request in sent]
    return first, answers


def transactions(server: Server, incident_ids: list[int]) -> set[int]:
    """The transactions that wrote these incidents' events."""
    logged = events_of(server, incident_ids)
    return {event_id >> ID_SHIFT for log in logged.values() for event_id, _ in log}


@pytest.fixture(scope="module")
def postgres_worker(postgres, tmp_path_factory) -> Iterator[Server]:
    running = Server(postgres.create(), tmp_path_factory.mktemp("pg-grouping"), workers=1)
    yield running.start()
    running.stop_soon()


@pytest.mark.postgres
def test_creates_that_queue_share_one_commit(postgres_worker: Server) -> None:
    token = postgres_worker.login()
    commands = [{"action": "create", "token": token, "description": f"queued {n}"}
                for n in range(6)]  # fmt: skip
    first, answers = queue_behind_a_lock(postgres_worker, commands)

    assert first["status"] == 201
    assert [answer["status"] for answer in answers] == [201] * 6
    assert [answer["data"]["description"] for answer in answers] == [
        command["description"] for command in commands
    ]
    queued = [answer["data"]["id"] for answer in answers]
    assert len(transactions(postgres_worker, queued)) == 1  # one commit for the six
    assert transactions(postgres_worker, [first["data"]["id"]]).isdisjoint(
        transactions(postgres_worker, queued)
    )


@pytest.mark.postgres
def test_creates_read_together_share_the_first_ones_commit(postgres_worker: Server) -> None:
    """Creates that the worker reads in one go while no group is being written: the
    first lets the others join it before it runs (a yield), so all six share one
    commit, instead of the first committing alone and the rest after it."""
    token = postgres_worker.login()
    [worker] = postgres_worker.workers()
    commands = [{"action": "create", "token": token, "description": f"together {n}"}
                for n in range(6)]  # fmt: skip
    os.kill(worker, signal.SIGSTOP)  # the six wait in the kernel's queues meanwhile
    try:
        sent = [RawRequest(postgres_worker, command) for command in commands]
    finally:
        os.kill(worker, signal.SIGCONT)
    answers = [request.answer() for request in sent]
    assert [answer["status"] for answer in answers] == [201] * 6
    assert len(transactions(postgres_worker, [answer["data"]["id"] for answer in answers])) == 1


@pytest.mark.postgres
def test_a_group_that_fails_runs_each_command_alone(postgres_worker: Server) -> None:
    """A dedup_key that another reporter's open incident holds makes the group's
    handler fail: each command then runs on its own and gets its own answer."""
    admin = postgres_worker.login()
    _, owner = new_user(postgres_worker, admin, "reporter")
    _, other = new_user(postgres_worker, admin, "reporter")
    key = unique("held")
    post(postgres_worker, {"action": "create", "token": owner, "description": "x",
                           "dedup_key": key})  # fmt: skip
    commands = [{"action": "create", "token": other, "description": f"fine {n}"} for n in range(5)]
    commands.insert(2, {"action": "create", "token": other, "description": "x", "dedup_key": key})
    _, answers = queue_behind_a_lock(postgres_worker, commands)

    assert [answer["status"] for answer in answers] == [201, 201, 409, 201, 201, 201]
    stored = [answer["data"]["id"] for answer in answers if answer["status"] == 201]
    assert len(transactions(postgres_worker, stored)) == 5  # each alone
    mine = postgres_worker.rpc("get_all", other, expect=200, limit=1000)["data"]["incidents"]
    assert sorted(incident["id"] for incident in mine) == sorted(stored)


@pytest.mark.postgres
def test_group_commit_can_be_turned_off(postgres, tmp_path_factory) -> None:
    server = Server(postgres.create(), tmp_path_factory.mktemp("ungrouped"), workers=1,
                    GROUP_COMMIT="0").start()  # fmt: skip
    try:
        token = server.login()
        commands = [{"action": "create", "token": token, "description": f"q {n}"}
                    for n in range(4)]  # fmt: skip
        _, answers = queue_behind_a_lock(server, commands)
        assert [answer["status"] for answer in answers] == [201] * 4
        assert len(transactions(server, [answer["data"]["id"] for answer in answers])) == 4
    finally:
        server.stop_soon()


@pytest.mark.postgres
def test_queued_creates_give_their_admission_slots_to_other_requests(postgres, tmp_path_factory):
    """HTTP_CONCURRENCY=2: one slot is the first create's, held up by the lock; the
    creates queued behind it hand theirs on, so a third kind of request still runs."""
    server = Server(postgres.create(), tmp_path_factory.mktemp("slots"), workers=1,
                    HTTP_CONCURRENCY="2").start()  # fmt: skip
    try:
        token = server.login()
        seen: list[float] = []

        def whoami() -> None:
            started = time.monotonic()
            server.rpc("whoami", token, expect=200)
            seen.append(time.monotonic() - started)

        commands = [{"action": "create", "token": token, "description": f"q {n}"}
                    for n in range(4)]  # fmt: skip
        _, answers = queue_behind_a_lock(server, commands, while_held=whoami)
        assert seen and seen[0] < 2, "whoami waited for the lock's creates"
        assert [answer["status"] for answer in answers] == [201] * 4
        assert len(transactions(server, [answer["data"]["id"] for answer in answers])) == 1
    finally:
        server.stop_soon()
