"""End-to-end tests: a real gunicorn on SQLite and PostgreSQL, driven over HTTP.

Covers the native command API (contract sections 1-5), the legacy dialect word
for word (5.1) and every kind of bad input of section 7.
"""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from itsdangerous import URLSafeTimedSerializer
from support import Server

TEST_SECRET = "test-secret-key"  # support.Server runs every server with this key


def forge_token(claims: dict, secret: str = TEST_SECRET, age: int = 0) -> str:
    """A token as the server would sign it, optionally issued `age` seconds ago."""

    class Aged(URLSafeTimedSerializer):
        def make_signer(self, salt=None):
            signer = super().make_signer(salt)
            signer.get_timestamp = lambda: int(datetime.now(UTC).timestamp()) - age
            return signer

    return Aged(secret, salt="incident-rpc-token").dumps(claims)


def tamper_signature(token: str) -> str:
    payload, signature = token.rsplit(".", 1)
    return f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


# -- authorization ----------------------------------------------------------------


def test_login_returns_a_bearer_token(server: Server) -> None:
    data = server.rpc("authorization", username="admin", password="admin-password-for-tests")[
        "data"
    ]
    assert data["token_type"] == "bearer" and data["expires_in"] == 3600
    expires = datetime.fromisoformat(data["expires_at"])
    assert 3590 < (expires - datetime.now(UTC)).total_seconds() <= 3600


@pytest.mark.parametrize(
    "credentials, status",
    [
        ({"username": "admin", "password": "wrong"}, 401),
        ({"username": "nobody", "password": "admin-password-for-tests"}, 401),
        ({"username": "admin"}, 400),
        ({"username": "admin", "password": ""}, 400),
        ({"username": 5, "password": "x"}, 400),
    ],
)
def test_bad_credentials(server: Server, credentials: dict, status: int) -> None:
    server.rpc("authorization", expect=status, **credentials)


