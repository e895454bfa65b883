"""Group commit in every dialect that creates (dispatch/group_commit.py): legacy creates
(POST /incidents/create/) and single JSON-RPC creates queue and share one commit as
native ones do, each answered in its own dialect's exact words, alone or in a group;
GROUP_COMMIT=0 turns it off for all of them.

On PostgreSQL a lock on the incidents table holds a first create in the database
while the others queue in the worker behind it (tests/queueing.py sees them read);
when the lock goes they run, and their event ids tell which shared a transaction (an
event id is its transaction's id shifted left, journal.ID_SHIFT). The words of a
failure are the contract's (docs/protocol.md, section 5.1), checked on both databases.
"""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from queueing import RawRequest, TableLock, wait_until_read
from support import Server, wait_for

from incident_rpc.events.journal import ID_SHIFT

LEGACY_CREATE = "/incidents/create/"
LEGACY_ITEM = {"id", "incident", "status", "source", "created_at"}
BAD_SOURCE = "Source is required or wrong, use one of: operator, monitoring, partner, unknown"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def legacy_body(token: str | None, **fields: Any) -> dict[str, Any]:
    body = {"incident": unique("legacy"), "source": "operator", **fields}
    return body if token is None else {"token": token, **body}


def jsonrpc_body(token: str, n: int) -> dict[str, Any]:
    params = {"token": token, "description": unique(f"jsonrpc {n}")}
    return {"jsonrpc": "2.0", "method": "create", "params": params, "id": n}


def legacy_failures(token: str) -> list[tuple[dict[str, Any], int, str]]:
    """Legacy creates that fail, their status and their sentence (contract 5.1)."""
    return [
        (legacy_body(token, source="satellite"), 400, BAD_SOURCE),
        (legacy_body(token, source=None), 400, BAD_SOURCE),
        (legacy_body(token, incident=""), 400, "Incident is required"),
        (legacy_body(token, date="yesterday"), 400, "Wrong date format"),
        (legacy_body(None), 400, "Token is required"),
        (legacy_body(token + "x"), 401, "Invalid token"),
    ]


def answer_of(request: RawRequest) -> tuple[int, dict[str, Any]]:
    status, body = request.raw_answer()
    return status, json.loads(body)


