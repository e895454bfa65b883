"""Monitoring intake end to end (contract section 8): batches, JSON-RPC 2.0, describe,
dedup_key, request_id, bulk actions and the Alertmanager webhook, on SQLite and
PostgreSQL: the JSON-RPC and validation tables on the in-process app, the rest on a real
gunicorn. The real prometheus-alertmanager test is at the end.
"""

import copy
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from support import ROOT, InProcess, Server, free_port, system_tool

PASSWORD = "a-password-for-intake-tests"
RECORDED = ROOT / "tests" / "testdata" / "alertmanager"
JSONRPC_TYPE = "application/json-rpc"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def add_user(server: Server, role: str) -> str:
    """A new user with `role`, made with the CLI; answers a token of theirs."""
    name = unique(role)[:60]
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "user-create", name,
         "--role", role, "--password", PASSWORD],
        cwd=ROOT, env=server.env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return server.login(name, PASSWORD)


_ENGINES: dict[str, sqlalchemy.Engine] = {}


def event_types(server: Server, incident_id: int) -> list[str]:
    """The event log of one incident, read straight from the server's database."""
    url = server.database_url
    engine = _ENGINES.setdefault(url, sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool))
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT type FROM events WHERE incident_id = :id ORDER BY id"),
            {"id": incident_id},
        )
        return [row.type for row in rows]


