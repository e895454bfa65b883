"""The PagerDuty Events API intake (issue 12), driven by PagerDuty's own client library.

`pagerduty.EventsApiV2Client` pointed at a real gunicorn on loopback: trigger,
repeat, acknowledge and resolve one alert; 40 concurrent triggers with one
dedup_key make one incident. The client speaks only HTTPS, so this module's
server serves TLS with a certificate for 127.0.0.1 made here (openssl), which the
clients are told to trust. The older generic v1 endpoint, and a table of bad
events answered as PagerDuty answers them with nothing stored (in-process test
client on the server's database).
"""

import json
import secrets
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pagerduty
import pytest
from sqlalchemy import func, select
from support import Server, system_tool


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = system_tool("openssl", package="openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class TlsServer(Server):
    """Server over TLS (gunicorn's --certfile), its client trusting that certificate."""

    def __init__(self, database_url: str, instance: Path, cert: Path, key: Path) -> None:
        super().__init__(database_url, instance)
        self.options = ("--certfile", str(cert), "--keyfile", str(key))
        self.url = self.url.replace("http://", "https://")
        self.cert = cert
        self.trust = ssl.create_default_context(cafile=str(cert))
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would win over `verify`
        self.session.verify = str(cert)

    def _ready(self) -> bool:
        try:
            url = self.url + self.ready_path
            with urllib.request.urlopen(url, timeout=2, context=self.trust) as response:
                return response.status == 200 and len(self.workers()) >= self.worker_count
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


@pytest.fixture(scope="module")
def server(new_database_url, tmp_path_factory) -> Iterator[TlsServer]:
    """This module's server, over TLS, shared by its tests."""
    cert, key = certificate(tmp_path_factory.mktemp("tls"))
    running = TlsServer(new_database_url(), tmp_path_factory.mktemp("instance"), cert, key)
    running.start()
    yield running
    running.stop_soon()


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return server.login()


INVALID = {"status": "invalid event", "message": "Event object is invalid"}


def unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(4)}"


def new_key(server: Server, admin: str, role: str = "monitor") -> tuple[str, str]:
    """(the name its incidents are created by, the key)."""
    name = unique("pd")
    made = server.rpc("key_create", admin, 201, name=name, role=role)["data"]
    return f"key:{name}", made["key"]


def raised_by(server: Server, admin: str, creator: str) -> list[dict[str, Any]]:
    page = server.rpc("get_all", admin, 200, created_by=creator, limit=1000)["data"]
    return page["incidents"]


def client(server: Server, key: str) -> pagerduty.EventsApiV2Client:
    trust = server.trust  # type: ignore[attr-defined]
    return pagerduty.EventsApiV2Client(key, base_url=server.url, verify=trust)


def test_trigger_repeat_acknowledge_resolve_with_the_pagerduty_client(server, token) -> None:
    creator, key = new_key(server, token)
    with client(server, key) as events:
        steps(server, token, creator, events)


def steps(server: Server, token: str, creator: str, events: pagerduty.EventsApiV2Client) -> None:
    dedup_key = events.trigger(
        "Disk full on db-3", "db-3", dedup_key=unique("db-3/disk"), severity="error",
        payload={"component": "postgres", "group": "prod", "class": "disk"},
        custom_details={"free": "0 B"}, links=[{"href": "http://127.0.0.1/x", "text": "x"}],
    )  # fmt: skip
    assert events.trigger("Disk full on db-3", "db-3", dedup_key=dedup_key) == dedup_key
    [incident] = raised_by(server, token, creator)
    assert incident["dedup_key"] == dedup_key and incident["occurrences"] == 2
    assert incident["title"] == incident["description"] == "Disk full on db-3"
    assert incident["severity"] == "high" and incident["source"] == "monitoring"
    assert incident["details"]["labels"] == {
        "source": "db-3", "component": "postgres", "group": "prod", "class": "disk"
    }  # fmt: skip
    assert incident["details"]["pagerduty"]["custom_details"] == {"free": "0 B"}
    assert events.acknowledge(dedup_key) == dedup_key
    [incident] = raised_by(server, token, creator)
    assert incident["status"] == "processing" and incident["acknowledged_by"] == creator
    events.resolve(dedup_key)
    [incident] = raised_by(server, token, creator)
    assert incident["status"] == "completed" and incident["resolved_by"] == creator
    events.resolve(dedup_key)  # nothing open: accepted and dropped, as PagerDuty does
    events.acknowledge(dedup_key)
    assert raised_by(server, token, creator) == [incident]


