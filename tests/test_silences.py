"""Maintenance windows (issue 12): silence_create, silence_list, silence_expire, end to end.

Over real gunicorn: the answer's fields and states; each matcher; an incident that
arrives in an active window is stored and marked `silenced_by`, one outside it
not; `get_all`'s `silenced` filter; the Alertmanager and PagerDuty intakes honour
windows; legacy answers keep their fields; every change is an event on the live
stream; a window made on one instance applies on another (within
SILENCE_CACHE_SECONDS) and outlives a restart. Then tables of bad input
(in-process test client on the server's database): a 400 each, nothing stored.

Windows apply to every incident, so each test confines its own with a matcher no
other test's incidents can meet (a unique word or dedup_key prefix).
"""

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import websocket
from sqlalchemy import func, select
from support import ADMIN, Server

PASSWORD = "a password for silences"
FIELDS = {"id", "matchers", "starts_at", "ends_at", "comment", "created_by", "created_at", "state"}


def unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(4)}"


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.fixture(scope="module")
def server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """Windows read afresh for every create, so that either worker applies one at once."""
    running = Server(new_database_url(), tmp_path_factory.mktemp("instance"),
                     SILENCE_CACHE_SECONDS="0").start()  # fmt: skip
    yield running
    running.stop_soon()


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return server.login()


def silence(server: Server, token: str, expect: int = 201, **params: Any) -> dict[str, Any]:
    params.setdefault("duration", 3600)
    return server.rpc("silence_create", token, expect, **params)["data"]


def create(server: Server, token: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("description", "Pump 7 is down")
    return server.rpc("create", token, **fields)["data"]


def test_a_window_answers_its_fields_and_marks_what_arrives_in_it(server, token) -> None:
    word = unique("fan")
    made = silence(server, token, matchers={"text": word}, comment="fan swap")
    assert set(made) == FIELDS and made["state"] == "active" and made["created_by"] == "admin"
    assert made["matchers"] == {"text": word} and made["comment"] == "fan swap"
    starts, ends = (datetime.fromisoformat(made[k]) for k in ("starts_at", "ends_at"))
    assert ends - starts == timedelta(hours=1)
    inside = create(server, token, description=f"The {word.upper()} stopped")  # any case
    outside = create(server, token, description="The pump stopped")
    assert inside["silenced_by"] == made["id"] and outside["silenced_by"] is None
    assert inside["status"] == "new"  # stored as any other: nothing is dropped
    got = server.rpc("get", token, 200, id=inside["id"])["data"]
    assert got == inside
    silenced = server.rpc("get_all", token, 200, silenced=True, limit=1000)["data"]["incidents"]
    heard = server.rpc("get_all", token, 200, silenced=False, limit=1000)["data"]["incidents"]
    assert inside["id"] in {i["id"] for i in silenced} - {i["id"] for i in heard}
    assert outside["id"] in {i["id"] for i in heard} - {i["id"] for i in silenced}
    assert all(i["silenced_by"] for i in silenced) and not any(i["silenced_by"] for i in heard)


def test_each_matcher(server, token) -> None:
    prefix = unique("m")
    cases: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        # (matchers, an incident that matches, one that does not)
        ({"dedup_key": f"{prefix}/a/"}, {"dedup_key": f"{prefix}/a/1"},
         {"dedup_key": f"{prefix}/b/1"}),
        ({"dedup_key": f"{prefix}/*/disk"}, {"dedup_key": f"{prefix}/db-3/disk"},
         {"dedup_key": f"{prefix}/db-3/cpu"}),
        ({"dedup_key": f"{prefix}/s/", "source": "partner"},
         {"dedup_key": f"{prefix}/s/1", "source": "partner"},
         {"dedup_key": f"{prefix}/s/2", "source": "operator"}),
        ({"dedup_key": f"{prefix}/v/", "severity": "medium"},
         {"dedup_key": f"{prefix}/v/1", "severity": "low"},
         {"dedup_key": f"{prefix}/v/2", "severity": "high"}),
        ({"labels": {"team": prefix, "env": "prod"}},
         {"details": {"labels": {"team": prefix, "env": "prod", "x": "y"}}},
         {"details": {"labels": {"team": prefix, "env": "test"}}}),
        ({"text": prefix}, {"title": f"about {prefix}"}, {"title": "about nothing"}),
    ]  # fmt: skip
    for matchers, yes, no in cases:
        window = silence(server, token, matchers=matchers)["id"]
        assert create(server, token, **yes)["silenced_by"] == window, matchers
        assert create(server, token, **no)["silenced_by"] is None, matchers
    at_default = create(server, token, dedup_key=f"{prefix}/v/3")  # medium, by default
    assert at_default["silenced_by"] is not None