def post_json(
    server: Server | InProcess, body: Any, token: str | None = None, content_type: str = ""
):
    """Post a body as it is (str) or as JSON; answers the raw HTTP response."""
    headers = {"Content-Type": content_type or "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, str) else json.dumps(body)
    return server.post("/rpc", data, headers=headers)


def jsonrpc(server: Server | InProcess, body: Any, token: str | None = None) -> requests.Response:
    """As a JSON-RPC client following the JSON-RPC over HTTP convention would post."""
    return post_json(server, body, token, JSONRPC_TYPE)


@pytest.fixture(scope="session")
def agent(server: Server) -> str:
    return add_user(server, "agent")


@pytest.fixture(scope="session")
def reporter(server: Server) -> str:
    return add_user(server, "reporter")


@pytest.fixture(scope="session")
def tight(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """A server with small bounds: MAX_BATCH 5, MAX_BULK 5, REQUEST_ID_TTL 1 s, and
    statements that give up after 1.5 s."""
    running = Server(
        new_database_url(), tmp_path_factory.mktemp("tight"),
        MAX_BATCH="5", MAX_BULK="5", REQUEST_ID_TTL="1", DB_STATEMENT_TIMEOUT_MS="1500",
    ).start()  # fmt: skip
    yield running
    running.stop_soon()


def create(
    server: Server | InProcess, token: str, expect: int = 201, **params: Any
) -> dict[str, Any]:
    params.setdefault("description", "Scooter 875643 offline")
    return server.rpc("create", token, expect=expect, **params)["data"]


# --- batches ------------------------------------------------------------------------


def test_batch_answers_each_command_in_order(server: Server, token: str) -> None:
    batch = [
        {"action": "create", "token": token, "description": "first of a batch"},
        {"action": "create", "token": token},  # no description
        {"action": "get", "token": token, "id": 2**62},
        {"action": "create", "token": token, "description": "last of a batch"},
        {"action": "nonsense", "token": token},
        {"action": "create", "token": "tampered", "description": "x"},
        7,
    ]
    response = post_json(server, batch)
    assert response.status_code == 200
    answers = response.json()
    assert [a["status"] for a in answers] == [201, 400, 404, 201, 404, 401, 400]
    assert all(set(a) == {"success", "error", "status", "data"} for a in answers)
    assert answers[1]["data"]["errors"]["description"]
    for created in (answers[0]["data"], answers[3]["data"]):  # the failures undid nothing
        assert server.rpc("get", token, expect=200, id=created["id"])["data"] == created


def test_batch_token_in_the_header(server: Server, token: str) -> None:
    batch = [{"action": "create", "description": "header token"}, {"action": "get", "id": 1}]
    answers = post_json(server, batch, token).json()
    assert answers[0]["status"] == 201 and answers[1]["status"] in (200, 404)


def test_empty_batch_is_400(app: InProcess) -> None:
    response = post_json(app, [])
    assert response.status_code == 400 and response.json()["status"] == 400


def test_batch_over_max_batch_is_413_and_runs_nothing(server: Server, token: str) -> None:
    key = unique("too-many")
    command = {"action": "create", "token": token, "description": "x", "dedup_key": key}
    response = post_json(server, [command] * 1001)
    assert response.status_code == 413 and response.json()["status"] == 413
    assert "1000" in response.json()["error"]
    assert create(server, token, dedup_key=key)["occurrences"] == 1  # none of them ran


def test_a_failing_element_is_rolled_back_alone(server: Server, token: str) -> None:
    """A database-level failure (a unique violation) inside a batch undoes only its element."""
    key = unique("alone")
    old = create(server, token, dedup_key=key)
    server.rpc("resolve", token, expect=200, id=old["id"])
    current = create(server, token, dedup_key=key)
    batch = [
        {"action": "create", "description": "before", "dedup_key": unique("a")},
        {"action": "update", "id": old["id"], "status": "new", "severity": "critical"},
        {"action": "create", "description": "after", "dedup_key": key},
    ]
    answers = post_json(server, batch, token).json()
    assert [a["status"] for a in answers] == [201, 409, 200]
    assert server.rpc("get", token, id=old["id"])["data"]["status"] == "completed"
    assert answers[2]["data"]["id"] == current["id"] and answers[2]["data"]["occurrences"] == 2
    assert event_types(server, old["id"]) == ["added", "resolved"]


@pytest.mark.postgres
def test_a_lost_connection_in_a_batch_runs_it_again_one_by_one(tight: Server) -> None:
    """When the shared transaction dies mid-batch, the batch runs again, one transaction
    per element: what was answered is what is stored, and nothing is stored twice."""
    if not tight.database_url.startswith("postgresql"):
        pytest.skip("needs a second PostgreSQL session to hold a lock and end a backend")
    token = tight.login()
    locked = create(tight, token)
    first, last = unique("first"), unique("last")
    batch = [
        {"action": "create", "description": "x", "dedup_key": first},
        {"action": "update", "id": locked["id"], "severity": "critical"},
        {"action": "create", "description": "x", "dedup_key": last},
    ]
    engine = sqlalchemy.create_engine(tight.database_url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as holder, engine.connect() as admin, ThreadPoolExecutor(1) as pool:
        holder.execute(
            sqlalchemy.text("SELECT id FROM incidents WHERE id = :id FOR UPDATE"),
            {"id": locked["id"]},
        )
        sent = pool.submit(post_json, tight, batch, token)
        waiting = sqlalchemy.text(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND query LIKE 'UPDATE incidents%'"
        )
        for _ in range(100):  # the batch's update now waits for the holder's lock
            pids = admin.execute(waiting).scalars().all()
            admin.rollback()
            if pids:
                break
            time.sleep(0.01)
        assert pids, "the batch never waited for the lock"
        admin.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
        holder.rollback()
        answers = sent.result(timeout=60).json()
    engine.dispose()
    assert answers[0]["status"] == 201 and answers[2]["status"] == 201
    assert answers[1]["status"] in (200, 503)
    for key in (first, last):  # ran twice, stored once, as answered
        assert create(tight, token, expect=200, dedup_key=key)["occurrences"] == 2


def test_handlers_that_commit_or_roll_back_do_not_end_the_batch(server, token) -> None:
    """A failed sign-in rolls back and commits its count on its own; a fresh API key
    records its use with a commit. Inside a batch both act on their savepoint only."""
    name = unique("batch-key")[:40]
    key = server.rpc("key_create", token, expect=201, name=name, role="agent")["data"]["key"]
    first, last = unique("first"), unique("last")
    batch = [
        {"action": "create", "token": token, "description": "x", "dedup_key": first},
        {"action": "authorization", "username": unique("nobody"), "password": "wrong"},
        {"action": "create", "token": key, "description": "x", "dedup_key": last},
    ]
    answers = post_json(server, batch).json()
    assert [a["status"] for a in answers] == [201, 401, 201]
    for key_of, answer in ((first, answers[0]), (last, answers[2])):  # both kept, once
        repeat = create(server, token, expect=200, dedup_key=key_of)
        assert repeat["id"] == answer["data"]["id"] and repeat["occurrences"] == 2


def test_a_burst_of_creates_runs_together_and_answers_each(server: Server, token: str) -> None:
    """Consecutive creates share one INSERT (rpc.execute_many) yet answer as if alone."""
    batch = [{"action": "create", "description": f"burst {n}"} for n in range(6)]
    batch[3] = {"action": "create", "description": "   "}  # blank: answered on its own
    batch.insert(
        4, {"jsonrpc": "2.0", "method": "create", "params": {"description": "rpc"}, "id": 1}
    )
    answers = post_json(server, batch, token).json()
    assert [a.get("status") for a in answers] == [201, 201, 201, 400, None, 201, 201]
    created = [a["data"] for a in answers if a.get("status") == 201] + [answers[4]["result"]]
    assert [c["description"] for c in created] == [
        "burst 0", "burst 1", "burst 2", "burst 4", "burst 5", "rpc",
    ]  # fmt: skip
    ids = [c["id"] for c in created[:5]]
    assert ids == sorted(ids) and len(set(ids)) == 5
    for incident in created:
        assert server.rpc("get", token, id=incident["id"])["data"] == incident
        assert event_types(server, incident["id"]) == ["added"]


def test_a_failure_inside_a_burst_runs_each_on_its_own(server, token, reporter) -> None:
    """One create of a burst fails in the database: the others are still created, once."""
    theirs = create(server, token, dedup_key=unique("theirs"))
    batch = [
        {"action": "create", "description": "before"},
        {"action": "create", "description": "x", "dedup_key": theirs["dedup_key"]},  # 409
        {"action": "create", "description": "after"},
    ]
    answers = post_json(server, batch, reporter).json()
    assert [a["status"] for a in answers] == [201, 409, 201]
    for answer in (answers[0], answers[2]):
        got = server.rpc("get", token, id=answer["data"]["id"])["data"]
        assert got == answer["data"] and event_types(server, got["id"]) == ["added"]
    assert server.rpc("get", token, id=theirs["id"])["data"]["occurrences"] == 1


def test_max_batch_is_a_setting(tight: Server) -> None:
    token = tight.login()
    command = {"action": "create", "token": token, "description": "x"}
    assert post_json(tight, [command] * 6).status_code == 413
    assert [a["status"] for a in post_json(tight, [command] * 5).json()] == [201] * 5


# --- JSON-RPC 2.0: the examples of the specification, section 7 ---------------------
# Our actions stand in for subtract, sum, update, notify_hello, get_data; the token is
# in the Authorization header, as a JSON-RPC client would send it.


def test_spec_call_with_positional_parameters(app: InProcess, app_token: str) -> None:
    first, second = create(app, app_token), create(app, app_token, description="other")
    response = jsonrpc(
        app, {"jsonrpc": "2.0", "method": "get", "params": [first["id"]], "id": 1}, app_token
    )
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "result": first, "id": 1}
    answer = jsonrpc(
        app, {"jsonrpc": "2.0", "method": "get", "params": [second["id"]], "id": 2}, app_token
    )
    assert answer.json() == {"jsonrpc": "2.0", "result": second, "id": 2}


def test_spec_call_with_named_parameters(app: InProcess, app_token: str) -> None:
    incident = create(app, app_token)
    for request_id, params in ((3, {"id": incident["id"], "token": app_token}),
                               (4, {"token": app_token, "id": incident["id"]})):  # fmt: skip
        body = {"jsonrpc": "2.0", "method": "get", "params": params, "id": request_id}
        assert jsonrpc(app, body).json() == {
            "jsonrpc": "2.0",
            "result": incident,
            "id": request_id,
        }


def test_spec_notifications(app: InProcess, app_token: str) -> None:
    incident = create(app, app_token)
    params = {"id": incident["id"], "status": "processing"}
    response = jsonrpc(app, {"jsonrpc": "2.0", "method": "update", "params": params}, app_token)
    assert response.status_code == 204 and response.content == b""
    assert app.rpc("get", app_token, id=incident["id"])["data"]["status"] == "processing"
    response = jsonrpc(app, {"jsonrpc": "2.0", "method": "foobar"}, app_token)
    assert response.status_code == 204 and response.content == b""


def test_spec_call_of_non_existent_method(app: InProcess) -> None:
    answer = jsonrpc(app, {"jsonrpc": "2.0", "method": "foobar", "id": "1"}).json()
    assert answer == {
        "jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"
    }  # fmt: skip


PARSE_ERROR = {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
INVALID = {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}


def test_spec_call_with_invalid_json(app: InProcess) -> None:
    body = '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]'
    for content_type in (JSONRPC_TYPE, "application/json"):  # "jsonrpc" in it is enough
        response = post_json(app, body, content_type=content_type)
        assert response.status_code == 200 and response.json() == PARSE_ERROR


def test_spec_call_with_invalid_request_object(app: InProcess) -> None:
    assert jsonrpc(app, '{"jsonrpc": "2.0", "method": 1, "params": "bar"}').json() == INVALID


def test_spec_batch_with_invalid_json(app: InProcess) -> None:
    body = (
        '[ {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},'
        ' {"jsonrpc": "2.0", "method" ]'
    )
    assert jsonrpc(app, body).json() == PARSE_ERROR


def test_spec_call_with_an_empty_array(app: InProcess) -> None:
    assert jsonrpc(app, "[]").json() == INVALID


def test_spec_invalid_batch_but_not_empty(app: InProcess) -> None:
    assert jsonrpc(app, "[1]").json() == [INVALID]


def test_spec_invalid_batch(app: InProcess) -> None:
    assert jsonrpc(app, "[1,2,3]").json() == [INVALID, INVALID, INVALID]


def test_spec_batch_call(app: InProcess, app_token: str) -> None:
    first, second = create(app, app_token), create(app, app_token, description="second")
    hello = unique("hello")
    batch = [
        {"jsonrpc": "2.0", "method": "get", "params": [first["id"]], "id": "1"},
        {"jsonrpc": "2.0", "method": "create", "params": {"description": "hi", "dedup_key": hello}},
        {"jsonrpc": "2.0", "method": "get", "params": {"id": second["id"]}, "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "describe", "id": "9"},
    ]
    response = jsonrpc(app, batch, app_token)
    assert response.status_code == 200
    answers = response.json()
    assert answers[:4] == [
        {"jsonrpc": "2.0", "result": first, "id": "1"},
        {"jsonrpc": "2.0", "result": second, "id": "2"},
        INVALID,
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
    ]
    assert answers[4]["id"] == "9" and answers[4]["result"]["openrpc"]
    assert len(answers) == 5
    assert create(app, app_token, expect=200, dedup_key=hello)["occurrences"] == 2  # it ran


def test_spec_batch_of_notifications_only(app: InProcess, app_token: str) -> None:
    key = unique("notified")
    batch = [
        {"jsonrpc": "2.0", "method": "create", "params": {"description": "a", "dedup_key": key}},
        {"jsonrpc": "2.0", "method": "create", "params": {"description": "a", "dedup_key": key}},
    ]
    response = jsonrpc(app, batch, app_token)
    assert response.status_code == 204 and response.content == b""
    assert create(app, app_token, expect=200, dedup_key=key)["occurrences"] == 3


# --- JSON-RPC 2.0: our errors and the rest of the dialect -------------------------


def call(
    server: Server | InProcess, method: str, params: Any = None, token: str | None = None
) -> dict:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 42}
    if params is not None:
        body["params"] = params
    response = post_json(server, body, token)  # plain application/json: the body says it
    assert response.status_code == 200
    answer = response.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] == 42
    assert ("result" in answer) != ("error" in answer)
    return answer


@pytest.mark.parametrize(
    ("method", "params", "code", "status"),
    [
        ("create", {"title": "no description"}, -32602, 400),
        ("create", {"description": "x", "stauts": "new"}, -32602, 400),
        ("create", {"description": "x", "action": "get"}, -32602, 400),
        ("get", {"id": 2**62}, -32004, 404),
        ("get", {"id": "7"}, -32602, 400),
        ("get", [1, 2, 3, 4], -32602, 400),
    ],
)
def test_jsonrpc_errors_carry_the_envelope(app, app_token, method, params, code, status) -> None:
    error = call(app, method, params, app_token)["error"]
    assert error["code"] == code
    assert error["data"]["status"] == status and error["data"]["success"] is False
    if code == -32602:
        assert error["message"] == "Invalid params"


def test_jsonrpc_server_range_codes(server: Server, token: str, reporter: str) -> None:
    assert call(server, "get", {"id": 1})["error"]["code"] == -32001  # no token
    assert call(server, "get", {"id": 1, "token": "forged"})["error"]["code"] == -32001
    incident = create(server, token)
    denied = call(server, "resolve", {"id": incident["id"]}, reporter)["error"]
    assert denied["code"] == -32003 and denied["data"]["status"] == 403
    assert "result" in call(server, "resolve", {"id": incident["id"]}, token)
    again = call(server, "resolve", {"id": incident["id"]}, token)["error"]
    assert again["code"] == -32009 and again["message"] == again["data"]["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"jsonrpc": "1.0", "method": "get", "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": "get", "params": "7", "id": 1},
        {"jsonrpc": "2.0", "method": "get", "id": {"an": "object"}},
        {"jsonrpc": "2.0", "method": "get", "id": True},
        {"jsonrpc": "2.0", "method": "get", "id": 1, "token": "belongs in params"},
    ],
)
def test_jsonrpc_invalid_requests(app: InProcess, body: dict) -> None:
    answer = post_json(app, body).json()
    assert answer["error"] == {"code": -32600, "message": "Invalid Request"}


@pytest.mark.parametrize("request_id", ["abc", 0, -5, 2**70, 1.5, None])
def test_jsonrpc_echoes_the_id(app: InProcess, request_id: Any) -> None:
    body = {"jsonrpc": "2.0", "method": "describe", "id": request_id}
    answer = post_json(app, body).json()
    assert answer["id"] == request_id and "result" in answer


def test_jsonrpc_failing_notification_answers_nothing(app: InProcess) -> None:
    body = {"jsonrpc": "2.0", "method": "get", "params": {"id": 1}}  # no token: fails
    response = post_json(app, body)
    assert response.status_code == 204 and response.content == b""


def test_native_and_jsonrpc_mixed_in_one_batch(server: Server, token: str) -> None:
    batch = [
        {"action": "create", "token": token, "description": "native"},
        {"jsonrpc": "2.0", "method": "create", "params": {"description": "rpc"}, "id": "b"},
        {"jsonrpc": "2.0", "method": "create", "params": {"description": "notified"}},
        {"foo": "boo"},  # not a native command, in a batch that speaks JSON-RPC
    ]
    answers = post_json(server, batch, token).json()
    assert len(answers) == 3
    assert answers[0]["status"] == 201 and answers[0]["data"]["description"] == "native"
    assert answers[1]["id"] == "b" and answers[1]["result"]["description"] == "rpc"
    assert answers[2] == INVALID


def test_jsonrpc_batch_over_max_batch(tight: Server) -> None:
    body = [{"jsonrpc": "2.0", "method": "describe", "id": n} for n in range(6)]
    response = post_json(tight, body)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == -32600 and error["data"]["status"] == 413


# --- describe / rpc.discover ------------------------------------------------------


def test_describe_lists_every_action_with_its_params(app: InProcess) -> None:
    import incident_rpc.actions  # noqa: F401  (importing it registers every action)
    from incident_rpc.dispatch.registry import ACTIONS

    document = app.rpc("describe", expect=200)["data"]
    assert document["openrpc"].startswith("1.")
    methods = {m["name"]: m for m in document["methods"]}
    enabled = {name: spec for name, spec in ACTIONS.items() if not spec.enabled_by}
    assert set(methods) == set(enabled)  # the test server switches no optional action on
    for name, spec in enabled.items():
        params = {p["name"]: p for p in methods[name]["params"]}
        for field_name, field in spec.params.load_fields.items():
            param = params[field.data_key or field_name]
            assert param["required"] == field.required, (name, field_name)
        assert ("token" in params) == (spec.role is not None), name
        assert ("request_id" in params) == spec.changes, name
    created = methods["create"]["result"]["schema"]["properties"]
    assert {"dedup_key", "occurrences", "last_seen_at", "id"} <= set(created)
    assert methods["create"]["params"][0]["name"] in {"title", "description"}
    assert {"ids", "filter"} <= {p["name"] for p in methods["resolve_many"]["params"]}


def test_rpc_discover_is_describe(app: InProcess) -> None:
    described = app.rpc("describe", expect=200)["data"]
    assert call(app, "rpc.discover")["result"] == described
    assert call(app, "rpc.other")["error"]["code"] == -32601


def test_positional_params_follow_the_described_order(app: InProcess, app_token: str) -> None:
    """By position, parameters are taken in the order that describe lists them."""
    methods = {m["name"]: m for m in app.rpc("describe")["data"]["methods"]}
    names = [p["name"] for p in methods["create"]["params"]]
    assert names[:3] == ["title", "description", "severity"]
    result = call(app, "create", [None, "by position", "high"], app_token)["result"]
    assert (result["title"], result["description"], result["severity"]) == (
        None, "by position", "high",
    )  # fmt: skip
    too_many = call(app, "create", [None, "x"] + [None] * len(names), app_token)["error"]
    assert too_many["code"] == -32602


# --- dedup_key --------------------------------------------------------------------


def test_dedup_repeats_the_open_incident(server: Server, token: str) -> None:
    key = unique("disk-full")
    first = create(server, token, dedup_key=key, severity="high")
    assert first["dedup_key"] == key and first["occurrences"] == 1
    assert first["last_seen_at"] >= first["created_at"]
    time.sleep(0.01)  # about time itself: a later clock reading for last_seen_at
    second = create(server, token, expect=200, dedup_key=key, description="again")
    assert second["id"] == first["id"] and second["occurrences"] == 2
    assert second["last_seen_at"] > first["last_seen_at"]
    assert second["version"] == first["version"] + 1
    assert second["description"] == first["description"]  # a repeat changes nothing else
    third = create(server, token, expect=200, dedup_key=key)
    assert third["occurrences"] == 3
    assert event_types(server, first["id"]) == ["added", "updated", "updated"]


@pytest.mark.parametrize("closing", ["resolve", "fake"])
def test_dedup_opens_a_new_incident_after_completed_or_fake(server, token, closing) -> None:
    key = unique("closed")
    first = create(server, token, dedup_key=key)
    if closing == "resolve":
        server.rpc("resolve", token, expect=200, id=first["id"])
    else:
        server.rpc("update", token, expect=200, id=first["id"], status="fake")
    second = create(server, token, dedup_key=key)
    assert second["id"] != first["id"] and second["occurrences"] == 1
    assert create(server, token, expect=200, dedup_key=key)["id"] == second["id"]
    # Reopening the old one while the new one is open would give the key two owners.
    reopened = server.rpc("update", token, expect=409, id=first["id"], status="new")
    assert "conflict" in reopened["error"]


def test_dedup_key_of_an_incident_the_caller_cannot_read(server, token, reporter) -> None:
    """Reporters read only their own incidents: another's open key is a 409, not a leak."""
    key = unique("theirs")
    theirs = create(server, token, dedup_key=key)
    answer = server.rpc("create", reporter, expect=409, description="x", dedup_key=key)
    assert answer["data"] == {}
    assert server.rpc("get", token, id=theirs["id"])["data"]["occurrences"] == 1  # undone
    mine = create(server, reporter, dedup_key=unique("mine"))
    assert create(server, reporter, expect=200, dedup_key=mine["dedup_key"])["occurrences"] == 2


def test_dedup_key_validation(app: InProcess, app_token: str) -> None:
    for bad in ("", "   ", "x" * 256, 5, "nul\x00"):
        errors = app.rpc("create", app_token, expect=400, description="x", dedup_key=bad)
        assert "dedup_key" in errors["data"]["errors"]
    assert create(app, app_token, dedup_key="x" * 255)["dedup_key"] == "x" * 255


def test_without_dedup_key_every_create_is_new(server: Server, token: str) -> None:
    assert create(server, token)["id"] != create(server, token)["id"]


def test_legacy_create_is_unchanged(server: Server, token: str) -> None:
    body = {"token": token, "incident": "legacy", "source": "operator", "date": "2026-01-17"}
    answer = server.post("/incidents/create/", body).json()
    assert answer["status"] == 201 and set(answer["data"]) == {
        "id", "incident", "status", "source", "created_at",
    }  # fmt: skip
    assert answer["data"]["created_at"].startswith("2026-01-17")


def send_concurrently(count: int, workers: int, send) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(send, range(count)))


