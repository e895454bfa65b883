"""Batches and groups lose nothing and stall nothing (issue 10), on a real gunicorn over
SQLite and PostgreSQL:

- creates that share one INSERT (a batch's run of creates, a group commit of single
  creates) store every field of every row, whatever the shapes of their neighbours;
- a batch's answers are bounded (MAX_BATCH_ANSWER): past it, a 413 and nothing done;
- a credential revoked, disabled or demoted by an element fails from the next one on;
- a JSON-RPC batch answers in JSON-RPC every element that is not a native command.
"""

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import sqlalchemy
from queueing import RawRequest, TableLock, wait_until_read
from support import Server, wait_for

from incident_rpc.events.journal import ID_SHIFT

PASSWORD = "a-password-for-batch-tests"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_user(server: Server, admin: str, role: str = "reporter") -> tuple[str, str]:
    """A new user's name and token."""
    name = unique(role)
    server.rpc("user_create", admin, expect=201, username=name, password=PASSWORD, role=role)
    return name, server.login(name, PASSWORD)


def post(server: Server, body: Any, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return server.session.post(f"{server.url}/rpc", json=body, headers=headers, timeout=120)


def batch(server: Server, commands: list[Any], token: str | None = None) -> list[dict[str, Any]]:
    response = post(server, commands, token)
    assert response.status_code == 200, response.text[:500]
    return response.json()


@pytest.fixture(scope="module")
def one_worker(shared_servers) -> Server:
    """One worker, so that the tests can watch its memory and concurrent requests meet."""
    return shared_servers(workers=1)


@pytest.fixture(scope="module")
def admin(one_worker: Server) -> str:
    return one_worker.login()


# --- 1. Rows that share an INSERT keep every field -----------------------------------

OPTIONAL = ("title", "severity", "source", "details", "date")
SEVERITIES = ("low", "high", "critical")  # never the default, medium
SOURCES = ("operator", "monitoring", "partner")  # never the default, unknown
EPOCH = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)


def shaped(n: int, fields: tuple[str, ...], tag: str) -> dict[str, Any]:
    """A create with exactly `fields` of the optional ones, each with a value of its own
    (row n's value cannot pass for row m's)."""
    values = {
        "title": f"title {tag} {n}",
        "severity": SEVERITIES[n % 3],
        "source": SOURCES[n % 3],
        "details": {"row": n, "tag": tag, "nested": {"list": [n, None, "x"]}},
        "date": (EPOCH + timedelta(minutes=n)).isoformat(),
    }
    return {"action": "create", "description": f"row {tag} {n}",
            **{name: values[name] for name in fields}}  # fmt: skip


def every_shape(tag: str) -> list[dict[str, Any]]:
    """One create of each of the 32 subsets of the optional fields, sparse ones first,
    so that a row is always followed by rows that carry fields it lacks."""
    subsets = [
        s for size in range(len(OPTIONAL) + 1) for s in itertools.combinations(OPTIONAL, size)
    ]
    return [shaped(n, fields, tag) for n, fields in enumerate(subsets)]


def expected(command: dict[str, Any], created_by: str) -> dict[str, Any]:
    """The incident a create must store: what it gave, the defaults for what it did not."""
    params = command
    if command.get("jsonrpc"):
        params = command["params"]
    return {
        "description": params["description"],
        "title": params.get("title"),
        "severity": params.get("severity", "medium"),
        "source": params.get("source", "unknown"),
        "details": params.get("details"),
        "dedup_key": params.get("dedup_key"),
        "status": "new",
        "created_by": created_by,
        "version": 1,
        "occurrences": 1,
        "resolved_at": None,
        "resolved_by": None,
        "resolution": None,
        "assignee": None,
    }


def check_stored(
    server: Server, token: str, sent: list[tuple[dict[str, Any], dict[str, Any]]], created_by: str
) -> None:
    """Each (command, answer): the answer is a 201 and equals the stored row, read back by
    `get` and by `get_all`, and every field is the command's or its default."""
    page = server.rpc("get_all", token, expect=200, limit=1000)["data"]["incidents"]
    listed = {incident["id"]: incident for incident in page}
    for command, answer in sent:
        assert answer["status"] == 201, (command, answer)
        stored = server.rpc("get", token, expect=200, id=answer["data"]["id"])["data"]
        assert stored == answer["data"] == listed[stored["id"]], command
        assert {name: stored[name] for name in expected(command, created_by)} == expected(
            command, created_by
        ), command
        params = command.get("params", command)
        if "date" in params:
            assert datetime.fromisoformat(stored["created_at"]) == datetime.fromisoformat(
                params["date"]
            )
        else:  # "now": within the test's lifetime
            age = datetime.now(UTC) - datetime.fromisoformat(stored["created_at"])
            assert timedelta(0) <= age < timedelta(minutes=10), stored
    assert len(listed) == len(sent)  # nothing more was stored for this caller
    ids = [answer["data"]["id"] for _, answer in sent]
    without = {answer["data"]["id"] for _, answer in sent if answer["data"]["details"] is None}
    assert sql_null_details(server, ids) == without  # absent is NULL, never JSON null