def test_token_in_the_authorization_header(server: Server, token: str) -> None:
    response = server.post(
        "/rpc", {"action": "get_all", "limit": 1}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and response.json()["success"]


@pytest.mark.parametrize(
    "make_token, error",
    [
        (lambda good: None, "Token is required"),
        (lambda good: "", "Token is required"),
        (lambda good: good[:-3], "Invalid token"),
        (lambda good: tamper_signature(good), "Invalid token"),
        (lambda good: "not-a-token", "Invalid token"),
        (lambda good: 12345, "Invalid token"),
        (lambda good: ["x"], "Invalid token"),
        (lambda good: forge_token({"u": 1, "e": 0}, secret="another key"), "Invalid token"),
        (lambda good: forge_token({"u": 1, "e": 0}, age=3601), "Token is expired"),
        (lambda good: forge_token({"u": 987654, "e": 0}), "Invalid token"),
        (lambda good: forge_token({"u": 1, "e": 99}), "Invalid token"),
    ],
    ids=[
        "missing", "empty", "truncated", "tampered", "garbage", "number", "list",
        "other-key", "expired", "unknown-user", "revoked-epoch",
    ],
)  # fmt: skip
def test_bad_tokens_are_401(server: Server, token: str, make_token, error: str) -> None:
    body = {"action": "get_all"}
    bad = make_token(token)
    if bad is not None:
        body["token"] = bad
    envelope = server.post("/rpc", body).json()
    assert (envelope["status"], envelope["error"]) == (401, error)


# -- create, get ---------------------------------------------------------------------


def test_create_fills_defaults(server: Server, token: str) -> None:
    incident = server.rpc("create", token, expect=201, description="Scooter 875643 offline")["data"]
    assert incident["status"] == "new" and incident["version"] == 1
    assert (incident["severity"], incident["source"], incident["title"]) == (
        "medium",
        "unknown",
        None,
    )
    assert incident["created_by"] == "admin" and incident["resolved_at"] is None
    assert incident["created_at"] == incident["updated_at"]
    assert server.rpc("get", token, expect=200, id=incident["id"])["data"] == incident


def test_create_with_every_field(server: Server, token: str) -> None:
    incident = server.rpc(
        "create", token, expect=201, incident="Disk full on db-3", title="db-3 disk",
        severity="critical", source="partner", date="2026-01-17T18:30:00+02:00",
        details={"host": "db-3", "usage": [97, 99]},
    )["data"]  # fmt: skip
    assert incident["description"] == "Disk full on db-3"
    assert incident["created_at"] == "2026-01-17T16:30:00+00:00"
    assert incident["details"] == {"host": "db-3", "usage": [97, 99]}
    assert (incident["severity"], incident["source"]) == ("critical", "partner")


def test_naive_date_is_utc(server: Server, token: str) -> None:
    incident = server.rpc("create", token, expect=201, description="x", date="2026-02-01T08:00:00")[
        "data"
    ]
    assert incident["created_at"] == "2026-02-01T08:00:00+00:00"


def test_unknown_incident_is_404(server: Server, token: str) -> None:
    server.rpc("get", token, expect=404, id=2**62)
    server.rpc("update", token, expect=404, id=2**62, status="fake")
    server.rpc("resolve", token, expect=404, id=2**62)


# -- get_all ---------------------------------------------------------------------------


def test_filters_and_newest_first(server: Server, token: str) -> None:
    made = [
        server.rpc("create", token, description=f"filter {n}", severity="low", source="partner")[
            "data"
        ]["id"]
        for n in range(3)
    ]
    server.rpc("update", token, id=made[1], status="fake")
    listed = server.rpc(
        "get_all", token, expect=200, severity="low", source="partner", status="new", limit=1000
    )["data"]["incidents"]
    ids = [item["id"] for item in listed]
    assert made[2] in ids and made[0] in ids and made[1] not in ids
    assert ids.index(made[2]) < ids.index(made[0])
    assert all(i["severity"] == "low" and i["status"] == "new" for i in listed)


def collect_pages(server: Server, token: str, **filters) -> Iterator[list[dict]]:
    cursor = None
    while True:
        params = {**filters, **({"cursor": cursor} if cursor else {})}
        data = server.rpc("get_all", token, expect=200, **params)["data"]
        yield data["incidents"]
        cursor = data["next_cursor"]
        if cursor is None:
            return


def test_pages_neither_skip_nor_repeat_while_others_write(server: Server, token: str) -> None:
    tag = "keyset-" + datetime.now(UTC).isoformat()
    params = {"description": tag, "source": "partner", "severity": "high"}
    existing = {server.rpc("create", token, **params)["data"]["id"] for _ in range(23)}
    seen: list[int] = []
    for page in collect_pages(server, token, source="partner", severity="high", limit=4):
        seen += [item["id"] for item in page]
        # Writers keep adding while we page: none of them may shift the pages.
        server.rpc("create", token, **params)
    assert len(seen) == len(set(seen)), "an incident was repeated"
    assert existing <= set(seen), "an incident was skipped"


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"limit": "5"}, {"limit": 2.5}, {"cursor": "bm9wZQ"},
     {"cursor": 5}, {"status": "open"}, {"severity": "urgent"}, {"source": ""}],
)  # fmt: skip
def test_bad_list_params(server: Server, token: str, params: dict) -> None:
    errors = server.rpc("get_all", token, expect=400, **params)["data"]["errors"]
    assert set(errors) == set(params)


# -- update, resolve -----------------------------------------------------------------


def test_update_fields_and_version(server: Server, token: str) -> None:
    incident = server.rpc("create", token, description="update me")["data"]
    changed = server.rpc(
        "update", token, expect=200, id=incident["id"], status="processing", title="t",
        severity="high", version=1,
    )["data"]  # fmt: skip
    assert (changed["status"], changed["title"], changed["version"]) == ("processing", "t", 2)
    assert changed["updated_at"] > incident["updated_at"]
    stale = server.rpc("update", token, expect=409, id=incident["id"], status="new", version=1)
    assert "version 2" in stale["error"]
    same = server.rpc("update", token, expect=200, id=incident["id"], status="processing")["data"]
    assert same["version"] == 2, "a change that changes nothing is not a new version"
    server.rpc("update", token, expect=400, id=incident["id"])  # nothing to change
    done = server.rpc("update", token, id=incident["id"], status="completed")["data"]
    assert done["resolved_at"] is not None and done["resolved_by"] == "admin"
    reopened = server.rpc("update", token, id=incident["id"], status="processing")["data"]
    assert reopened["resolved_at"] is None