@pytest.mark.postgres
def test_dedup_under_concurrent_senders_on_postgres(postgres, tmp_path_factory) -> None:
    busy = Server(postgres.create(), tmp_path_factory.mktemp("busy"), workers=4).start()
    try:
        token, key, sends = busy.login(), unique("storm"), 200

        def send(_: int) -> tuple[int, int]:
            command = {"action": "create", "token": token, "description": "x", "dedup_key": key}
            answer = requests.post(f"{busy.url}/rpc", json=command, timeout=60).json()
            return answer["status"], answer["data"]["id"]

        results = send_concurrently(sends, 24, send)
        assert sorted(status for status, _ in results) == [200] * (sends - 1) + [201]
        ids = {incident_id for _, incident_id in results}
        assert len(ids) == 1
        incident = busy.rpc("get", token, expect=200, id=ids.pop())["data"]
        assert incident["occurrences"] == sends and incident["version"] == sends
        assert event_types(busy, incident["id"]) == ["added"] + ["updated"] * (sends - 1)

        def send_batch(_: int) -> list[int]:  # batches hold their rows until they commit
            command = {"action": "create", "token": token, "description": "x", "dedup_key": key}
            answers = requests.post(f"{busy.url}/rpc", json=[command] * 25, timeout=60).json()
            return [answer["status"] for answer in answers]

        assert all(
            status == 200 for batch in send_concurrently(8, 8, send_batch) for status in batch
        )
        repeated = busy.rpc("get", token, expect=200, id=incident["id"])["data"]
        assert repeated["occurrences"] == sends + 8 * 25
    finally:
        busy.stop_soon()