def test_a_trigger_without_dedup_key_gets_one_and_answers_it(server, token) -> None:
    creator, key = new_key(server, token)
    answer = server.post("/v2/enqueue", {
        "routing_key": key, "event_action": "trigger",
        "payload": {"summary": "Pump 7", "source": "plc-2", "severity": "info"},
    })  # fmt: skip
    assert answer.status_code == 202
    body = answer.json()
    assert set(body) == {"status", "message", "dedup_key"}
    assert body["status"] == "success" and body["message"] == "Event processed"
    [incident] = raised_by(server, token, creator)
    assert incident["dedup_key"] == body["dedup_key"] and len(body["dedup_key"]) == 32
    assert incident["severity"] == "low"


def test_forty_concurrent_triggers_with_one_dedup_key_make_one_incident(server, token) -> None:
    creator, key = new_key(server, token)
    dedup_key, start = unique("storm"), threading.Barrier(40)
    answers: list[str] = []

    def send() -> None:
        with client(server, key) as events:
            start.wait()
            answers.append(events.trigger("Storm", "edge-1", dedup_key=dedup_key,
                                          severity="critical"))  # fmt: skip

    threads = [threading.Thread(target=send) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == [dedup_key] * 40
    [incident] = raised_by(server, token, creator)
    assert incident["occurrences"] == 40 and incident["severity"] == "critical"
    trail = server.rpc("history", token, 200, id=incident["id"])["data"]["events"]
    assert [event["type"] for event in trail] == ["added"] + ["updated"] * 39


def test_the_older_generic_endpoint(server, token) -> None:
    creator, key = new_key(server, token)
    path = "/generic/2010-04-15/create_event.json"
    body = {"service_key": key, "event_type": "trigger", "incident_key": unique("v1"),
            "description": "Fan 2 stopped", "details": {"rpm": 0}}  # fmt: skip
    answer = server.post(path, body)
    assert answer.status_code == 200
    assert answer.json() == {"status": "success", "message": "Event processed",
                             "incident_key": body["incident_key"]}  # fmt: skip
    assert server.post(path, {**body, "event_type": "resolve"}).status_code == 200
    [incident] = raised_by(server, token, creator)
    assert incident["status"] == "completed" and incident["details"]["pagerduty"]["details"] == {
        "rpm": 0
    }


def test_a_reporter_key_may_trigger_but_not_resolve(server, token) -> None:
    creator, key = new_key(server, token, "reporter")
    with client(server, key) as events:
        dedup_key = events.trigger("Door open", "gate-1", dedup_key=unique("door"))
    answer = server.post("/v2/enqueue", {"routing_key": key, "event_action": "resolve",
                                         "dedup_key": dedup_key})  # fmt: skip
    assert answer.status_code == 400 and answer.json()["status"] == "invalid event"
    [incident] = raised_by(server, token, creator)
    assert incident["status"] == "new"


def test_a_revoked_routing_key_is_refused_from_the_next_trigger_on(server, token) -> None:
    """Both workers have kept the key (access/keys.py); its revocation ends that at once."""
    _, key = new_key(server, token)
    listed = server.rpc("key_list", token, 200)["data"]["keys"]
    [key_id] = [row["id"] for row in listed if row["prefix"] == key[:12]]
    event = {
        "routing_key": key,
        "event_action": "trigger",
        "payload": {"summary": "Fan 2 stopped", "source": "rack-9", "severity": "error"},
    }

    def send(_: int) -> Any:
        answer = server.post("/v2/enqueue", event)
        return answer.status_code, tuple(answer.json().get("errors", ()))

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(send, range(32))) == {(202, ())}
        server.rpc("key_revoke", token, 200, id=key_id)
        assert set(pool.map(send, range(32))) == {(400, ("Invalid routing key",))}


