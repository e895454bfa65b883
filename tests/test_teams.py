"""Teams and access on SQLite and PostgreSQL: the tables on the in-process app, what
crosses worker processes or instances on real gunicorn servers.

Who may do what (a test per cell of the role table), that no action leaks another
reporter's incidents, API keys, session revocation, user management, login
throttling shared across instances, assignment, comments and the audit trail.
"""

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from support import InProcess, Server, wait_for
from werkzeug.security import check_password_hash, generate_password_hash

from incident_rpc.access import auth

PASSWORD = "correct horse battery"


def unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(4)}"


@dataclass
class Cast:
    """The people (and keys) a test needs, made through the admin's own API."""

    server: Server | InProcess
    admin: str  # the admin's token
    cached: dict[str, tuple[str, str]] = field(default_factory=dict)

    def user(self, role: str, password: str = PASSWORD) -> tuple[str, str]:
        """A fresh user with this role: (username, token)."""
        name = unique(role)
        self.server.rpc(
            "user_create", self.admin, expect=201, username=name, password=password, role=role
        )
        return name, self.server.login(name, password)

    def key(self, role: str = "reporter") -> tuple[str, str, int]:
        """A fresh API key: (the name it acts as, the key, its id)."""
        name = unique("monitor")
        made = self.server.rpc("key_create", self.admin, expect=201, name=name, role=role)["data"]
        return f"key:{name}", made["key"], made["id"]

    def member(self, column: str, fresh: bool = False) -> tuple[str, str]:
        """Who acts in a column of the role table: (actor name, credential)."""
        if fresh:  # for actions that end the member's sessions
            return self.key()[:2] if column == "key" else self.user(self.role_of(column))
        if column not in self.cached:
            self.cached[column] = self.member(column, fresh=True)
        return self.cached[column]

    @staticmethod
    def role_of(column: str) -> str:
        return "reporter" if column in ("stranger", "key") else column

    def incident(self, credential: str) -> int:
        made = self.server.rpc("create", credential, expect=201, description="Pump 7 is down")
        return made["data"]["id"]

    def history(self, incident_id: int) -> list[dict[str, Any]]:
        return self.server.rpc("history", self.admin, expect=200, id=incident_id)["data"]["events"]

    def history_actors(self, incident_id: int) -> set[str]:
        return {event["actor"] for event in self.history(incident_id)}


@pytest.fixture(scope="module")
def cast(app: InProcess, app_token: str) -> Cast:
    """The tables' cast, on the in-process app (the fast tier)."""
    return Cast(app, app_token)


@pytest.fixture(scope="module")
def served_cast(server: Server, token: str) -> Cast:
    """For what crosses worker processes (a credential ended in one, refused in all)."""
    return Cast(server, token)


# ---------------------------------------------------------------------------
# The role table: one test per cell. Columns: an admin, an agent, a reporter on
# its own incident, a reporter's API key on its own incident, and a reporter on
# another reporter's incident ("stranger"; only where an incident is involved).

COLUMNS = ("admin", "agent", "reporter", "key", "stranger")
INCIDENT_ACTIONS = {
    "get", "update", "resolve", "acknowledge", "assign", "comment", "comments", "history",
}  # fmt: skip
TABLE: dict[str, tuple[int, int, int, int, int | None]] = {
    "whoami": (200, 200, 200, 200, None),
    "logout": (200, 200, 200, 403, None),
    "password_change": (200, 200, 200, 403, None),
    "user_create": (201, 403, 403, 403, None),
    "user_list": (200, 403, 403, 403, None),
    "user_update": (200, 403, 403, 403, None),
    "key_create": (201, 403, 403, 403, None),
    "key_list": (200, 403, 403, 403, None),
    "key_revoke": (200, 403, 403, 403, None),
    "create": (201, 201, 201, 201, None),
    "get_all": (200, 200, 200, 200, None),
    "get": (200, 200, 200, 200, 404),
    "update": (200, 200, 403, 403, 403),
    "resolve": (200, 200, 403, 403, 403),
    "acknowledge": (200, 200, 403, 403, 403),
    "assign": (200, 200, 403, 403, 403),
    "comment": (201, 201, 201, 201, 404),
    "comments": (200, 200, 200, 200, 404),
    "history": (200, 200, 200, 200, 404),
}
CELLS = [
    pytest.param(name, column, expected, id=f"{name}-{column}")
    for name, row in TABLE.items()
    for column, expected in zip(COLUMNS, row, strict=True)
    if expected is not None
]