def test_dedup_under_concurrent_senders(server: Server, token: str) -> None:
    key, sends = unique("burst"), 40

    def send(_: int) -> int:
        command = {"action": "create", "token": token, "description": "x", "dedup_key": key}
        return requests.post(f"{server.url}/rpc", json=command, timeout=60).json()["status"]

    assert sorted(send_concurrently(sends, 8, send)) == [200] * (sends - 1) + [201]
    assert create(server, token, expect=200, dedup_key=key)["occurrences"] == sends + 1


# --- request_id -------------------------------------------------------------------


def test_request_id_replays_the_first_answer(server: Server, token: str) -> None:
    request_id = unique("req")
    first = server.rpc("create", token, expect=201, description="once", request_id=request_id)
    again = server.rpc("create", token, expect=201, description="once", request_id=request_id)
    assert again == first
    other = server.rpc("create", token, expect=201, description="once", request_id=unique("req"))
    assert other["data"]["id"] != first["data"]["id"]
    assert event_types(server, first["data"]["id"]) == ["added"]


def test_request_id_is_per_caller(server: Server, token: str, agent: str) -> None:
    request_id = unique("req")
    mine = create(server, token, request_id=request_id)
    theirs = create(server, agent, request_id=request_id)
    assert mine["id"] != theirs["id"]