def test_resolve_once(server: Server, token: str) -> None:
    incident = server.rpc("create", token, description="resolve me")["data"]
    resolved = server.rpc("resolve", token, expect=200, id=incident["id"], resolution="reboot")[
        "data"
    ]
    assert resolved["status"] == "completed" and resolved["resolution"] == "reboot"
    assert resolved["resolved_by"] == "admin" and resolved["resolved_at"]
    again = server.rpc("resolve", token, expect=409, id=incident["id"])
    assert "already resolved" in again["error"]


def resolve_at_once(server: Server, token: str, incident_id: int, callers: int) -> list[int]:
    """`callers` threads resolve one incident at the same moment; their HTTP codes."""
    barrier, statuses = threading.Barrier(callers), []

    def resolve() -> None:
        barrier.wait()
        body = {"action": "resolve", "token": token, "id": incident_id}
        statuses.append(requests.post(f"{server.url}/rpc", json=body, timeout=30).status_code)

    threads = [threading.Thread(target=resolve) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_concurrent_resolves_exactly_one_wins(server: Server, token: str) -> None:
    for _ in range(3):
        incident = server.rpc("create", token, description="race")["data"]
        statuses = resolve_at_once(server, token, incident["id"], callers=6)
        assert sorted(statuses) == [200, 409, 409, 409, 409, 409]
        assert server.rpc("get", token, id=incident["id"])["data"]["version"] == 2


# -- the legacy dialect (contract 5.1), word for word ----------------------------------

STATUS_WORDS = "new, processing, completed, fake, unknown"
SOURCE_WORDS = "operator, monitoring, partner, unknown"


@pytest.fixture(scope="module")
def legacy_server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """A server of its own: the legacy list shows every incident, so it must start empty."""
    running = Server(new_database_url(), tmp_path_factory.mktemp("legacy")).start()
    yield running
    running.stop_soon()


def legacy_token(server: Server) -> str:
    answer = server.post(
        "/users/authorization/", {"username": "admin", "password": "admin-password-for-tests"}
    ).json()
    assert (answer["status"], answer["error"], answer["success"]) == (200, "", True)
    assert {"token", "expires_at"} <= set(answer["data"])
    return answer["data"]["token"]


def legacy(server: Server, path: str, body, status: int, error: str = "") -> dict:
    response = server.post(path, body, headers={"Content-Type": "text/plain"})
    answer = response.json()
    assert (response.status_code, answer["status"], answer["error"]) == (status, status, error)
    assert set(answer) == {"success", "error", "status", "data"}
    return answer


def test_legacy_walkthrough(legacy_server: Server) -> None:
    """The older service's own demo: authorize, create, list, update, list."""
    token = legacy_token(legacy_server)
    empty = legacy(legacy_server, "/incidents/get_all/", {"token": token}, 404)
    assert empty["success"] is True and empty["data"] == {"incidents": []}
    first = legacy(legacy_server, "/incidents/create/", {"token": token, "incident": "one",
                   "source": "operator", "date": "2026-01-01T10:00:00"}, 201)["data"]  # fmt: skip
    second = legacy(legacy_server, "/incidents/create", {"token": token, "incident": "two",
                    "source": "partner"}, 201)["data"]  # fmt: skip
    assert first["incident"] == "one" and first["created_at"] == "2026-01-01T10:00:00+00:00"
    listed = legacy(legacy_server, "/incidents/get_all/", {"token": token}, 200)["data"]
    assert [i["id"] for i in listed["incidents"]] == [first["id"], second["id"]]  # oldest first
    assert set(listed["incidents"][0]) == {"id", "incident", "status", "source", "created_at"}
    updated = legacy(legacy_server, "/incidents/update/", {"token": token, "id": str(second["id"]),
                     "status": "processing"}, 200)["data"]  # fmt: skip
    assert updated["status"] == "processing"
    only = legacy(legacy_server, "/incidents/get_all/", {"token": token, "status": "processing"},
                  200)["data"]["incidents"]  # fmt: skip
    assert [i["id"] for i in only] == [second["id"]]
    legacy(legacy_server, "/incidents/get_all/", {"token": token, "status": "fake"}, 404)


def test_legacy_list_streams_every_row(legacy_server: Server) -> None:
    """More rows than one streamed chunk (2,000), in order, as one valid JSON document."""
    token = legacy_token(legacy_server)
    batch = [{"action": "create", "token": token, "incident": f"bulk {n}", "source": "monitoring",
              "date": f"2025-06-01T00:00:{n % 60:02d}"} for n in range(2100)]  # fmt: skip
    for start in range(0, len(batch), 700):  # in batches (MAX_BATCH is 1000): a post each took 10 s
        answers = legacy_server.post("/rpc", batch[start : start + 700]).json()
        assert [answer["status"] for answer in answers] == [201] * 700, answers
    listed = legacy(legacy_server, "/incidents/get_all/", {"token": token}, 200)["data"]
    keys = [(i["created_at"], i["id"]) for i in listed["incidents"]]
    assert len(keys) >= 2100 and keys == sorted(keys)


@pytest.mark.parametrize(
    "path, body, status, error",
    [
        ("/users/authorization/", "username=admin&password=x", 400, "Invalid JSON"),
        ("/users/authorization/", "[1, 2]", 400, "Invalid JSON"),
        ("/users/authorization/", {"username": "admin"}, 401, "Invalid credentials"),
        ("/users/authorization/", {"username": "admin", "password": "no"}, 401,
         "Invalid credentials"),
        ("/users/authorization/", {"username": ["admin"], "password": {}}, 401,
         "Invalid credentials"),
        ("/users/authorization/", {"username": "ad\u0000min", "password": "x"}, 401,
         "Invalid credentials"),
        ("/incidents/create/", {"incident": "x", "source": "operator"}, 400, "Token is required"),
        ("/incidents/create/", {"token": "bad", "incident": "x"}, 401, "Invalid token"),
        ("/incidents/create/", {"token": forge_token({"u": 1, "e": 0}, age=7200)}, 401,
         "Token is expired"),
        ("/incidents/create/", {"token": "$T", "source": "operator"}, 400, "Incident is required"),
        ("/incidents/create/", {"token": "$T", "incident": " ", "source": "operator"}, 400,
         "Incident is required"),
        ("/incidents/create/", {"token": "$T", "incident": "x"}, 400,
         f"Source is required or wrong, use one of: {SOURCE_WORDS}"),
        ("/incidents/create/", {"token": "$T", "incident": "x", "source": "web"}, 400,
         f"Source is required or wrong, use one of: {SOURCE_WORDS}"),
        ("/incidents/create/", {"token": "$T", "incident": "x", "source": "operator",
                                "date": "17/01/2026"}, 400, "Wrong date format"),
        ("/incidents/get_all/", {"token": "$T", "status": "open"}, 400,
         f"Status must be one of: {STATUS_WORDS}"),
        ("/incidents/update/", {"token": "$T", "status": "new"}, 400, "ID is required"),
        ("/incidents/update/", {"token": "$T", "id": None, "status": "new"}, 400,
         "ID is required"),
        ("/incidents/update/", {"token": "$T", "id": 0, "status": "new"}, 400, "ID is required"),
        ("/incidents/update/", {"token": "$T", "id": "four", "status": "new"}, 400,
         "ID must be numeric"),
        ("/incidents/update/", {"token": "$T", "id": 4.5, "status": "new"}, 400,
         "ID must be numeric"),
        ("/incidents/update/", {"token": "$T", "id": True, "status": "new"}, 400,
         "ID must be numeric"),
        ("/incidents/update/", {"token": "$T", "id": 1}, 400,
         f"Status is required or wrong, use one of: {STATUS_WORDS}"),
        ("/incidents/update/", {"token": "$T", "id": 1, "status": "done"}, 400,
         f"Status is required or wrong, use one of: {STATUS_WORDS}"),
        ("/incidents/update/", {"token": "$T", "id": 2**40, "status": "new"}, 404,
         "Incident have not found"),
        ("/incidents/update/", {"token": "$T", "id": "99999999", "status": "new"}, 404,
         "Incident have not found"),
    ],
)  # fmt: skip
def test_legacy_messages(legacy_server: Server, path, body, status, error) -> None:
    if isinstance(body, dict) and body.get("token") == "$T":
        body = {**body, "token": legacy_token(legacy_server)}
    legacy(legacy_server, path, body, status, error)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/users/authorization/", "/incidents/get_all/", "/rpc"])
def test_only_post(server: Server, method: str, path: str) -> None:
    response = server.session.request(method, f"{server.url}{path}?token=x&status=new", timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.json() == {"success": False, "error": "POST required", "status": 405,
                               "data": {}}  # fmt: skip


# -- bad input never hurts (contract section 7) ----------------------------------------

NESTED = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "body, status",
    [
        (b"\x00\xff\xfe garbage", 400),
        (b'{"action": "get_all", "x": "\xff"}', 400),
        (b"", 400),
        (b"{", 400),
        (NESTED, 400),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, 400),
        ("42", 400),
        ('"create"', 400),
        ("null", 400),
        ('{"action": "get", "id": NaN}', 400),
        ('{"action": "get", "id": 1' + "0" * 5000 + "}", 400),
        (json.dumps({"action": 5}), 400),
        (json.dumps({"token": "x"}), 400),
        (json.dumps({"action": "no_such_action"}), 404),
        (json.dumps({"action": "create\u0000"}), 404),
        (b"x" * (1024 * 1024 + 1), 413),
    ],
    ids=[
        "binary", "bad-utf8", "empty", "truncated", "deep-array", "deep-object", "scalar",
        "string", "null", "nan", "huge-number-literal", "action-not-string", "no-action",
        "unknown-action", "nul-in-action", "oversize",
    ],
)  # fmt: skip
def test_malformed_bodies(server: Server, body, status: int) -> None:
    # A fresh connection: after a 413 the server drops the connection (the unread body).
    response = requests.post(f"{server.url}/rpc", data=body, timeout=30)
    assert response.status_code == status
    assert response.json()["status"] == status and not response.json()["success"]