def cell_params(cast: Cast, name: str, column: str, credential: str) -> dict[str, Any]:
    """Parameters that would succeed for a caller allowed to run the action."""
    if name in INCIDENT_ACTIONS:
        if column in ("reporter", "key"):
            owner = credential  # its own incident
        else:  # admin, agent: another's; stranger: another reporter's
            owner = cast.member("reporter", fresh=column == "stranger")[1]
        incident_id = cast.incident(owner)
        extra = {
            "update": {"status": "processing"},
            "assign": {"assignee": cast.member("agent")[0]},
            "comment": {"text": "Technician on the way"},
        }
        return {"id": incident_id, **extra.get(name, {})}
    if name == "password_change":
        return {"old_password": PASSWORD, "new_password": "a brand new password"}
    if name == "user_create":
        return {"username": unique("newbie"), "password": PASSWORD, "role": "reporter"}
    if name == "user_update":
        return {"username": cast.user("reporter")[0], "role": "agent"}
    if name == "key_create":
        return {"name": unique("probe")}
    if name == "key_revoke":
        return {"id": cast.key()[2]}
    if name == "create":
        return {"description": "Substation 4 offline"}
    return {}


@pytest.mark.parametrize(("name", "column", "expected"), CELLS)
def test_role_table(cast: Cast, name: str, column: str, expected: int) -> None:
    actor, credential = cast.member(column, fresh=name in ("logout", "password_change"))
    params = cell_params(cast, name, column, credential)
    trail = cast.history(params["id"]) if name in INCIDENT_ACTIONS else None
    answer = cast.server.rpc(name, credential, expect=expected, **params)
    if expected >= 400:  # a refusal leaves no trace
        if trail is not None:
            assert cast.history(params["id"]) == trail
        if name == "user_create":
            users = cast.server.rpc("user_list", cast.admin, expect=200)["data"]["users"]
            assert params["username"] not in {user["username"] for user in users}
        return
    if name == "whoami":
        assert answer["data"] == {
            "username": actor,
            "role": "reporter" if column == "key" else column,
        }
    if name == "get_all" and column in ("reporter", "key"):
        assert {item["created_by"] for item in answer["data"]["incidents"]} <= {actor}


# ---------------------------------------------------------------------------
# No leaks: a reporter learns nothing about another reporter's incidents.


def test_no_action_leaks_another_reporters_incident(cast: Cast) -> None:
    server = cast.server
    owner, owner_token = cast.user("reporter")
    secret = cast.incident(owner_token)
    server.rpc("comment", owner_token, expect=201, id=secret, text="private note")
    agent = cast.member("agent")[0]
    server.rpc("assign", cast.admin, expect=200, id=secret, assignee=agent)
    for _, credential in (cast.user("reporter"), cast.key()[:2]):
        missing = 10**15
        absent = server.rpc("get", credential, expect=404, id=missing)["error"]
        for name, extra in (
            ("get", {}),
            ("comments", {}),
            ("history", {}),
            ("comment", {"text": "hi"}),
        ):
            answer = server.rpc(name, credential, expect=404, id=secret, **extra)
            assert answer["error"] == absent.replace(str(missing), str(secret))
        for filters in ({}, {"created_by": owner}, {"assignee": agent}, {"status": "new"}):
            page = server.rpc("get_all", credential, expect=200, limit=1000, **filters)["data"]
            assert secret not in {item["id"] for item in page["incidents"]}
            assert owner not in {item["created_by"] for item in page["incidents"]}
        legacy = server.post("/incidents/get_all/", {"token": credential})
        assert legacy.status_code in (200, 404)
        assert owner not in legacy.text and secret not in {
            item["id"] for item in legacy.json()["data"]["incidents"]
        }
        assert (
            server.post("/incidents/get/", {"token": credential, "id": secret}).status_code == 404
        )
    assert cast.history_actors(secret) == {owner, "admin"}  # nobody else left a trace