def test_request_id_on_update_and_bulk(server: Server, token: str) -> None:
    incident, request_id = create(server, token), unique("req")
    first = server.rpc("update", token, expect=200, id=incident["id"], severity="low",
                       request_id=request_id)  # fmt: skip
    server.rpc("update", token, expect=200, id=incident["id"], severity="high")
    replayed = server.rpc("update", token, expect=200, id=incident["id"], severity="low",
                          request_id=request_id)  # fmt: skip
    assert replayed == first  # not run again: the severity stays high
    assert server.rpc("get", token, id=incident["id"])["data"]["severity"] == "high"
    bulk_id = unique("req")
    done = server.rpc("resolve_many", token, expect=200, ids=[incident["id"]], request_id=bulk_id)
    assert done == server.rpc("resolve_many", token, ids=[incident["id"]], request_id=bulk_id)
    assert done["data"]["changed"] == 1


def test_request_id_reused_for_another_command_is_409(server: Server, token: str) -> None:
    request_id = unique("req")
    create(server, token, description="one", request_id=request_id)
    answer = server.rpc("create", token, expect=409, description="two", request_id=request_id)
    assert "request_id" in answer["error"]


def test_a_failure_is_not_remembered(server: Server, token: str) -> None:
    request_id = unique("req")
    server.rpc("create", token, expect=400, request_id=request_id)  # no description
    create(server, token, request_id=request_id)  # the retry, fixed, runs