def transactions(server: Server, incident_ids: list[int]) -> set[int]:
    """The transactions that wrote these incidents' events."""
    engine = sqlalchemy.create_engine(server.database_url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as connection:
        ids = connection.execute(
            sqlalchemy.text("SELECT id FROM events WHERE incident_id IN :ids")
            .bindparams(sqlalchemy.bindparam("ids", expanding=True)),
            {"ids": incident_ids},
        ).scalars().all()  # fmt: skip
    engine.dispose()
    assert len(ids) == len(incident_ids), "an incident without its event"
    return {event_id >> ID_SHIFT for event_id in ids}


def queue_behind_a_lock(
    server: Server, first: tuple[str, Any], sends: list[tuple[str, Any]]
) -> tuple[Any, list[Any]]:
    """`first` ((path, body)) is sent and waits on the lock; `sends` are sent meanwhile
    and read by the worker (so queued); then the lock goes. Each one's (HTTP status,
    answer). Commands queue behind a group of their own action and dialect: `first`
    should be of the kind the test groups."""
    with TableLock(server) as lock:
        holder = RawRequest(server, first[1], path=first[0])
        wait_for(lock.waiting, 10, "the first create never reached the lock")
        sent = [RawRequest(server, body, path=path) for path, body in sends]
        wait_until_read(server, sent)  # they have arrived and queue behind the first
    status, answer = answer_of(holder)
    assert status in (200, 201), answer
    return answer, [answer_of(request) for request in sent]


# --- the words, alone: both databases -------------------------------------------------


@pytest.fixture(scope="module")
def one_worker(shared_servers) -> Server:
    return shared_servers(workers=1)


def test_a_legacy_create_alone_answers_in_the_legacy_words(one_worker: Server) -> None:
    token = one_worker.login()
    body = legacy_body(token)
    created = one_worker.post(LEGACY_CREATE, body)
    envelope = created.json()
    assert (created.status_code, envelope["status"], envelope["error"]) == (201, 201, "")
    assert set(envelope["data"]) == LEGACY_ITEM
    assert envelope["data"]["incident"] == body["incident"]
    for failing, status, sentence in legacy_failures(token):
        answer = one_worker.post(LEGACY_CREATE, failing)
        envelope = answer.json()
        assert (answer.status_code, envelope["status"]) == (status, status), envelope
        assert (envelope["success"], envelope["error"]) == (False, sentence), envelope


# --- PostgreSQL: a queue held behind a lock --------------------------------------------


@pytest.fixture(scope="module")
def postgres_worker(postgres, tmp_path_factory) -> Iterator[Server]:
    running = Server(postgres.create(), tmp_path_factory.mktemp("pg-dialects"), workers=1)
    yield running.start()
    running.stop_soon()


@pytest.mark.postgres
def test_legacy_creates_that_queue_share_one_commit(postgres_worker: Server) -> None:
    token = postgres_worker.login()
    bodies = [legacy_body(token) for _ in range(6)]
    first, answers = queue_behind_a_lock(
        postgres_worker, (LEGACY_CREATE, legacy_body(token)), [(LEGACY_CREATE, b) for b in bodies]
    )

    for (status, envelope), body in zip(answers, bodies, strict=True):
        assert (status, envelope["status"], envelope["error"]) == (201, 201, ""), envelope
        assert set(envelope["data"]) == LEGACY_ITEM  # the legacy item, not the native one
        assert envelope["data"]["incident"] == body["incident"]
        assert envelope["data"]["source"] == "operator"
    queued = [envelope["data"]["id"] for _, envelope in answers]
    assert len(transactions(postgres_worker, queued)) == 1  # one commit for the six
    assert transactions(postgres_worker, [first["data"]["id"]]).isdisjoint(
        transactions(postgres_worker, queued)
    )


@pytest.mark.postgres
def test_legacy_failures_inside_a_group_keep_their_words(postgres_worker: Server) -> None:
    """Failing legacy creates queued among good ones: each failure answers exactly as it
    does alone, and the good ones still share one commit."""
    token = postgres_worker.login()
    failures = legacy_failures(token)
    sends: list[tuple[str, Any]] = []
    for failing, _, _ in failures:
        sends += [(LEGACY_CREATE, legacy_body(token)), (LEGACY_CREATE, failing)]
    _, answers = queue_behind_a_lock(postgres_worker, (LEGACY_CREATE, legacy_body(token)), sends)

    good, bad = answers[0::2], answers[1::2]
    for (status, envelope), (failing, expected, sentence) in zip(bad, failures, strict=True):
        assert (status, envelope["status"]) == (expected, expected), (failing, envelope)
        assert (envelope["success"], envelope["error"]) == (False, sentence), envelope
        alone = postgres_worker.post(LEGACY_CREATE, failing).json()
        assert envelope == alone  # the same envelope, data.errors and all
    assert [status for status, _ in good] == [201] * len(good)
    assert all(set(envelope["data"]) == LEGACY_ITEM for _, envelope in good)
    assert len(transactions(postgres_worker, [envelope["data"]["id"] for _, envelope in good])) == 1


@pytest.mark.postgres
def test_single_jsonrpc_creates_that_queue_share_one_commit(postgres_worker: Server) -> None:
    token = postgres_worker.login()
    bodies = [jsonrpc_body(token, n) for n in range(6)]
    first = ("/rpc", jsonrpc_body(token, -1))
    _, answers = queue_behind_a_lock(postgres_worker, first, [("/rpc", body) for body in bodies])

    for (status, answer), body in zip(answers, bodies, strict=True):
        assert status == 200 and set(answer) == {"jsonrpc", "result", "id"}, answer
        assert answer["id"] == body["id"]
        assert answer["result"]["description"] == body["params"]["description"]
    created = [answer["result"]["id"] for _, answer in answers]
    assert len(transactions(postgres_worker, created)) == 1


@pytest.mark.postgres
def test_group_commit_off_turns_it_off_for_every_dialect(postgres, tmp_path_factory) -> None:
    server = Server(postgres.create(), tmp_path_factory.mktemp("ungrouped"), workers=1,
                    GROUP_COMMIT="0").start()  # fmt: skip
    try:
        token = server.login()
        sends = [
            *(("/rpc", {"action": "create", "token": token, "description": unique("native")})
              for _ in range(3)),
            *((LEGACY_CREATE, legacy_body(token)) for _ in range(3)),
            *(("/rpc", jsonrpc_body(token, n)) for n in range(3)),
        ]  # fmt: skip
        first = ("/rpc", {"action": "create", "token": token, "description": "holds the lock"})
        _, answers = queue_behind_a_lock(server, first, sends)
        created = []
        for status, answer in answers:
            assert status in (200, 201), answer
            created.append((answer.get("data") or answer["result"])["id"])
        legacy = [answer for _, answer in answers[3:6]]
        assert all(set(answer["data"]) == LEGACY_ITEM for answer in legacy)
        assert len(transactions(server, created)) == len(created)  # each alone
    finally:
        server.stop_soon()