def test_agent_reads_everything_and_filters_by_creator_and_assignee(cast: Cast) -> None:
    server = cast.server
    agent, agent_token = cast.user("agent")
    reporter, reporter_token = cast.user("reporter")
    mine = [cast.incident(reporter_token) for _ in range(3)]
    server.rpc("assign", agent_token, expect=200, id=mine[0], assignee=agent)
    server.rpc("update", agent_token, expect=200, id=mine[1], assignee=agent, severity="high")
    by_creator = server.rpc("get_all", agent_token, expect=200, created_by=reporter)["data"]
    assert [item["id"] for item in by_creator["incidents"]] == mine[::-1]
    assigned = server.rpc("get_all", agent_token, expect=200, assignee=agent)["data"]
    assert [item["id"] for item in assigned["incidents"]] == [mine[1], mine[0]]
    unassigned = server.rpc("get_all", agent_token, expect=200, assignee=None, created_by=reporter)
    assert [item["id"] for item in unassigned["data"]["incidents"]] == [mine[2]]


# ---------------------------------------------------------------------------
# API keys


def test_api_key_works_until_revoked_and_not_one_request_after(served_cast: Cast) -> None:
    server = served_cast.server
    actor, key, key_id = served_cast.key()
    by_body = server.rpc("create", key, expect=201, description="Disk 91% full")["data"]
    assert by_body["created_by"] == actor
    header = {"Authorization": f"Bearer {key}"}
    by_header = server.post("/rpc", {"action": "create", "description": "Disk 95%"}, headers=header)
    assert by_header.status_code == 201 and by_header.json()["data"]["created_by"] == actor
    assert server.rpc("get", key, expect=200, id=by_body["id"])["data"]["id"] == by_body["id"]
    listing = server.post("/rpc", {"action": "key_list", "token": served_cast.admin})
    assert key not in listing.text and "hash" not in listing.text
    (row,) = [k for k in listing.json()["data"]["keys"] if k["id"] == key_id]
    assert row["prefix"] == key[:12] and row["last_used_at"] and row["revoked"] is False

    server.rpc("key_revoke", served_cast.admin, expect=200, id=key_id)
    server.rpc("create", key, expect=401, description="after revocation")

    def attempt(_: int) -> int:
        body = {"action": "create", "token": key, "description": "after revocation"}
        return server.post("/rpc", body).status_code

    with ThreadPoolExecutor(8) as pool:  # every worker process refuses it
        assert set(pool.map(attempt, range(24))) == {401}
    made = server.rpc("get_all", served_cast.admin, expect=200, created_by=actor)["data"][
        "incidents"
    ]
    assert len(made) == 2
    listed = server.rpc("key_list", served_cast.admin, expect=200)["data"]["keys"]
    assert [k["revoked"] for k in listed if k["id"] == key_id] == [True]
    server.rpc("key_revoke", served_cast.admin, expect=200, id=key_id)  # again: no change
    server.rpc("key_revoke", served_cast.admin, expect=404, id=10**15)


def test_credentials_ended_on_another_instance_fail_here_within_the_cache_time(
    served_cast: Cast, tmp_path
) -> None:
    """A worker keeps the keys it found live and the users that tokens name
    (API_KEY_CACHE_SECONDS, TOKEN_CACHE_SECONDS); the count that ends them at once is
    shared by one instance's workers only, so another instance on the same database
    accepts a revoked key, or a token whose user logged out, for at most that long."""
    server, ttl = served_cast.server, 2.0
    other = Server(server.database_url, tmp_path, workers=1, API_KEY_CACHE_SECONDS=str(ttl),
                   TOKEN_CACHE_SECONDS=str(ttl))  # fmt: skip
    other.start()
    _, key, key_id = served_cast.key()
    _, token = served_cast.user("agent")
    endings = {
        key: lambda: server.rpc("key_revoke", served_cast.admin, expect=200, id=key_id),
        token: lambda: server.rpc("logout", token, expect=200),
    }
    try:
        for credential, end in endings.items():

            def status(credential: str = credential) -> int:
                return other.post("/rpc", {"action": "whoami", "token": credential}).status_code

            assert status() == 200  # the other instance now keeps it
            end()
            ended = time.monotonic()
            server.rpc("whoami", credential, expect=401)  # where it ended: at once
            wait_for(lambda: status() == 401, ttl + 5, "the other instance kept accepting it")
            assert time.monotonic() - ended < ttl + 1
            assert {status() for _ in range(20)} == {401}  # and it does not come back
    finally:
        other.stop_soon()