@pytest.mark.parametrize("bad", ["", "  ", "x" * 256, 12, None, ["a"]])
def test_request_id_validation(app: InProcess, app_token: str, bad: Any) -> None:
    answer = app.rpc("create", app_token, expect=400, description="x", request_id=bad)
    assert "request_id" in answer["data"]["errors"]


def test_request_id_only_on_changing_actions(app: InProcess, app_token: str) -> None:
    answer = app.rpc("get", app_token, expect=400, id=1, request_id=unique("req"))
    assert "request_id" in answer["data"]["errors"]


def test_concurrent_duplicates_run_once(server: Server, token: str) -> None:
    request_id = unique("req")

    def send(_: int) -> dict:
        command = {"action": "create", "token": token, "description": "dup",
                   "request_id": request_id}  # fmt: skip
        return requests.post(f"{server.url}/rpc", json=command, timeout=60).json()

    answers = send_concurrently(16, 16, send)
    assert all(answer == answers[0] for answer in answers), answers
    assert answers[0]["status"] == 201


def test_request_id_expires(tight: Server) -> None:
    token, request_id = tight.login(), unique("req")
    first = create(tight, token, request_id=request_id)
    assert create(tight, token, request_id=request_id) == first
    time.sleep(1.5)  # about time itself: REQUEST_ID_TTL is 1 s on this server
    assert create(tight, token, request_id=request_id)["id"] != first["id"]


# --- resolve_many / update_many ---------------------------------------------------


def test_resolve_many_by_ids(server: Server, token: str) -> None:
    a, b, c = (create(server, token) for _ in range(3))
    server.rpc("resolve", token, expect=200, id=b["id"])
    missing = 2**62 + 1
    answer = server.rpc("resolve_many", token, expect=200, ids=[c["id"], a["id"], b["id"], missing],
                        resolution="storm over")  # fmt: skip
    data = answer["data"]
    assert data["changed"] == 2 and sorted(data["ids"]) == sorted([a["id"], c["id"]])
    assert sorted(data["skipped"], key=lambda s: s["id"]) == [
        {"id": b["id"], "reason": "already resolved"},
        {"id": missing, "reason": "not found"},
    ]
    for incident in (a, c):
        got = server.rpc("get", token, id=incident["id"])["data"]
        assert got["status"] == "completed" and got["resolution"] == "storm over"
        assert event_types(server, incident["id"]) == ["added", "resolved"]


def test_bulk_by_filter(server: Server, token: str) -> None:
    prefix = unique("storm") + ":"
    made = [create(server, token, dedup_key=f"{prefix}{n}", source="monitoring",
                   severity="low" if n % 2 else "high") for n in range(6)]  # fmt: skip
    create(server, token, dedup_key=unique("storm"), severity="low")  # another prefix
    wanted = {"dedup_key_prefix": prefix, "severity": "low"}
    answer = server.rpc("update_many", token, expect=200, filter=wanted, status="processing")
    low = [m["id"] for m in made if m["severity"] == "low"]
    assert answer["data"] == {"changed": 3, "ids": sorted(low), "skipped": []}
    again = server.rpc("update_many", token, filter=wanted, status="processing")["data"]
    assert again["changed"] == 0 and {s["reason"] for s in again["skipped"]} == {"unchanged"}
    everything = {"dedup_key_prefix": prefix, "status": ["new", "processing"]}
    resolved = server.rpc("resolve_many", token, expect=200, filter=everything)["data"]
    assert resolved["changed"] == 6
    # moved to processing unacknowledged: the update acknowledged them too
    assert event_types(server, low[0]) == ["added", "updated", "acknowledged", "resolved"]