BAD_PARAMS = [
    ("create", {"description": "nul \u0000 inside"}, "description"),
    ("create", {"description": ""}, "description"),
    ("create", {"description": " \t\n "}, "description"),
    ("create", {"description": "x" * 10001}, "description"),
    ("create", {"description": 5}, "description"),
    ("create", {"description": "x", "title": "t" * 201}, "title"),
    ("create", {"description": "x", "title": "a\u0000"}, "title"),
    ("create", {"description": "x", "severity": "urgent"}, "severity"),
    ("create", {"description": "x", "source": "MONITORING"}, "source"),
    ("create", {"description": "x", "date": "yesterday"}, "date"),
    ("create", {"description": "x", "date": "2026-13-45T00:00:00"}, "date"),
    ("create", {"description": "x", "date": 1700000000}, "date"),
    ("create", {"description": "x", "details": [1, 2]}, "details"),
    ("create", {"description": "x", "stauts": "new"}, "stauts"),
    ("create", {"description": "x", "incident": "y"}, "incident"),
    ("get", {"id": 2**64}, "id"),
    ("get", {"id": -2**70}, "id"),
    ("get", {"id": 0}, "id"),
    ("get", {"id": 1.0}, "id"),
    ("get", {"id": True}, "id"),
    ("get", {"id": "1"}, "id"),
    ("get", {"id": None}, "id"),
    ("get", {}, "id"),
    ("update", {"id": 1, "status": "closed"}, "status"),
    ("update", {"id": 1, "version": 1.5, "status": "new"}, "version"),
    ("update", {"id": 1, "version": 2**70, "status": "new"}, "version"),
    ("update", {"id": 1, "description": "\u0000"}, "description"),
    ("resolve", {"id": 1, "resolution": "\u0000"}, "resolution"),
]  # fmt: skip


@pytest.mark.parametrize("action, params, field", BAD_PARAMS)
def test_bad_parameters_name_the_field(server: Server, token: str, action, params, field) -> None:
    envelope = server.rpc(action, token, expect=400, **params)
    assert field in envelope["data"]["errors"], envelope


def test_service_keeps_serving_after_bad_input(server: Server, token: str) -> None:
    for body in (NESTED, b"\xff" * 1000, "[" * 5000):
        server.post("/rpc", body)
    assert server.rpc("get_all", token, expect=200, limit=1)["success"]


def test_errors_leak_no_internals(server: Server, token: str) -> None:
    for body in (b"{", json.dumps({"action": "get", "token": token, "id": "1; DROP"})):
        text = server.post("/rpc", body).text
        for leak in ("Traceback", "SELECT", "sqlalchemy", "psycopg2", TEST_SECRET):
            assert leak not in text