def test_a_monitor_key_cannot_resolve_what_another_raised(server, token) -> None:
    first, first_key = new_key(server, token)
    _, second_key = new_key(server, token)
    with client(server, first_key) as events:
        dedup_key = events.trigger("Valve", "v-1", dedup_key=unique("valve"))
    with client(server, second_key) as events:
        events.resolve(dedup_key)  # accepted, and dropped: not its incident
    [incident] = raised_by(server, token, first)
    assert incident["status"] == "new"


# ------------------------------------------------------------ bad events, in-process


@pytest.fixture(scope="module")
def app(server: Server) -> Iterator[Any]:
    from incident_rpc import create_app

    made = create_app({"SQLALCHEMY_DATABASE_URI": server.database_url,
                       "SECRET_KEY": server.env["SECRET_KEY"]})  # fmt: skip
    yield made
    with made.app_context():
        from incident_rpc.extensions import db

        db.engine.dispose()


@pytest.fixture(scope="module")
def monitor_key(server: Server, token: str) -> str:
    return new_key(server, token)[1]


def stored(app: Any) -> tuple[int, int]:
    from incident_rpc.extensions import db
    from incident_rpc.models import Event, Incident

    with app.app_context():
        counts = [db.session.scalar(select(func.count()).select_from(m)) for m in (Incident, Event)]
        db.session.remove()
    return counts[0], counts[1]


GOOD = {"event_action": "trigger", "payload": {"summary": "s", "source": "h", "severity": "info"}}


def with_payload(**fields: Any) -> dict[str, Any]:
    return {**GOOD, "payload": {**GOOD["payload"], **fields}}