def test_a_key_revoked_is_refused_by_the_next_request_of_a_worker_that_kept_it(
    served_cast: Cast,
) -> None:
    """Every worker of the server has kept the key (many requests, two workers); the
    revocation's commit ends what each kept: not one more request is accepted."""
    server = served_cast.server
    _, key, key_id = served_cast.key()

    def attempt(_: int) -> int:
        return server.post("/rpc", {"action": "whoami", "token": key}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(attempt, range(48))) == {200}
        server.rpc("key_revoke", served_cast.admin, expect=200, id=key_id)
        assert set(pool.map(attempt, range(48))) == {401}


def test_agent_key_may_change_incidents(cast: Cast) -> None:
    _, key, _ = cast.key(role="agent")
    incident_id = cast.incident(cast.member("reporter")[1])
    server = cast.server
    server.rpc("resolve", key, expect=200, id=incident_id, resolution="auto-healed")


@pytest.mark.parametrize(
    "credential",
    ["irk_", "irk_" + "A" * 43, "irk_\u00e9\u00e9", "irk_" + "x" * 2000],
    ids=["bare-prefix", "unknown", "non-ascii", "oversize"],
)
def test_unknown_or_malformed_key_is_401(app: InProcess, credential: str) -> None:
    app.rpc("whoami", credential, expect=401)


# ---------------------------------------------------------------------------
# Sessions


def test_logout_ends_every_session_of_the_caller(served_cast: Cast) -> None:
    name, first = served_cast.user("agent")
    second = served_cast.server.login(name, PASSWORD)
    other_user = served_cast.user("agent")[1]
    served_cast.server.rpc("logout", first, expect=200)
    served_cast.server.rpc("whoami", first, expect=401)
    served_cast.server.rpc("whoami", second, expect=401)
    served_cast.server.rpc("whoami", other_user, expect=200)
    served_cast.server.rpc("whoami", served_cast.server.login(name, PASSWORD), expect=200)


def test_password_change_ends_sessions_and_answers_a_fresh_token(served_cast: Cast) -> None:
    server = served_cast.server
    name, first = served_cast.user("reporter")
    second = server.login(name, PASSWORD)
    server.rpc("password_change", first, expect=400, old_password="wrong!!!", new_password="x" * 8)
    server.rpc("whoami", first, expect=200)  # a wrong old password changes nothing
    new = "another good password"
    fresh = server.rpc(
        "password_change", first, expect=200, old_password=PASSWORD, new_password=new
    )
    server.rpc("whoami", first, expect=401)
    server.rpc("whoami", second, expect=401)
    server.rpc("whoami", fresh["data"]["token"], expect=200)
    server.rpc("authorization", username=name, password=PASSWORD, expect=401)
    server.login(name, new)


def test_disabling_a_user_ends_sessions_for_good(served_cast: Cast) -> None:
    server = served_cast.server
    name, token = served_cast.user("agent")
    user = server.rpc("user_update", served_cast.admin, expect=200, username=name, disabled=True)[
        "data"
    ]
    assert user == {**user, "username": name, "disabled": True, "role": "agent"}
    server.rpc("whoami", token, expect=401)
    server.rpc("authorization", username=name, password=PASSWORD, expect=401)
    server.rpc("user_update", served_cast.admin, expect=200, username=name, disabled=False)
    server.rpc("whoami", token, expect=401)  # enabling again revives no old token
    server.rpc("whoami", server.login(name, PASSWORD), expect=200)


def test_admin_password_reset_and_role_change(served_cast: Cast) -> None:
    server = served_cast.server
    name, token = served_cast.user("agent")
    incident_id = served_cast.incident(token)
    server.rpc("user_update", served_cast.admin, expect=200, username=name, role="reporter")
    server.rpc("update", token, expect=403, id=incident_id, status="processing")  # at once
    server.rpc(
        "user_update", served_cast.admin, expect=200, username=name, password="reset password 1"
    )
    server.rpc("whoami", token, expect=401)
    server.login(name, "reset password 1")
    server.rpc(
        "user_update", served_cast.admin, expect=404, username=unique("nobody"), disabled=True
    )
    server.rpc("user_update", served_cast.admin, expect=400, username=name)  # nothing to change