def sql_null_details(server: Server, incident_ids: list[int]) -> set[int]:
    """Which of these incidents have no details document at all (SQL NULL)."""
    engine = sqlalchemy.create_engine(server.database_url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as connection:
        found = connection.execute(
            sqlalchemy.text("SELECT id FROM incidents WHERE id IN :ids AND details IS NULL")
            .bindparams(sqlalchemy.bindparam("ids", expanding=True)),
            {"ids": incident_ids},
        ).scalars()  # fmt: skip
        nulls = set(found)
    engine.dispose()
    return nulls


def test_batch_of_creates_of_every_shape(one_worker: Server, admin: str) -> None:
    """The issue's example first: a bare create, then one that gives every field."""
    name, reporter = new_user(one_worker, admin)
    commands = [{"action": "create", "description": "a"},
                {"action": "create", "description": "b", "title": "T", "severity": "critical",
                 "source": "partner", "details": {"k": 1}}]  # fmt: skip
    commands += every_shape("batch") + every_shape("again")[::-1]
    answers = batch(one_worker, commands, reporter)
    check_stored(one_worker, reporter, list(zip(commands, answers, strict=True)), name)


def test_batch_of_creates_mixed_with_dedup_keys_and_request_ids(
    one_worker: Server, admin: str
) -> None:
    """A request_id splits a run of creates; a dedup_key sends its run down the one-by-one
    path. Every shape, around each of them."""
    name, reporter = new_user(one_worker, admin)
    commands = every_shape("mixed")
    for n, command in enumerate(commands):
        if n % 5 == 2:
            command["request_id"] = unique("request")
        if n % 7 == 3:
            command["dedup_key"] = unique("dedup")
    answers = batch(one_worker, commands, reporter)
    check_stored(one_worker, reporter, list(zip(commands, answers, strict=True)), name)


def test_jsonrpc_batch_of_creates_of_every_shape(one_worker: Server, admin: str) -> None:
    """JSON-RPC creates in a batch share an INSERT too; by name and by position."""
    name, reporter = new_user(one_worker, admin)
    commands = []
    for n, command in enumerate(every_shape("jsonrpc")):
        params = {key: value for key, value in command.items() if key != "action"}
        commands.append({"jsonrpc": "2.0", "method": "create", "params": params, "id": n})
    positional = ["by position", "positional description", "critical", "partner", {"p": 1}]
    commands.insert(1, {"jsonrpc": "2.0", "method": "create", "params": positional, "id": "p"})
    responses = batch(one_worker, commands, reporter)
    assert [response["id"] for response in responses] == [command["id"] for command in commands]
    names = ("title", "description", "severity", "source", "details")
    by_name = dict(zip(names, positional, strict=True))
    commands[1] = {"jsonrpc": "2.0", "params": by_name}
    sent = [(command, {"status": 201, "data": response["result"]})
            for command, response in zip(commands, responses, strict=True)]  # fmt: skip
    check_stored(one_worker, reporter, sent, name)


# --- the same across separate requests: group commit ---------------------------------
# On PostgreSQL a lock on the incidents table holds a first create in the database;
# the creates sent meanwhile queue in the worker, and run as one group when the lock
# goes. That they were all read by the worker (and so queued) before the lock goes is
# seen in the kernel's socket table; that they shared one transaction, in their event
# ids (an event id is its transaction's id shifted left, events.ID_SHIFT).


def grouped(server: Server, token: str, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send `commands` as separate requests (every other one with `token` in the header
    rather than in the body) while a first create waits on the lock, wait until the
    worker has them all queued, release the lock; their answers."""
    first: dict[str, Any] = {}
    holder_command = {"action": "create", "token": server.login(), "description": "holds"}
    with TableLock(server) as lock:
        holder = threading.Thread(target=lambda: first.update(post(server, holder_command).json()))
        holder.start()
        wait_for(lock.waiting, 30, "the first create never reached the lock")
        sent = [
            RawRequest(server, {**command, "token": token})
            if n % 2
            else RawRequest(server, command, token)
            for n, command in enumerate(commands)
        ]
        wait_until_read(server, sent)
    holder.join(60)
    assert first["status"] == 201, first
    return [request.answer() for request in sent]


def transactions(server: Server, incident_ids: list[int]) -> set[int]:
    """The transactions that wrote these incidents' events."""
    engine = sqlalchemy.create_engine(server.database_url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as connection:
        ids = connection.execute(
            sqlalchemy.text("SELECT id FROM events WHERE incident_id IN :ids")
            .bindparams(sqlalchemy.bindparam("ids", expanding=True)),
            {"ids": incident_ids},
        ).scalars()  # fmt: skip
        found = {event_id >> ID_SHIFT for event_id in ids}
    engine.dispose()
    return found


@pytest.fixture(scope="module")
def pg_worker(postgres, tmp_path_factory) -> Iterator[Server]:
    """One worker on PostgreSQL, with admission slots for every queued request."""
    running = Server(postgres.create(), tmp_path_factory.mktemp("pg-groups"), workers=1,
                     HTTP_CONCURRENCY="128")  # fmt: skip
    yield running.start()
    running.stop_soon()


@pytest.mark.postgres
def test_group_commit_of_creates_of_every_shape(pg_worker: Server) -> None:
    admin = pg_worker.login()
    name, reporter = new_user(pg_worker, admin)
    commands = every_shape("group")
    answers = grouped(pg_worker, reporter, commands)

    check_stored(pg_worker, reporter, list(zip(commands, answers, strict=True)), name)
    assert len(transactions(pg_worker, [answer["data"]["id"] for answer in answers])) == 1


@pytest.mark.postgres
def test_group_commit_mixed_with_dedup_keys_and_request_ids(pg_worker: Server) -> None:
    """Creates with a request_id are not grouped; a dedup_key in a group sends it down
    the one-by-one path, still in one transaction."""
    admin = pg_worker.login()
    name, reporter = new_user(pg_worker, admin)
    commands = every_shape("group-mixed")
    for n, command in enumerate(commands):
        if n % 5 == 2:
            command["request_id"] = unique("request")
        if n % 7 == 3:
            command["dedup_key"] = unique("dedup")
    answers = grouped(pg_worker, reporter, commands)

    check_stored(pg_worker, reporter, list(zip(commands, answers, strict=True)), name)
    grouped_ids = [answer["data"]["id"] for command, answer in zip(commands, answers, strict=True)
                   if "request_id" not in command]  # fmt: skip
    assert len(transactions(pg_worker, grouped_ids)) == 1


# --- 3. A credential revoked by an element fails from the next element on ------------


def statuses(answers: list[dict[str, Any]]) -> list[int]:
    return [answer["status"] for answer in answers]


def test_logout_inside_a_batch_ends_the_token_at_the_next_element(
    one_worker: Server, admin: str
) -> None:
    _, token = new_user(one_worker, admin)
    answers = batch(
        one_worker,
        [
            {"action": "whoami", "token": token},
            {"action": "logout", "token": token},
            {"action": "create", "token": token, "description": "after logout"},
            {"action": "whoami", "token": token},
            {"action": "whoami", "token": admin},  # another user's token is unharmed
        ],
    )
    assert statuses(answers) == [200, 200, 401, 401, 200]
    one_worker.rpc("whoami", token, expect=401)


def test_password_change_inside_a_batch_ends_the_old_token(one_worker: Server, admin: str) -> None:
    _, token = new_user(one_worker, admin)
    change = {"old_password": PASSWORD, "new_password": "another-password-for-batch-tests"}
    answers = batch(
        one_worker,
        [
            {"action": "whoami", "token": token},
            {"action": "password_change", "token": token, **change},
            {"action": "whoami", "token": token},
        ],
    )
    assert statuses(answers) == [200, 200, 401]
    one_worker.rpc("whoami", answers[1]["data"]["token"], expect=200)  # the new one works


def test_key_revoke_inside_a_batch_ends_the_key_at_the_next_element(
    one_worker: Server, admin: str
) -> None:
    key = one_worker.rpc("key_create", admin, expect=201, name=unique("agent"))["data"]
    answers = batch(
        one_worker,
        [
            {"action": "whoami", "token": key["key"]},
            {"action": "create", "token": key["key"], "description": "before revoke"},
            {"action": "key_revoke", "token": admin, "id": key["id"]},
            {"action": "whoami", "token": key["key"]},
            {"action": "create", "token": key["key"], "description": "after revoke"},
        ],
    )
    assert statuses(answers) == [200, 201, 200, 401, 401]


def test_user_update_inside_a_batch_applies_at_the_next_element(
    one_worker: Server, admin: str
) -> None:
    """Disabling ends the user's tokens; demoting takes the role's rights away; both from
    the next element on. So does a JSON-RPC batch."""
    disabled, disabled_token = new_user(one_worker, admin)
    demoted, demoted_token = new_user(one_worker, admin, "admin")
    answers = batch(
        one_worker,
        [
            {"action": "whoami", "token": disabled_token},
            {"action": "user_list", "token": demoted_token},
            {"action": "user_update", "token": admin, "username": disabled, "disabled": True},
            {"action": "user_update", "token": admin, "username": demoted, "role": "agent"},
            {"action": "whoami", "token": disabled_token},
            {"action": "user_list", "token": demoted_token},
            {"action": "whoami", "token": demoted_token},
        ],
    )
    assert statuses(answers) == [200, 200, 200, 200, 401, 403, 200]
    assert answers[-1]["data"] == {"username": demoted, "role": "agent"}

    _, token = new_user(one_worker, admin)
    key = one_worker.rpc("key_create", admin, expect=201, name=unique("rpc"))["data"]
    calls = [
        ("whoami", {"token": token}),
        ("logout", {"token": token}),
        ("whoami", {"token": token}),
        ("whoami", {"token": key["key"]}),
        ("key_revoke", {"token": admin, "id": key["id"]}),
        ("whoami", {"token": key["key"]}),
    ]
    responses = batch(
        one_worker,
        [{"jsonrpc": "2.0", "method": method, "params": params, "id": n}
         for n, (method, params) in enumerate(calls)],
    )  # fmt: skip
    assert ["result" in response for response in responses] == [True, True, False] * 2
    assert {response["error"]["code"] for response in responses[2::3]} == {-32001}


def table_reads(connection: Any, table: str) -> tuple[int, int]:
    """(rows inserted into, scans of) a table, as PostgreSQL's statistics have them."""
    connection.execute(sqlalchemy.text("SELECT pg_stat_clear_snapshot()"))
    row = connection.execute(
        sqlalchemy.text(
            "SELECT n_tup_ins, coalesce(idx_scan, 0) + seq_scan FROM pg_stat_user_tables"
            " WHERE relname = :table"
        ),
        {"table": table},
    ).one()
    return row[0], row[1]


@pytest.mark.postgres
def test_a_batch_of_creates_still_checks_its_token_once(postgres, tmp_path_factory) -> None:
    """1,000 creates with one token read the users table about once, not 1,000 times.
    A backend's statistics reach the shared counters all together, up to 10 s after its
    transaction: once the batch's 1,000 inserted rows show, so do its reads of users."""
    server = Server(postgres.create(), tmp_path_factory.mktemp("once"), workers=1).start()
    engine = sqlalchemy.create_engine(
        server.database_url, poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        token = server.login()
        with engine.connect() as connection:
            inserted, _ = table_reads(connection, "incidents")
            _, users_before = table_reads(connection, "users")
            commands = [{"action": "create", "token": token, "description": f"once {n}"}
                        for n in range(1000)]  # fmt: skip
            assert set(statuses(batch(server, commands))) == {201}
            deadline = time.monotonic() + 60
            while table_reads(connection, "incidents")[0] < inserted + 1000:
                assert time.monotonic() < deadline, "the batch's statistics never showed"
                time.sleep(0.1)
            _, users_after = table_reads(connection, "users")
        assert users_after - users_before < 20  # without the batch's cache: over 1,000
    finally:
        engine.dispose()
        server.stop()


# --- 4. A batch that speaks JSON-RPC answers in JSON-RPC --------------------------------
# The rule: in a batch where any element is a JSON-RPC request (has a `jsonrpc` member),
# every element that is not a native command (an object with an `action` and no
# `jsonrpc`) is answered in JSON-RPC: `{"foo": "boo"}`, `1` or `[]` is an Invalid
# Request. A batch with no JSON-RPC element is native, as before.

INVALID = {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}
NOT_FOUND = {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}}


def test_spec_batch_example_without_the_jsonrpc_content_type(
    one_worker: Server, admin: str
) -> None:
    """The specification's section 7 batch, as most JSON-RPC clients post it (plain
    application/json), with our actions in place of sum, notify_hello, subtract and
    get_data: the specification's answers."""
    first = one_worker.rpc("create", admin, expect=201, description="first")["data"]
    second = one_worker.rpc("create", admin, expect=201, description="second")["data"]
    hello = unique("hello")
    body = [
        {"jsonrpc": "2.0", "method": "get", "params": [first["id"]], "id": "1"},
        {"jsonrpc": "2.0", "method": "create", "params": {"description": "hi", "dedup_key": hello}},
        {"jsonrpc": "2.0", "method": "get", "params": [second["id"]], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "whoami", "id": "9"},
    ]
    assert batch(one_worker, body, admin) == [
        {"jsonrpc": "2.0", "result": first, "id": "1"},
        {"jsonrpc": "2.0", "result": second, "id": "2"},
        INVALID,
        {**NOT_FOUND, "id": "5"},
        {"jsonrpc": "2.0", "result": {"username": "admin", "role": "admin"}, "id": "9"},
    ]
    repeat = one_worker.rpc("create", admin, expect=200, description="hi", dedup_key=hello)
    assert repeat["data"]["occurrences"] == 2  # the notification ran


def test_non_commands_in_a_jsonrpc_batch_are_invalid_requests(
    one_worker: Server, admin: str
) -> None:
    """Whatever is not a native command; a native command keeps its envelope."""
    body = [
        {"jsonrpc": "2.0", "method": "whoami", "id": 1},
        {"foo": "boo"},
        1,
        "text",
        [],
        None,
        {"method": "whoami", "id": 2},  # JSON-RPC 1.0: no `jsonrpc` member
        {"action": "whoami", "token": admin},
        {"action": "whoami", "token": admin, "jsonrpc": "2.0"},  # not a valid request
    ]
    answers = batch(one_worker, body, admin)
    assert answers[0] == {"jsonrpc": "2.0", "result": {"username": "admin", "role": "admin"},
                          "id": 1}  # fmt: skip
    assert answers[1:7] == [INVALID] * 5 + [{**INVALID, "id": 2}]
    assert answers[7] == {"success": True, "error": "", "status": 200,
                          "data": {"username": "admin", "role": "admin"}}  # fmt: skip
    assert answers[8] == INVALID
    assert len(answers) == len(body)


def test_native_batches_are_unchanged(one_worker: Server, admin: str) -> None:
    answers = batch(one_worker, [{"foo": "boo"}, 1, {"action": "whoami", "token": admin}])
    assert statuses(answers) == [400, 400, 200]
    assert all(set(answer) == {"success", "error", "status", "data"} for answer in answers)
    assert answers[0]["error"] == "action is required"


# --- 2. A batch's answers are bounded: MAX_BATCH_ANSWER ------------------------------


def worker_pid(server: Server) -> int:
    """The pid of a one-worker server's worker process."""
    assert server.process is not None
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        (worker,) = children.read().split()
    return int(worker)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def seed(server: Server, token: str, count: int, size: int) -> None:
    """`count` incidents with descriptions of `size` characters, in batches under 1 MiB."""
    per_batch = max(1, 700_000 // size)
    for start in range(0, count, per_batch):
        commands = [{"action": "create", "description": f"{n:06d} " + "s" * size}
                    for n in range(start, min(count, start + per_batch))]  # fmt: skip
        assert set(statuses(batch(server, commands, token))) == {201}


def test_a_batch_of_big_pages_stops_at_the_answer_limit(one_worker: Server, admin: str) -> None:
    """The issue's batch: 100 × get_all at limit 1000, a 4 KB request. With the default
    limit (8 MiB) the first pages are answered, every later element is a 413 that says
    which limit, and the worker stays small and keeps serving."""
    seed(one_worker, admin, 1000, 1500)
    pid = worker_pid(one_worker)
    page = {"action": "get_all", "limit": 1000}
    batch(one_worker, [page], admin)  # one page's worth of memory, before measuring
    before = rss_mib(pid)

    response = post(one_worker, [page] * 100, admin)
    assert response.status_code == 200
    assert len(response.content) < 8 * 1024 * 1024 + 100 * 400
    answers = response.json()
    answered = statuses(answers).index(413)
    assert answered >= 1 and statuses(answers) == [200] * answered + [413] * (100 - answered)
    assert all(len(answer["data"]["incidents"]) == 1000 for answer in answers[:answered])
    refusal = answers[answered]
    assert refusal["success"] is False and "MAX_BATCH_ANSWER (8388608 bytes)" in refusal["error"]
    assert refusal["data"] == {"max_batch_answer": 8388608}
    assert all(answer == refusal for answer in answers[answered:])

    assert rss_mib(pid) - before < 150, "the batch grew the worker by hundreds of MiB"
    assert worker_pid(one_worker) == pid  # not killed, not restarted
    assert requests.get(f"{one_worker.url}/readyz", timeout=10).status_code == 200
    one_worker.rpc("whoami", admin, expect=200)


@pytest.fixture(scope="module")
def small_answers(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """A server whose batches may answer 6,000 bytes."""
    running = Server(new_database_url(), tmp_path_factory.mktemp("small"), workers=1,
                     MAX_BATCH_ANSWER="6000")  # fmt: skip
    yield running.start()
    running.stop_soon()


def test_a_run_of_creates_past_the_limit_stores_exactly_what_it_answered(
    small_answers: Server,
) -> None:
    admin = small_answers.login()
    name, reporter = new_user(small_answers, admin)
    commands = [{"action": "create", "description": f"run {n}"} for n in range(30)]
    answers = batch(small_answers, commands, reporter)
    created = statuses(answers).index(413)
    assert 1 <= created < 30 and statuses(answers) == [201] * created + [413] * (30 - created)
    assert "MAX_BATCH_ANSWER (6000 bytes)" in answers[created]["error"]
    check_stored(
        small_answers, reporter, list(zip(commands[:created], answers[:created], strict=True)), name
    )


def test_the_command_that_passes_the_limit_is_undone(small_answers: Server) -> None:
    """An update whose answer would pass the limit changes nothing; neither does anything
    after it, a JSON-RPC request included (-32013, the envelope in data)."""
    admin = small_answers.login()
    _, reporter = new_user(small_answers, admin)
    incident = small_answers.rpc("create", reporter, expect=201, description="as it was")["data"]
    long_text = "y" * 5000  # its answer alone fits; after two creates' answers it does not
    answers = batch(
        small_answers,
        [
            {"action": "create", "token": reporter, "description": "fits 1"},
            {"action": "create", "token": reporter, "description": "fits 2"},
            {"action": "update", "token": admin, "id": incident["id"], "description": long_text},
            {"action": "update", "token": admin, "id": incident["id"], "severity": "low"},
            {"jsonrpc": "2.0", "method": "whoami", "params": {"token": admin}, "id": 7},
            {"action": "create", "token": reporter, "description": "not run"},
        ],
    )
    assert statuses(answers[:4]) == [201, 201, 413, 413] and statuses(answers[5:]) == [413]
    assert answers[4]["id"] == 7 and answers[4]["error"]["code"] == -32013
    assert answers[4]["error"]["data"] == answers[2]
    assert small_answers.rpc("get", admin, expect=200, id=incident["id"])["data"] == incident
    mine = small_answers.rpc("get_all", reporter, expect=200)["data"]["incidents"]
    assert sorted(i["description"] for i in mine) == ["as it was", "fits 1", "fits 2"]
    # the limit is per batch: a single command, or the next batch, is not affected
    page = small_answers.rpc("get_all", admin, expect=200, limit=1000)["data"]["incidents"]
    assert len(json.dumps(page)) > 6000
    update = {"action": "update", "id": incident["id"], "description": long_text}
    assert statuses(batch(small_answers, [update], admin)) == [200]


@pytest.fixture(scope="module")
def small_answers_pg(postgres, tmp_path_factory) -> Iterator[Server]:
    running = Server(postgres.create(), tmp_path_factory.mktemp("small-pg"), workers=1,
                     MAX_BATCH_ANSWER="6000", HTTP_CONCURRENCY="128")  # fmt: skip
    yield running.start()
    running.stop_soon()


@pytest.mark.postgres
def test_the_answer_limit_is_not_applied_to_a_group_commit(small_answers_pg: Server) -> None:
    """A group commit runs separate requests together; each has an answer of its own."""
    admin = small_answers_pg.login()
    name, reporter = new_user(small_answers_pg, admin)
    commands = [{"action": "create", "description": f"{n} " + "g" * 2000} for n in range(8)]
    answers = grouped(small_answers_pg, reporter, commands)
    check_stored(small_answers_pg, reporter, list(zip(commands, answers, strict=True)), name)
    assert len(transactions(small_answers_pg, [a["data"]["id"] for a in answers])) == 1