def test_bulk_filter_by_time_and_literal_prefix(server: Server, token: str) -> None:
    base = unique("t%_")
    old = create(server, token, dedup_key=base + "old", date="2020-01-01T00:00:00Z")
    new = create(server, token, dedup_key=base + "new")
    create(server, token, dedup_key=base.replace("%_", "xy") + "old")  # % and _ are literal
    before = {"dedup_key_prefix": base, "created_before": "2021-01-01T00:00:00+00:00"}
    assert server.rpc("update_many", token, filter=before, severity="critical")["data"]["ids"] == [
        old["id"]
    ]
    after = {"dedup_key_prefix": base, "created_after": "2021-01-01T00:00:00Z"}
    assert server.rpc("resolve_many", token, filter=after)["data"]["ids"] == [new["id"]]
    exact = {"dedup_key": base + "old"}
    assert server.rpc("resolve_many", token, filter=exact)["data"]["ids"] == [old["id"]]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"ids": []},
        {"ids": [1], "filter": {"status": "new"}},
        {"filter": {}},
        {"filter": {"stauts": "new"}},
        {"filter": {"status": "bogus"}},
        {"filter": {"status": []}},
        {"ids": [0]},
        {"ids": ["1"]},
        {"filter": {"created_before": "yesterday"}},
    ],
)
def test_bulk_validation(app: InProcess, app_token: str, params: dict) -> None:
    app.rpc("resolve_many", app_token, expect=400, **params)
    app.rpc("update_many", app_token, expect=400, status="new", **params)


def test_update_many_needs_a_change(app: InProcess, app_token: str) -> None:
    app.rpc("update_many", app_token, expect=400, ids=[1])


def test_bulk_is_for_agents_and_admins(server: Server, agent: str, reporter: str) -> None:
    incident = create(server, reporter)
    server.rpc("resolve_many", reporter, expect=403, ids=[incident["id"]])
    server.rpc("update_many", reporter, expect=403, ids=[incident["id"]], severity="low")
    assert server.rpc("resolve_many", agent, expect=200, ids=[incident["id"]])["data"]["changed"]


def test_bulk_is_bounded_by_max_bulk(tight: Server) -> None:
    token, prefix = tight.login(), unique("bound")
    made = [create(tight, token, dedup_key=f"{prefix}{n}") for n in range(6)]
    ids = [m["id"] for m in made]
    assert "ids" in tight.rpc("resolve_many", token, expect=400, ids=ids)["data"]["errors"]
    answer = tight.rpc("resolve_many", token, expect=400, filter={"dedup_key_prefix": prefix})
    assert "MAX_BULK" in answer["error"]
    assert tight.rpc("get", token, id=ids[0])["data"]["status"] == "new"  # nothing changed
    assert tight.rpc("resolve_many", token, expect=200, ids=ids[:5])["data"]["changed"] == 5


# --- Alertmanager webhook: recorded payloads ---------------------------------------


def recorded(name: str, fingerprint: str) -> dict[str, Any]:
    """A payload that the real Alertmanager 0.25 sent, with a fresh fingerprint."""
    payload = json.loads((RECORDED / f"{name}.json").read_text())
    for alert in payload["alerts"]:
        alert["fingerprint"] = fingerprint
    return payload