def test_a_kept_token_ends_at_the_next_request_of_every_worker(served_cast: Cast) -> None:
    """Both workers have kept the user each token names (many requests in parallel); a
    logout, a disabling and a demotion each commit, and not one more request is served
    as before (access/revocations.py)."""
    server = served_cast.server

    def statuses(token: str, action: str = "whoami") -> set[int]:
        def attempt(_: int) -> int:
            return server.post("/rpc", {"action": action, "token": token}).status_code

        with ThreadPoolExecutor(8) as pool:
            return set(pool.map(attempt, range(48)))

    _, token = served_cast.user("agent")
    assert statuses(token) == {200}
    server.rpc("logout", token, expect=200)
    assert statuses(token) == {401}

    name, token = served_cast.user("agent")
    assert statuses(token) == {200}
    server.rpc("user_update", served_cast.admin, expect=200, username=name, disabled=True)
    assert statuses(token) == {401}

    name, token = served_cast.user("agent")
    assert statuses(token, "silence_list") == {200}  # an agent's action
    server.rpc("user_update", served_cast.admin, expect=200, username=name, role="reporter")
    assert statuses(token, "silence_list") == {403}


# ---------------------------------------------------------------------------
# User management


def test_user_list_never_shows_a_secret(cast: Cast) -> None:
    name, _ = cast.user("reporter")
    listing = cast.server.post("/rpc", {"action": "user_list", "token": cast.admin})
    users = listing.json()["data"]["users"]
    (mine,) = [user for user in users if user["username"] == name]
    assert set(mine) == {"username", "role", "disabled", "created_at"}
    assert (
        "scrypt" not in listing.text and "pbkdf2" not in listing.text and "hash" not in listing.text
    )


def test_duplicate_username_is_409(cast: Cast) -> None:
    name, _ = cast.user("reporter")
    for taken in (name, name.upper()):
        cast.server.rpc(
            "user_create", cast.admin, expect=409, username=taken, password=PASSWORD, role="agent"
        )


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("username", "ab"),
        ("username", "x" * 65),
        ("username", "key:nagios"),
        ("username", "-dash-first"),
        ("username", "with space"),
        ("username", 12345),
        ("password", "short77"),
        ("password", "p" * 257),
        ("password", "nul\x00in the middle"),
        ("role", "root"),
    ],
)
def test_user_create_bounds(cast: Cast, field_name: str, value: Any) -> None:
    params = {"username": unique("bounded"), "password": PASSWORD, "role": "reporter"}
    params[field_name] = value
    answer = cast.server.rpc("user_create", cast.admin, expect=400, **params)
    assert field_name in answer["data"]["errors"]


def test_register_is_an_unknown_action_when_disabled(app: InProcess) -> None:
    unknown = app.rpc("no_such_action", expect=404)["error"]
    for params in ({"username": unique("walkin"), "password": PASSWORD}, {"bogus": 1}):
        answer = app.rpc("register", expect=404, **params)
        assert answer["error"] == unknown.replace("no_such_action", "register")


# ---------------------------------------------------------------------------
# A pair of instances on one database, with registration and a short throttle.

THROTTLE = {"window": 4, "per_name": 3, "per_address": 6}


@pytest.fixture(scope="module")
def pair(new_database_url, tmp_path_factory) -> Iterator[tuple[Server, Server]]:
    url = new_database_url()
    env = {
        "REGISTRATION_ENABLED": "1",
        "LOGIN_THROTTLE_WINDOW": str(THROTTLE["window"]),
        "LOGIN_MAX_FAILURES": str(THROTTLE["per_name"]),
        "LOGIN_MAX_FAILURES_PER_ADDRESS": str(THROTTLE["per_address"]),
        "PROXY_FIX_X_FOR": "1",  # the tests play several addresses with X-Forwarded-For
    }
    first = Server(url, tmp_path_factory.mktemp("first"), workers=1, **env).start()
    try:
        second = Server(url, tmp_path_factory.mktemp("second"), workers=1, **env).start()
    except Exception:
        first.stop()
        raise
    yield first, second
    second.stop_soon()
    first.stop_soon()