def test_pending_and_expired_windows_silence_nothing(server, token) -> None:
    word = unique("valve")
    pending = silence(server, token, matchers={"text": word}, starts_at=later(hours=1))
    assert pending["state"] == "pending"
    assert create(server, token, description=word)["silenced_by"] is None
    active = silence(server, token, matchers={"text": word})
    assert create(server, token, description=word)["silenced_by"] == active["id"]
    expired = server.rpc("silence_expire", token, 200, id=active["id"])["data"]
    assert expired["state"] == "expired" and set(expired) == FIELDS
    assert datetime.fromisoformat(expired["ends_at"]) <= datetime.now(UTC)
    assert create(server, token, description=word)["silenced_by"] is None
    server.rpc("silence_expire", token, 409, id=active["id"])
    never = server.rpc("silence_expire", token, 200, id=pending["id"])["data"]
    assert never["state"] == "expired"
    server.rpc("silence_expire", token, 404, id=2**62)


def test_silence_list_by_state(server, token) -> None:
    word = unique("list")
    active = silence(server, token, matchers={"text": word})
    pending = silence(server, token, matchers={"text": word}, starts_at=later(days=1))
    gone = silence(server, token, matchers={"text": word})
    gone = server.rpc("silence_expire", token, 200, id=gone["id"])["data"]

    def listed(**params: Any) -> dict[int, dict[str, Any]]:
        answer = server.rpc("silence_list", token, 200, limit=1000, **params)["data"]
        assert set(answer) == {"silences"}
        return {s["id"]: s for s in answer["silences"]}

    everything = listed()
    assert [everything[s["id"]] for s in (active, pending, gone)] == [active, pending, gone]
    for state, mine in (("active", active), ("pending", pending), ("expired", gone)):
        found = listed(state=state)
        assert mine["id"] in found and {s["state"] for s in found.values()} == {state}
    ids = list(everything)
    assert ids == sorted(ids, reverse=True)  # newest first


def test_reporters_may_not_silence(server, token) -> None:
    name = unique("reporter")
    server.rpc("user_create", token, 201, username=name, password=PASSWORD, role="reporter")
    reporter = server.login(name, PASSWORD)
    server.rpc("silence_create", reporter, 403, matchers={"text": "x"}, duration=60)
    server.rpc("silence_list", reporter, 403)
    server.rpc("silence_expire", reporter, 403, id=1)
    server.rpc("silence_history", reporter, 403, id=1)
    page = server.rpc("get_all", reporter, 200, silenced=False)["data"]  # the filter is open
    assert page["incidents"] == []


def test_legacy_answers_keep_their_fields(server, token) -> None:
    word = unique("legacy")
    window = silence(server, token, matchers={"text": word})
    answer = server.post("/incidents/create/", {"token": token, "incident": word,
                                               "source": "operator"}).json()  # fmt: skip
    assert answer["status"] == 201 and "silenced_by" not in answer["data"]
    native = server.rpc("get", token, 200, id=answer["data"]["id"])["data"]
    assert native["silenced_by"] == window["id"]


def test_the_alertmanager_intake_honours_windows(server, token) -> None:
    team = unique("team")
    window = silence(server, token, matchers={"labels": {"team": team}})
    alerts = [{"status": "firing", "fingerprint": unique("fp"),
               "labels": {"alertname": "DiskFull", "team": team if quiet else "other"},
               "annotations": {"summary": "disk full"}, "startsAt": later()}
              for quiet in (True, False)]  # fmt: skip
    body = {"version": "4", "receiver": "r", "externalURL": "http://127.0.0.1", "alerts": alerts}
    answer = server.post("/integrations/alertmanager", body,
                         headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
    assert answer["status"] == 200, answer
    stored = [entry["result"]["data"] for entry in answer["data"]["alerts"]]
    assert [incident["silenced_by"] for incident in stored] == [window["id"], None]


def test_the_pagerduty_intake_honours_windows(server, token) -> None:
    key = server.rpc("key_create", token, 201, name=unique("pd"), role="monitor")["data"]["key"]
    component = unique("disk")
    window = silence(server, token, matchers={"labels": {"component": component}})
    event = {"routing_key": key, "event_action": "trigger", "dedup_key": unique("pd"),
             "payload": {"summary": "full", "source": "db-3", "severity": "critical",
                         "component": component}}  # fmt: skip
    answer = server.post("/v2/enqueue", event)
    assert answer.status_code == 202
    page = server.rpc("get_all", token, 200, silenced=True, limit=1000)["data"]["incidents"]
    [incident] = [i for i in page if i["dedup_key"] == event["dedup_key"]]
    assert incident["silenced_by"] == window["id"]


def test_every_change_is_an_event_on_the_live_stream(server, token) -> None:
    socket = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?token={token}",
                                         timeout=15)  # fmt: skip
    try:
        assert json.loads(socket.recv())["type"] == "subscribed"
        made = silence(server, token, matchers={"text": unique("ws")}, comment="c")
        gone = server.rpc("silence_expire", token, 200, id=made["id"])["data"]
        seen = []
        while len(seen) < 2:
            event = json.loads(socket.recv())
            if event["type"].startswith("silence_") and event["data"]["id"] == made["id"]:
                seen.append(event)
    finally:
        socket.close()
    assert [(e["type"], e["actor"], e["data"]) for e in seen] == [
        ("silence_created", "admin", made),
        ("silence_expired", "admin", gone),
    ]
    assert seen[0]["id"] < seen[1]["id"]
    history = server.rpc("silence_history", token, 200, id=made["id"])["data"]["events"]
    assert [(e["id"], e["type"], e["actor"]) for e in history] == [
        (e["id"], e["type"], e["actor"]) for e in seen
    ]
    assert history[1]["changes"]["ends_at"] == [made["ends_at"], gone["ends_at"]]
    other = silence(server, token, matchers={"text": unique("other")}, comment="another")
    [created] = server.rpc("silence_history", token, 200, id=other["id"])["data"]["events"]
    assert created["type"] == "silence_created"
    assert created["changes"] == {name: [None, other[name]] for name in
                                  ("matchers", "starts_at", "ends_at", "comment")}  # fmt: skip
    server.rpc("silence_history", token, 404, id=2**62)