def notify(server: Server, payload: Any, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return server.post("/integrations/alertmanager", payload, headers=headers)


def find_by_key(server: Server, token: str, key: str) -> list[dict[str, Any]]:
    page = server.rpc("get_all", token, source="monitoring", limit=1000)["data"]["incidents"]
    return [incident for incident in page if incident["dedup_key"] == key]


def test_alertmanager_recorded_payloads(server: Server, agent: str) -> None:
    fingerprint = uuid.uuid4().hex[:16]
    key = f"alertmanager:{fingerprint}"
    firing = notify(server, recorded("firing", fingerprint), agent)
    assert firing.status_code == 200, firing.text
    result = firing.json()["data"]["alerts"][0]["result"]
    assert result["status"] == 201
    incident = result["data"]
    assert incident["dedup_key"] == key and incident["source"] == "monitoring"
    assert incident["severity"] == "critical" and incident["title"] == "Disk almost full on db1"
    assert incident["description"] == "Less than 5% free on /var"
    assert incident["details"]["labels"]["instance"] == "db1:9100"
    assert incident["details"]["annotations"]["summary"] == "Disk almost full on db1"
    assert incident["created_at"].startswith("2026-11-23T02:19:44")
    repeat = notify(server, recorded("firing", fingerprint), agent).json()["data"]["alerts"][0]
    assert repeat["result"]["status"] == 200 and repeat["result"]["data"]["occurrences"] == 2
    resolved = notify(server, recorded("resolved", fingerprint), agent)
    assert resolved.status_code == 200
    assert resolved.json()["data"]["alerts"][0]["result"]["data"]["ids"] == [incident["id"]]
    [stored] = find_by_key(server, agent, key)
    assert stored["status"] == "completed" and stored["occurrences"] == 2
    again = notify(server, recorded("firing", fingerprint), agent).json()["data"]["alerts"][0]
    assert again["result"]["status"] == 201 and again["result"]["data"]["id"] != incident["id"]


def test_alertmanager_with_an_api_key(server: Server, token: str) -> None:
    """Monitoring sends an API key (of an agent) exactly like a token."""
    name = unique("alertmanager")[:40]
    key = server.rpc("key_create", token, expect=201, name=name, role="agent")["data"]["key"]
    fingerprint = uuid.uuid4().hex[:16]
    answer = notify(server, recorded("firing", fingerprint), key)
    assert answer.status_code == 200, answer.text
    incident = answer.json()["data"]["alerts"][0]["result"]["data"]
    assert incident["dedup_key"] == f"alertmanager:{fingerprint}"
    assert name in incident["created_by"]
    resolved = notify(server, recorded("resolved", fingerprint), key).json()["data"]["alerts"]
    assert resolved[0]["result"]["data"]["ids"] == [incident["id"]]
    reporter_key = server.rpc("key_create", token, expect=201, name=name + "-r")["data"]["key"]
    assert notify(server, recorded("firing", fingerprint), reporter_key).status_code == 403


def test_alertmanager_severity_only_when_ours(server: Server, agent: str) -> None:
    payload = recorded("firing", uuid.uuid4().hex[:16])
    payload["alerts"][0]["labels"]["severity"] = "warning"
    payload["alerts"].append(copy.deepcopy(payload["alerts"][0]))
    payload["alerts"][1]["fingerprint"] = uuid.uuid4().hex[:16]
    payload["alerts"][1]["labels"]["severity"] = "low"
    results = notify(server, payload, agent).json()["data"]["alerts"]
    assert [r["result"]["data"]["severity"] for r in results] == ["medium", "low"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.update(version="3"),
        lambda p: p.pop("alerts"),
        lambda p: p["alerts"][0].update(status="pending"),
        lambda p: p["alerts"][0].pop("fingerprint"),
        lambda p: p["alerts"][0].update(labels=["not", "a", "map"]),
    ],
)
def test_alertmanager_bad_payloads(server: Server, agent: str, mutate) -> None:
    payload = recorded("firing", uuid.uuid4().hex[:16])
    mutate(payload)
    response = notify(server, payload, agent)
    assert response.status_code == 400 and response.json()["status"] == 400


def test_alertmanager_needs_an_agent_token(server: Server, reporter: str) -> None:
    payload = recorded("firing", uuid.uuid4().hex[:16])
    assert notify(server, payload, None).status_code == 401
    assert notify(server, payload, "forged").status_code == 401
    assert notify(server, payload, reporter).status_code == 403
    assert server.post("/integrations/alertmanager", "not json").status_code in (400, 401)


# --- Alertmanager webhook: the real prometheus-alertmanager ------------------------


def alertmanager_binary() -> str:
    return system_tool("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")


class Alertmanager:
    """A real Alertmanager whose only receiver is our webhook, with intervals of a second."""

    def __init__(self, binary: str, directory: Path, webhook: str, token: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = directory / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: incident_rpc\n  group_by: ['alertname']\n"
            "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
            "receivers:\n- name: incident_rpc\n  webhook_configs:\n"
            f"  - url: {webhook}\n    send_resolved: true\n    http_config:\n"
            f"      authorization:\n        type: Bearer\n        credentials: {token}\n"
        )
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_until(lambda: requests.get(f"{self.url}/-/ready", timeout=1).ok, "ready")

    def wait_until(self, ready, what: str, seconds: float = 30) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "alertmanager exited"
            try:
                outcome = ready()
                if outcome:
                    return outcome
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"alertmanager: not {what} within {seconds} s")

    def post_alert(self, labels: dict, ends_at: datetime | None = None) -> None:
        alert: dict[str, Any] = {
            "labels": labels, "annotations": {"summary": f"{labels['alertname']} fired"},
            "startsAt": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        }  # fmt: skip
        if ends_at:
            alert["endsAt"] = ends_at.isoformat()
        requests.post(f"{self.url}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()

    def fingerprint(self, alertname: str) -> str | None:
        alerts = requests.get(f"{self.url}/api/v2/alerts", timeout=5).json()
        return next((a["fingerprint"] for a in alerts if a["labels"]["alertname"] == alertname),
                    None)  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_real_alertmanager_opens_and_resolves(server: Server, agent: str, tmp_path: Path) -> None:
    manager = Alertmanager(
        alertmanager_binary(), tmp_path, f"{server.url}/integrations/alertmanager", agent
    )
    try:
        labels = {"alertname": unique("ScooterFleetDown"), "severity": "critical", "zone": "b"}
        manager.post_alert(labels)
        fingerprint = manager.wait_until(lambda: manager.fingerprint(labels["alertname"]), "fed")
        key = f"alertmanager:{fingerprint}"
        [incident] = manager.wait_until(lambda: find_by_key(server, agent, key), "delivered")
        assert incident["severity"] == "critical" and incident["status"] == "new"
        assert incident["details"]["labels"] == labels
        assert incident["title"] == f"{labels['alertname']} fired"
        manager.post_alert(labels, ends_at=datetime.now(UTC))

        def resolved() -> bool:
            return find_by_key(server, agent, key)[0]["status"] == "completed"

        manager.wait_until(resolved, "resolved")
        assert event_types(server, incident["id"])[-1] == "resolved"
    finally:
        manager.stop()