def sign_in(server: Server, address: str, username: str, password: str) -> dict[str, Any]:
    body = {"action": "authorization", "username": username, "password": password}
    response = server.post("/rpc", body, headers={"X-Forwarded-For": address})
    envelope = response.json()
    assert response.status_code == envelope["status"], envelope
    return envelope


def new_address() -> str:
    return "10." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))


def test_register_makes_a_reporter(pair: tuple[Server, Server]) -> None:
    server = pair[0]
    name = unique("walkin")
    user = server.rpc("register", expect=201, username=name, password=PASSWORD)["data"]
    assert user == {**user, "username": name, "role": "reporter", "disabled": False}
    token = server.login(name, PASSWORD)
    server.rpc("create", token, expect=201, description="Street light out")
    server.rpc("user_list", token, expect=403)
    server.rpc("register", expect=409, username=name, password=PASSWORD)
    server.rpc("register", expect=400, username=unique("walkin"), password="short")


def test_the_last_active_admin_cannot_be_removed(pair: tuple[Server, Server]) -> None:
    server = pair[0]
    admin = server.login()
    for change in ({"disabled": True}, {"role": "agent"}):
        server.rpc("user_update", admin, expect=409, username="admin", **change)
    server.rpc("whoami", admin, expect=200)


def test_failures_for_one_name_answer_429_on_every_instance_then_recover(
    pair: tuple[Server, Server],
) -> None:
    first, second = pair
    name = unique("victim")
    first.rpc("register", expect=201, username=name, password=PASSWORD)
    attacker, victim, bystander = new_address(), new_address(), new_address()
    for attempt in range(THROTTLE["per_name"]):  # alternate instances: the count is shared
        server = (first, second)[attempt % 2]
        assert sign_in(server, attacker, name, "wrong password")["status"] == 401
    for server in (first, second):
        refused = sign_in(server, attacker, name, PASSWORD)  # even the right password
        assert refused["status"] == 429
        assert 1 <= refused["data"]["retry_after"] <= THROTTLE["window"]
    assert sign_in(second, victim, name, PASSWORD)["status"] == 200  # not locked out
    assert sign_in(first, attacker, unique("other"), "wrong password")["status"] == 401
    assert sign_in(first, bystander, name, "wrong password")["status"] == 401
    time.sleep(refused["data"]["retry_after"] + 0.2)  # about time itself: the retry_after
    assert sign_in(first, attacker, name, PASSWORD)["status"] == 200


def test_unknown_names_count_like_wrong_passwords(pair: tuple[Server, Server]) -> None:
    address, ghost = new_address(), unique("ghost")
    for _ in range(THROTTLE["per_name"]):
        assert sign_in(pair[1], address, ghost, "whatever it is")["status"] == 401
    assert sign_in(pair[0], address, ghost, "whatever it is")["status"] == 429


def test_an_unknown_name_checks_a_hash_made_as_new_passwords_are() -> None:
    """The hash an unknown username is checked against is written out in access/auth.py:
    it must be of the method (and cost) werkzeug gives new passwords, or a wrong name
    would answer sooner or later than a wrong password."""
    method = generate_password_hash("a new password").split("$")[0]
    assert auth._DUMMY_HASH.split("$")[0] == method
    assert not check_password_hash(auth._DUMMY_HASH, "not a real password")


def test_failures_from_one_address_answer_429_for_any_name(pair: tuple[Server, Server]) -> None:
    first, second = pair
    sprayer, elsewhere = new_address(), new_address()
    for attempt in range(THROTTLE["per_address"]):
        server = (first, second)[attempt % 2]
        assert sign_in(server, sprayer, unique("guess"), "Winter2026!")["status"] == 401
    refused = sign_in(first, sprayer, "admin", "admin-password-for-tests")
    assert refused["status"] == 429 and refused["data"]["retry_after"] >= 1
    assert sign_in(second, elsewhere, "admin", "admin-password-for-tests")["status"] == 200


# ---------------------------------------------------------------------------
# Assignment, comments, history