def test_a_window_applies_on_another_instance_and_outlives_a_restart(server, token, tmp_path):
    other = Server(server.database_url, tmp_path, workers=1, SILENCE_CACHE_SECONDS="1").start()
    try:
        word = unique("instance")
        window = silence(server, token, matchers={"text": word})  # made on the first
        other_token = other.login()
        deadline = time.monotonic() + 10  # its cache may hold the windows for up to 1 s
        marked = None
        while marked is None and time.monotonic() < deadline:
            marked = create(other, other_token, description=word)["silenced_by"]
        assert marked == window["id"]
        other.stop()
        other.start()  # a restart: the window is in the database
        assert create(other, other.login(), description=word)["silenced_by"] == window["id"]
    finally:
        other.stop_soon()


def test_active_windows_are_filed_by_what_an_incident_needs_and_change_on_time() -> None:
    from incident_rpc.actions.silencing import Active, Subject, Window

    t = datetime(2030, 1, 1, tzinfo=UTC)
    text = Window.of(1, t, t + timedelta(hours=1), {"text": "Disk"})
    keyed = Window.of(2, t + timedelta(minutes=10), t + timedelta(hours=2), {"dedup_key": "db-*"})
    labelled = Window.of(3, t, t + timedelta(hours=3), {"labels": {"team": "db"}, "text": "x"})
    sourced = Window.of(4, t, t + timedelta(hours=3), {"source": "partner"})
    windows = [text, keyed, labelled, sourced]
    early = Active(windows, t + timedelta(minutes=5))
    assert (early.general, early.keyed, early.labelled) == ([text], [], [labelled])
    assert early.by_source == {"partner": [sourced]}
    assert early.until == t + timedelta(minutes=10)  # when `keyed` starts
    later = Active(windows, early.until)
    assert later.keyed == [keyed] and later.until == t + timedelta(hours=1)  # `text` ends
    subject = Subject({"dedup_key": "db-3", "description": "the DISK is full", "source": "x"})
    assert [w.id for bucket in later.candidates(subject) for w in bucket] == [2, 1]
    assert text.matches(subject) and keyed.matches(subject) and not sourced.matches(subject)
    assert not labelled.matches(Subject({"details": {"labels": {"team": "db"}}, "title": "y"}))


# ---------------------------------------------------------------- bad input, in-process


@pytest.fixture(scope="module")
def app(server: Server) -> Iterator[Any]:
    from incident_rpc import create_app

    made = create_app({"SQLALCHEMY_DATABASE_URI": server.database_url,
                       "SECRET_KEY": server.env["SECRET_KEY"]})  # fmt: skip
    yield made
    with made.app_context():
        from incident_rpc.extensions import db

        db.engine.dispose()


def stored(app: Any) -> tuple[int, ...]:
    from incident_rpc.extensions import db
    from incident_rpc.models import Event, Incident, Silence

    with app.app_context():
        counts = tuple(db.session.scalar(select(func.count()).select_from(model))
                       for model in (Silence, Incident, Event))  # fmt: skip
        db.session.remove()
    return counts