BAD_EVENTS = {
    "missing summary": ({**GOOD, "payload": {"source": "h", "severity": "info"}}, "summary"),
    "blank summary": ({**GOOD, "payload": {**GOOD["payload"], "summary": " "}}, "summary"),
    "missing source": ({**GOOD, "payload": {"summary": "s", "severity": "info"}}, "source"),
    "unknown severity": ({**GOOD, "payload": {**GOOD["payload"], "severity": "high"}}, "severity"),
    "unknown event_action": ({**GOOD, "event_action": "escalate"}, "event_action"),
    "no event_action": ({"payload": GOOD["payload"]}, "event_action"),
    "payload not an object": ({**GOOD, "payload": ["s"]}, "payload"),
    "trigger without payload": ({"event_action": "trigger"}, "payload"),
    "dedup_key not a string": ({**GOOD, "dedup_key": 7}, "dedup_key"),
    "dedup_key too long": ({**GOOD, "dedup_key": "k" * 256}, "dedup_key"),
    "summary too long": (with_payload(summary="s" * 1025), "summary"),
    "NUL in custom_details": (with_payload(custom_details={"a": "\u0000"}), "details"),
    "NUL in a custom_details string": (with_payload(custom_details="a\u0000"), "details"),
    "NUL in links": ({**GOOD, "links": [{"href": "http://h/\u0000"}]}, "links"),
    "a link not an object": ({**GOOD, "links": ["http://h/"]}, "links"),
    "routing_key blank": ({**GOOD, "routing_key": ""}, "routing_key"),
    "bad timestamp": (with_payload(timestamp="yesterday"), "timestamp"),
    "512 KiB and over": (with_payload(custom_details={"x": "x" * (512 * 1024)}), "512 KiB"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_EVENTS)
def test_bad_events_are_refused_as_pagerduty_refuses_them(app, monitor_key, case: str) -> None:
    event, word = BAD_EVENTS[case]
    before = stored(app)
    answer = app.test_client().post("/v2/enqueue", json={"routing_key": monitor_key, **event})
    assert answer.status_code == 400, answer.get_json()
    body = answer.get_json()
    assert {key: body[key] for key in INVALID} == INVALID and set(body) == {*INVALID, "errors"}
    assert any(word in error for error in body["errors"]), body
    assert stored(app) == before


def test_our_own_command_fields_in_an_event_are_not_read(app, monitor_key) -> None:
    """An event is read by its own schema: a `request_id` (ours: a replay) or an
    `action` in it is one more field PagerDuty ignores."""
    before = stored(app)
    for n in (1, 2):
        event = {**GOOD, "routing_key": monitor_key, "dedup_key": unique(f"ours-{n}"),
                 "request_id": "the-same", "action": "get_all"}  # fmt: skip
        answer = app.test_client().post("/v2/enqueue", json=event)
        assert answer.status_code == 202, answer.get_json()
    assert stored(app)[0] == before[0] + 2


BAD_KEYS = {
    "missing": None, "empty": "", "not a key": "0123456789abcdef0123456789abcdef",
    "unknown key": "irk_" + "A" * 43, "a number": 12,
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_KEYS)
def test_bad_routing_keys_are_an_invalid_event(app, case: str) -> None:
    event = dict(GOOD) if BAD_KEYS[case] is None else {**GOOD, "routing_key": BAD_KEYS[case]}
    before = stored(app)
    answer = app.test_client().post("/v2/enqueue", json=event)
    assert answer.status_code == 400
    assert answer.get_json()["status"] == "invalid event"
    absent = BAD_KEYS[case] in (None, "")
    reason = "'routing_key' is missing or blank" if absent else "Invalid routing key"
    assert answer.get_json()["errors"] == [reason]
    assert stored(app) == before


def test_a_user_token_is_not_a_routing_key(app, token: str) -> None:
    before = stored(app)
    answer = app.test_client().post("/v2/enqueue", json={**GOOD, "routing_key": token})
    assert answer.status_code == 400 and answer.get_json()["errors"] == ["Invalid routing key"]
    assert stored(app) == before


@pytest.mark.parametrize(
    "body", [b"{not json", b"[]", b'"text"', b"\xff\xfe", json.dumps({**GOOD, "x": 1e999}).encode()]
)
def test_what_is_not_an_event_object_is_an_invalid_event(app, monitor_key, body: bytes) -> None:
    before = stored(app)
    answer = app.test_client().post("/v2/enqueue", data=body)
    assert answer.status_code == 400 and answer.get_json()["status"] == "invalid event"
    assert stored(app) == before


def test_a_body_over_the_request_limit_is_an_invalid_event_too(app) -> None:
    answer = app.test_client().post(
        "/v2/enqueue", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    )
    assert answer.status_code == 400 and answer.get_json()["status"] == "invalid event"


BAD_V1 = {
    "missing description": {"event_type": "trigger"},
    "unknown event_type": {"event_type": "page", "description": "d"},
    "incident_key not a string": {"event_type": "trigger", "description": "d", "incident_key": 1},
    "NUL in details": {"event_type": "trigger", "description": "d", "details": ["\u0000"]},
}


@pytest.mark.parametrize("case", BAD_V1)
def test_bad_generic_events_are_an_invalid_event(app, monitor_key, case: str) -> None:
    before = stored(app)
    event = {"service_key": monitor_key, **BAD_V1[case]}
    answer = app.test_client().post("/generic/2010-04-15/create_event.json", json=event)
    assert answer.status_code == 400 and answer.get_json()["status"] == "invalid event"
    assert stored(app) == before