def test_assign_takes_only_active_agents(cast: Cast) -> None:
    server = cast.server
    agent, agent_token = cast.user("agent")
    reporter, reporter_token = cast.user("reporter")
    incident_id = cast.incident(reporter_token)
    assigned = server.rpc("assign", agent_token, expect=200, id=incident_id, assignee=agent)
    assert assigned["data"]["assignee"] == agent and assigned["data"]["version"] == 2
    for nobody in (reporter, unique("ghost"), "key:anything"):
        answer = server.rpc("assign", agent_token, expect=400, id=incident_id, assignee=nobody)
        assert "assignee" in answer["data"]["errors"]
    server.rpc("update", agent_token, expect=400, id=incident_id, assignee=reporter)
    idle, _ = cast.user("agent")
    server.rpc("user_update", cast.admin, expect=200, username=idle, disabled=True)
    server.rpc("assign", agent_token, expect=400, id=incident_id, assignee=idle)
    cleared = server.rpc("assign", agent_token, expect=200, id=incident_id, assignee=None)
    assert cleared["data"]["assignee"] is None
    server.rpc("assign", agent_token, expect=404, id=10**15, assignee=None)
    assert server.rpc("get", reporter_token, expect=200, id=incident_id)["data"]["version"] == 3


def test_comments_oldest_first_and_history_tells_every_change(cast: Cast) -> None:
    server = cast.server
    agent, agent_token = cast.user("agent")
    reporter, reporter_token = cast.user("reporter")
    incident_id = server.rpc(
        "create", reporter_token, expect=201, description="Lift stuck", severity="high"
    )["data"]["id"]
    first = server.rpc("comment", reporter_token, expect=201, id=incident_id, text="Floor 3")
    assert first["data"] == {
        **first["data"], "incident_id": incident_id, "author": reporter, "text": "Floor 3",
    }  # fmt: skip
    assert set(first["data"]) == {"id", "incident_id", "author", "text", "created_at"}
    server.rpc("assign", agent_token, expect=200, id=incident_id, assignee=agent)
    server.rpc("update", agent_token, expect=200, id=incident_id, status="processing")
    server.rpc("comment", agent_token, expect=201, id=incident_id, text="On my way")
    server.rpc("resolve", agent_token, expect=200, id=incident_id, resolution="Rebooted")
    for bad in ("", "   ", "nul\x00", "x" * 10001, None, 7):
        server.rpc("comment", reporter_token, expect=400, id=incident_id, text=bad)

    notes = server.rpc("comments", reporter_token, expect=200, id=incident_id)["data"]["comments"]
    assert [(n["author"], n["text"]) for n in notes] == [
        (reporter, "Floor 3"),
        (agent, "On my way"),
    ]
    events = server.rpc("history", reporter_token, expect=200, id=incident_id)["data"]["events"]
    assert [(e["type"], e["actor"]) for e in events] == [
        ("added", reporter), ("commented", reporter), ("assigned", agent),
        ("updated", agent), ("acknowledged", agent), ("commented", agent), ("resolved", agent),
    ]  # fmt: skip
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(set(e) == {"id", "type", "actor", "at", "changes"} and e["at"] for e in events)
    changes = [e["changes"] for e in events]
    assert changes[0]["description"] == [None, "Lift stuck"]
    assert changes[0]["severity"] == [None, "high"]
    assert changes[1] == {"comment": {"id": first["data"]["id"], "text": "Floor 3"}}
    assert changes[2] == {"assignee": [None, agent]}
    assert changes[3] == {"status": ["new", "processing"]}
    assert changes[4] == {"acknowledged_by": [None, agent]}  # the update acknowledged it
    assert changes[6] == {"status": ["processing", "completed"]}


# ---------------------------------------------------------------------------
# The migration goes down and up again on a database with data in it.


def test_migration_downgrades_and_upgrades(new_database_url, tmp_path) -> None:
    server = Server(new_database_url(), tmp_path / "instance", workers=1).start()
    try:
        admin = server.login()
        incident_id = server.rpc("create", admin, expect=201, description="kept")["data"]["id"]
    finally:
        server.stop()

    server.migrate("downgrade", "0001")
    server.migrate("upgrade")
    server.start()
    try:
        got = server.rpc("get", server.login(), expect=200, id=incident_id)["data"]
        assert got["description"] == "kept" and got["assignee"] is None
    finally:
        server.stop_soon()  # the test is over: nothing waits on the stop