OK = {"matchers": {"text": "x"}, "duration": 60}
BAD_CREATE = {
    "no matchers": ({"duration": 60}, "matchers"),
    "empty matchers": ({**OK, "matchers": {}}, "matchers"),
    "matchers not an object": ({**OK, "matchers": ["text"]}, "matchers"),
    "unknown matcher": ({**OK, "matchers": {"host": "db-3"}}, "matchers"),
    "at most critical: everything": ({**OK, "matchers": {"severity": "critical"}}, "matchers"),
    "any dedup_key": ({**OK, "matchers": {"dedup_key": "*"}}, "matchers"),
    "any dedup_key, twice": ({**OK, "matchers": {"dedup_key": "**", "severity": "critical"}},
                             "matchers"),
    "unknown severity": ({**OK, "matchers": {"severity": "huge"}}, "matchers"),
    "unknown source": ({**OK, "matchers": {"source": "moon"}}, "matchers"),
    "blank text": ({**OK, "matchers": {"text": " "}}, "matchers"),
    "text too long": ({**OK, "matchers": {"text": "x" * 1001}}, "matchers"),
    "empty labels": ({**OK, "matchers": {"labels": {}}}, "matchers"),
    "label not a string": ({**OK, "matchers": {"labels": {"team": 1}}}, "matchers"),
    "NUL in a label": ({**OK, "matchers": {"labels": {"team": "a\u0000"}}}, "matchers"),
    "neither ends_at nor duration": ({"matchers": {"text": "x"}}, "_schema"),
    "both ends_at and duration": ({**OK, "ends_at": later(hours=1)}, "_schema"),
    "ends before it starts": ({"matchers": {"text": "x"}, "starts_at": later(hours=2),
                               "ends_at": later(hours=1)}, "ends_at"),
    "ends when it starts": ({"matchers": {"text": "x"}, "starts_at": "2030-01-01T00:00:00Z",
                             "ends_at": "2030-01-01T00:00:00Z"}, "ends_at"),
    "ended already": ({"matchers": {"text": "x"}, "starts_at": later(days=-2),
                       "ends_at": later(days=-1)}, "ends_at"),
    "more than a year": ({"matchers": {"text": "x"}, "ends_at": later(days=366)}, "ends_at"),
    "duration over a year": ({**OK, "duration": 366 * 86400}, "duration"),
    "duration zero": ({**OK, "duration": 0}, "duration"),
    "duration a string": ({**OK, "duration": "1h"}, "duration"),
    "duration a float": ({**OK, "duration": 60.5}, "duration"),
    "starts_at not a time": ({**OK, "starts_at": "soon"}, "starts_at"),
    "comment too long": ({**OK, "comment": "c" * 1001}, "comment"),
    "unknown parameter": ({**OK, "reason": "why"}, "reason"),
}  # fmt: skip
BAD_OTHERS = {
    "list: unknown state": ("silence_list", {"state": "gone"}, "state"),
    "list: limit 0": ("silence_list", {"limit": 0}, "limit"),
    "list: unknown parameter": ("silence_list", {"matchers": {}}, "matchers"),
    "expire: no id": ("silence_expire", {}, "id"),
    "expire: id a string": ("silence_expire", {"id": "1"}, "id"),
    "expire: id 0": ("silence_expire", {"id": 0}, "id"),
    "history: no id": ("silence_history", {}, "id"),
    "history: id a string": ("silence_history", {"id": "1"}, "id"),
    "get_all: silenced a string": ("get_all", {"silenced": "true"}, "silenced"),
    "get_all: silenced 1": ("get_all", {"silenced": 1}, "silenced"),
}


@pytest.fixture(scope="module")
def admin_token(app: Any) -> str:
    username, password = ADMIN
    body = {"action": "authorization", "username": username, "password": password}
    answer = app.test_client().post("/rpc", json=body)
    return answer.get_json()["data"]["token"]


def refused(app: Any, body: dict[str, Any]) -> dict[str, Any]:
    answer = app.test_client().post("/rpc", json=body)
    envelope = answer.get_json()
    assert answer.status_code == envelope["status"] == 400, envelope
    return envelope["data"]["errors"]


@pytest.mark.parametrize("case", BAD_CREATE)
def test_bad_silences_are_a_400_naming_the_field(app, admin_token, case: str) -> None:
    params, field = BAD_CREATE[case]
    before = stored(app)
    errors = refused(app, {"action": "silence_create", "token": admin_token, **params})
    assert field in errors, errors
    assert stored(app) == before


@pytest.mark.parametrize("case", BAD_OTHERS)
def test_bad_parameters_of_the_other_actions(app, admin_token, case: str) -> None:
    name, params, field = BAD_OTHERS[case]
    before = stored(app)
    assert field in refused(app, {"action": name, "token": admin_token, **params})
    assert stored(app) == before


def test_bad_silences_over_jsonrpc_are_invalid_params(app, admin_token) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "silence_create",
            "params": {"token": admin_token, "matchers": {}, "duration": 60}}  # fmt: skip
    answer = app.test_client().post("/rpc", json=body, content_type="application/json-rpc")
    assert answer.get_json()["error"]["code"] == -32602
