"""Bad input that passes for JSON never ends in a 500 (contract section 7), in every
dialect, on SQLite and PostgreSQL: lone surrogates, repeated keys, numbers beyond a
double, NUL in free-form documents, forged cursors and tokens. What is accepted is
stored faithfully and read back identically. The tables of inputs and answers run on
the in-process app (the `app` fixture); what needs a socket on a real gunicorn with
real WebSocket clients; the parser's own rules are a table run on the parser alone.
"""

import base64
import json
import struct
import uuid
from string import Template
from typing import Any

import pytest
import requests
import sqlalchemy
import websocket
from itsdangerous import URLSafeTimedSerializer
from support import InProcess, Server

from incident_rpc.errors import InvalidJSON
from incident_rpc.runtime import jsonio

SURROGATE = r'"\ud800"'  # JSON text: a lone high surrogate, valid JSON but not text
NATIVE, LEGACY, JSONRPC, ALERTMANAGER = "native", "legacy", "jsonrpc", "alertmanager"
ROUTES = {NATIVE: "/rpc", LEGACY: "", JSONRPC: "/rpc", ALERTMANAGER: "/integrations/alertmanager"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def incident_id(app: InProcess, app_token: str) -> int:
    return app.rpc("create", app_token, expect=201, description="target of bad input")["data"]["id"]


def fill(template: str, server: Server | InProcess, token: str, incident_id: int, bad: str = ""):
    """A JSON text from a template: $T the token, $ID an incident id, $X a literal."""
    return Template(template).substitute(T=json.dumps(token), ID=incident_id, X=bad)


def post(server: Server | InProcess, path: str, body: str | bytes, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:  # the Alertmanager webhook takes it only so
        headers["Authorization"] = f"Bearer {token}"
    return server.post(path, body, headers=headers)


def header_token(dialect: str, token: str) -> str | None:
    """The webhook takes its token in the header only; the others, here, in the body."""
    return token if dialect == ALERTMANAGER else None


def refusal(response: requests.Response, dialect: str) -> tuple[int, str]:
    """(status, error sentence) of a refusal, checked for the dialect's shape."""
    body = response.json()
    if dialect == JSONRPC:
        assert response.status_code == 200 and body["jsonrpc"] == "2.0", body
        envelope = body["error"]["data"]
        return body["error"]["code"], envelope["error"]
    assert set(body) == {"success", "error", "status", "data"}, body
    assert response.status_code == body["status"] and body["success"] is False, body
    return body["status"], body["error"]


def connect(server: Server, query: str = "") -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws{query}", timeout=15)


def close_of(ws: websocket.WebSocket) -> tuple[int, str]:
    """The server's close (code, reason); nothing but pings may come before it."""
    for _ in range(10):
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return struct.unpack("!H", frame.data[:2])[0], frame.data[2:].decode()
        assert frame.opcode == websocket.ABNF.OPCODE_PING, (frame.opcode, frame.data[:200])
    raise AssertionError("the server did not close the socket")


def notification(alerts: list[Any]) -> str:
    return json.dumps({"version": "4", "receiver": "incident_rpc", "status": "firing",
                       "externalURL": "http://alertmanager.example", "alerts": alerts})  # fmt: skip


# -- lone surrogates: refused at the parse step, in every dialect ---------------------

SURROGATE_CASES = [
    (NATIVE, '{"action": "create", "token": $T, "description": $X}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "title": $X}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "dedup_key": $X}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "request_id": $X}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "details": {"a": $X}}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "details": {$X: 1}}'),
    (NATIVE, '{"action": "update", "token": $T, "id": $ID, "description": $X}'),
    (NATIVE, '{"action": "comment", "token": $T, "id": $ID, "text": $X}'),
    (NATIVE, '{"action": "authorization", "username": $X, "password": "x"}'),
    (NATIVE, '{"action": "authorization", "username": "admin", "password": $X}'),
    (NATIVE, '{"action": "get_all", "token": $X}'),
    (NATIVE, '{"action": "get_all", "token": $T, "created_by": $X}'),
    (NATIVE, '{"action": "get_all", "token": $T, "assignee": $X}'),
    (NATIVE, '{"action": "resolve_many", "token": $T, "filter": {"dedup_key": $X}}'),
    (NATIVE, '[{"action": "whoami", "token": $T}, {"action": "get_all", "token": $X}]'),
    ("/incidents/create/", '{"token": $T, "incident": $X, "source": "operator"}'),
    ("/incidents/get_all/", '{"token": $X}'),
    ("/users/authorization/", '{"username": $X, "password": "x"}'),
    (JSONRPC, '{"jsonrpc": "2.0", "id": 1, "method": "create", "params": {"token": $T, '
              '"description": $X}}'),
    (JSONRPC, '{"jsonrpc": "2.0", "id": 1, "method": "whoami", "params": {"token": $X}}'),
    (JSONRPC, '{"jsonrpc": "2.0", "id": $X, "method": "whoami", "params": {"token": $T}}'),
    (ALERTMANAGER, '{"version": "4", "alerts": [{"status": "firing", "fingerprint": "f1", '
                   '"labels": {"alertname": $X}}]}'),
]  # fmt: skip


def dialect_of(where: str) -> tuple[str, str]:
    """(dialect, path) of a table's first column: a dialect, or a legacy path."""
    return (LEGACY, where) if where.startswith("/") else (where, ROUTES[where])


@pytest.mark.parametrize("where, template", SURROGATE_CASES)
def test_lone_surrogates_are_a_400_in_every_dialect(
    app: InProcess, app_token: str, incident_id: int, where: str, template: str
) -> None:
    dialect, path = dialect_of(where)
    body = fill(template, app, app_token, incident_id, SURROGATE)
    status, error = refusal(post(app, path, body, header_token(dialect, app_token)), dialect)
    if dialect == LEGACY:
        assert (status, error) == (400, "Invalid JSON")  # the dialect's one sentence
    else:
        assert status == (-32700 if dialect == JSONRPC else 400)
        assert "lone UTF-16 surrogate" in error


def test_surrogates_encoded_as_bytes_are_invalid_utf8(app: InProcess, app_token: str) -> None:
    """`json.loads(bytes)` decodes with surrogatepass; a strict decode refuses them."""
    body = (
        b'{"action": "create", "token": "%s", "description": "\xed\xa0\x80"}' % app_token.encode()
    )
    assert refusal(post(app, "/rpc", body), NATIVE) == (400, "Invalid JSON")


def test_surrogate_pairs_and_look_alikes_are_stored_faithfully(
    app: InProcess, app_token: str
) -> None:
    """A pair of escapes is one character; an escaped backslash is no escape at all."""
    title = unique("faithful")
    text = r'"\ud83d\ude00 \\ud800 \ufffd \u2028 \ufeff \u00e9"'
    body = (
        f'{{"action": "create", "token": {json.dumps(app_token)}, "title": "{title}", '
        f'"description": {text}, "details": {{{text}: [{text}]}}}}'
    )
    created = post(app, "/rpc", body).json()
    assert created["status"] == 201, created
    expected = json.loads(text)
    assert expected == "\U0001f600 \\ud800 \ufffd \u2028 \ufeff \u00e9"
    incident = app.rpc("get", app_token, expect=200, id=created["data"]["id"])["data"]
    assert incident == created["data"]
    assert incident["description"] == expected and incident["details"] == {expected: [expected]}
    page = app.rpc("get_all", app_token, expect=200, limit=1000)["data"]["incidents"]
    assert [item for item in page if item["title"] == title] == [incident]


# -- repeated keys: refused, not "the last one wins" ----------------------------------

DUPLICATE_CASES = [
    (NATIVE, '{"action": "get", "token": $T, "id": $ID, "action": "whoami"}'),
    (NATIVE, '{"action": "whoami", "token": "not-a-token", "token": $T}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "details": {"a": 1, "a": 2}}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", '
             '"details": {"list": [{"b": 1, "b": 1}]}}'),
    (NATIVE, '[{"action": "whoami", "token": $T}, {"action": "whoami", "action": "get"}]'),
    ("/incidents/create/", '{"token": $T, "incident": "a", "source": "operator", "incident": "b"}'),
    ("/users/authorization/", '{"username": "admin", "password": "x", "username": "admin"}'),
    (JSONRPC, '{"jsonrpc": "2.0", "id": 1, "method": "get", "params": {"token": $T, "id": $ID}, '
              '"method": "whoami"}'),
    (JSONRPC, '{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "whoami", "params": {"token": $T}}'),
    (ALERTMANAGER, '{"version": "4", "alerts": [{"status": "firing", "fingerprint": "f1", '
                   '"labels": {"alertname": "a", "alertname": "b"}}]}'),
]  # fmt: skip


@pytest.mark.parametrize("where, template", DUPLICATE_CASES)
def test_repeated_keys_are_a_400_in_every_dialect(
    app: InProcess, app_token: str, incident_id: int, where: str, template: str
) -> None:
    dialect, path = dialect_of(where)
    body = fill(template, app, app_token, incident_id)
    status, error = refusal(post(app, path, body, header_token(dialect, app_token)), dialect)
    if dialect == LEGACY:
        assert (status, error) == (400, "Invalid JSON")
    else:
        assert status == (-32700 if dialect == JSONRPC else 400)
        assert "appears twice in one object" in error


def test_a_batch_with_one_bad_element_runs_nothing(app: InProcess, app_token: str) -> None:
    description = unique("never stored")
    body = json.dumps([{"action": "create", "token": app_token, "description": description}])
    body = body[:-1] + ', {"action": "create", "action": "create"}]'
    assert refusal(post(app, "/rpc", body), NATIVE)[0] == 400
    page = app.rpc("get_all", app_token, expect=200, limit=1000)["data"]["incidents"]
    assert description not in {incident["description"] for incident in page}


# -- numbers beyond a double -----------------------------------------------------------

NON_FINITE_CASES = [
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "details": {"n": $X}}'),
    (NATIVE, '{"action": "create", "token": $T, "description": "x", "details": {"n": [[$X]]}}'),
    (NATIVE, '{"action": "get", "token": $T, "id": $X}'),
    (NATIVE, '{"action": "get_all", "token": $T, "limit": $X}'),
    ("/incidents/update/", '{"token": $T, "id": $X, "status": "new"}'),
    (JSONRPC, '{"jsonrpc": "2.0", "id": $X, "method": "whoami", "params": {"token": $T}}'),
    (ALERTMANAGER, '{"version": "4", "groupKey": $X, "alerts": []}'),
]  # fmt: skip


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E999999", "-0.5e310"])
@pytest.mark.parametrize("where, template", NON_FINITE_CASES)
def test_numbers_beyond_a_double_are_a_400(
    app: InProcess, app_token: str, incident_id: int, where: str, template: str, literal: str
) -> None:
    dialect, path = dialect_of(where)
    body = fill(template, app, app_token, incident_id, literal)
    status, error = refusal(post(app, path, body, header_token(dialect, app_token)), dialect)
    if dialect == LEGACY:
        assert (status, error) == (400, "Invalid JSON")
    else:
        assert status == (-32700 if dialect == JSONRPC else 400)
        assert f"the number {literal} is beyond a double's range" in error


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: no Infinity or NaN (which json.loads lets pass)."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_pages_stay_valid_json_after_an_infinite_number_was_sent(app, app_token) -> None:
    """On SQLite, 1e400 used to be stored as `Infinity`, and every page holding it
    was no JSON at all; now it is refused, and floats that fit are kept."""
    for literal in ("1e400", "-1e400"):
        body = f'{{"action": "create", "token": {json.dumps(app_token)}, "description": "inf", '
        body += f'"details": {{"n": {literal}}}}}'
        assert refusal(post(app, "/rpc", body), NATIVE)[0] == 400
    kept = app.rpc("create", app_token, expect=201, description="finite", details={"n": 0.25})
    response = post(app, "/rpc", json.dumps({"action": "get_all", "token": app_token}))
    assert strict_json(response.text)["data"]["incidents"][0] == kept["data"]  # newest first


# -- the WebSocket's first message: parsed by the same rules -------------------------


@pytest.mark.parametrize(
    "first",
    [
        '{"token": $X}',
        '{"token": $T, "since": $X}',
        '{"token": "not-a-token", "token": $T}',
        '{"token": $T, "since": 1e400}',
    ],
    ids=["surrogate-token", "surrogate-since", "repeated-token", "infinite-since"],
)
def test_a_bad_first_message_is_a_policy_violation(server, token, first: str) -> None:
    ws = connect(server)
    ws.send(fill(first, server, token, 0, SURROGATE))
    assert close_of(ws) == (1008, 'the first message must be {"token": "..."}')


def last_event_id(server: Server) -> int:
    engine = sqlalchemy.create_engine(server.database_url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as connection:
        last = connection.execute(sqlalchemy.text("SELECT max(id) FROM events")).scalar()
    engine.dispose()
    return last or 0


def test_a_good_first_message_still_subscribes(server: Server, token: str) -> None:
    ws = connect(server)
    # `since`: the event is replayed even if it commits before the socket is live
    ws.send(json.dumps({"token": token, "since": last_event_id(server)}))
    created = server.rpc("create", token, expect=201, description=unique("first message"))
    assert json.loads(ws.recv())["type"] == "subscribed"
    event = json.loads(ws.recv())
    assert event["type"] == "added" and event["data"] == created["data"]
    ws.close()


# -- the parser's rules, in-process ----------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # a pair is one character
        (b'{"a": "\\\\ud800"}', {"a": "\\ud800"}),  # an escaped backslash, then text
        (b'{"\\u00e9": [1.5, 1e308, 5e-324, 1e-400]}', {"é": [1.5, 1e308, 5e-324, 0.0]}),
        ('{"a": "é"}'.encode("utf-16"), {"a": "é"}),  # UTF-16 with a BOM, as before
        ('{"a": "é"}'.encode("utf-8-sig"), {"a": "é"}),
        ('{"a": "\U0001f600"}'.encode("utf-32-le"), {"a": "\U0001f600"}),
        ('{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}', None),  # same key, other objects
    ],
)
def test_the_parser_keeps_what_is_text(raw: bytes | str, expected: Any) -> None:
    assert jsonio.parse(raw) == (json.loads(raw) if expected is None else expected)


@pytest.mark.parametrize(
    "raw, words",
    [
        (b'"\\ud800"', "lone UTF-16 surrogate"),
        (b'["ok", {"k": ["\\udfff"]}]', "lone UTF-16 surrogate"),
        (b'{"\\ud83d": 1}', "lone UTF-16 surrogate"),
        (b'"\\ude00\\ud83d"', "lone UTF-16 surrogate"),  # low before high: two lone halves
        (b'"\xed\xa0\x80"', "Invalid JSON"),
        ('"\ud800"'.encode("utf-16-le", "surrogatepass"), "Invalid JSON"),
        (b'{"a": 1, "a": 1}', 'the key "a" appears twice'),
        (b'[{"b": {"\\u00e9": 1, "\xc3\xa9": 2}}]', 'the key "\\u00e9" appears twice'),
        (b"[1e400]", "the number 1e400 is beyond"),
        (b"-1e309", "the number -1e309 is beyond"),
        (b"[NaN]", "Invalid JSON"),
        (b"Infinity", "Invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "Invalid JSON"),
    ],
)
def test_the_parser_refuses_what_cannot_be_kept(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidJSON) as refused:
        jsonio.parse(raw)
    assert words in refused.value.message and refused.value.status == 400


# -- NUL: refused in every text, documents included, on both databases alike ----------

NUL_MESSAGE = "Must not contain NUL characters (\\u0000)."
NUL_CASES = [
    (NATIVE, {"action": "create", "description": "x", "details": {"a": "nul\u0000"}}, "details"),
    (NATIVE, {"action": "create", "description": "x", "details": {"nul\u0000": 1}}, "details"),
    (NATIVE, {"action": "create", "description": "x", "details": {"a": [{"b": ["\u0000"]}]}},
     "details"),
    (NATIVE, {"action": "update", "id": "$ID", "details": {"a": "\u0000"}}, "details"),
    (NATIVE, {"action": "update_many", "ids": ["$ID"], "details": {"\u0000": None}}, "details"),
    (NATIVE, {"action": "create", "description": "x", "dedup_key": "a\u0000"}, "dedup_key"),
    (NATIVE, {"action": "create", "description": "x", "request_id": "a\u0000"}, "request_id"),
    (NATIVE, {"action": "get_all", "created_by": "a\u0000"}, "created_by"),
    (JSONRPC, {"jsonrpc": "2.0", "id": 7, "method": "create",
               "params": {"description": "x", "details": {"a": "\u0000"}}}, "details"),
]  # fmt: skip


def with_ids(value: Any, incident_id: int) -> Any:
    if value == "$ID":
        return incident_id
    if isinstance(value, dict):
        return {key: with_ids(item, incident_id) for key, item in value.items()}
    if isinstance(value, list):
        return [with_ids(item, incident_id) for item in value]
    return value


@pytest.mark.parametrize("dialect, body, field", NUL_CASES)
def test_nul_is_a_400_naming_the_field(
    app: InProcess, app_token: str, incident_id: int, dialect: str, body: dict, field: str
) -> None:
    body = with_ids(body, incident_id)
    (body["params"] if dialect == JSONRPC else body)["token"] = app_token
    response = post(app, "/rpc", json.dumps(body))
    status, _ = refusal(response, dialect)
    assert status == (-32602 if dialect == JSONRPC else 400)
    envelope = response.json()["error"]["data"] if dialect == JSONRPC else response.json()
    assert envelope["status"] == 400 and field in envelope["data"]["errors"], envelope
    if field == "details":
        assert envelope["data"]["errors"]["details"] == [NUL_MESSAGE]


def test_legacy_create_with_nul_keeps_its_sentence(app: InProcess, app_token: str) -> None:
    body = json.dumps({"token": app_token, "incident": "nul\u0000", "source": "operator"})
    answer = post(app, "/incidents/create/", body)
    assert refusal(answer, LEGACY) == (400, "Incident is required")


# -- cursors: forged ones are a 400, the calendar's ends are pages like any other ------


def cursor(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_CURSORS = {
    "year-10000-in-utc": cursor(["9999-12-31T23:59:59-14:00", 1]),
    "year-0-in-utc": cursor(["0001-01-01T00:00:00+14:00", 1]),
    "nested-200k-deep": cursor("[" * 200_000 + "]" * 200_000),
    "objects-100k-deep": cursor('{"a": ' * 100_000 + "1" + "}" * 100_000),
    "id-true": cursor(["2026-01-01T00:00:00+00:00", True]),
    "id-past-63-bits": cursor(["2026-01-01T00:00:00+00:00", 2**63]),
    "no-offset": cursor(["2026-01-01T00:00:00", 1]),  # not one that we issue
    "id-infinity": cursor('["2026-01-01T00:00:00+00:00", 1e400]'),
    "three-items": cursor('["2026-01-01T00:00:00+00:00", 1, "x"]'),
    "repeated-key": cursor('{"2026-01-01T00:00:00+00:00": 1, "2026-01-01T00:00:00+00:00": 2}'),
    "not-base64": "not base64 at all!",
    "not-ascii": "é",
}


@pytest.mark.parametrize("dialect", [NATIVE, JSONRPC])
@pytest.mark.parametrize("name", BAD_CURSORS)
def test_forged_cursors_are_a_400_naming_it(app: InProcess, app_token: str, dialect, name) -> None:
    params = {"token": app_token, "cursor": BAD_CURSORS[name]}
    body = {"action": "get_all", **params}
    if dialect == JSONRPC:
        body = {"jsonrpc": "2.0", "id": 1, "method": "get_all", "params": params}
    response = post(app, "/rpc", json.dumps(body))
    status, _ = refusal(response, dialect)
    assert status == (-32602 if dialect == JSONRPC else 400)
    envelope = response.json()["error"]["data"] if dialect == JSONRPC else response.json()
    assert envelope["data"]["errors"] == {"cursor": ["Not a cursor this service issued."]}


def test_the_ends_of_the_calendar_are_stored_and_paged(app: InProcess, app_token: str) -> None:
    """The first and last moments a timestamp can hold: created, read back, and paged
    through with the cursor of each, on either database."""
    owner = unique("calendar")
    name = owner[:60]
    app.rpc("user_create", app_token, expect=201, username=name, password="long enough password",
               role="reporter")  # fmt: skip
    reporter = app.login(name, "long enough password")
    ends = ["9999-12-31T23:59:59.999999+00:00", "0001-01-01T00:00:00+00:00"]
    created = [app.rpc("create", reporter, expect=201, description=owner, date=moment)["data"]
               for moment in ends]  # fmt: skip
    assert [incident["created_at"] for incident in created] == ends
    pages, next_cursor = [], None
    while True:
        params = {"limit": 1} | ({"cursor": next_cursor} if next_cursor else {})
        page = app.rpc("get_all", reporter, expect=200, **params)["data"]
        pages.extend(page["incidents"])
        next_cursor = page["next_cursor"]
        if next_cursor is None:
            break
    assert pages == created  # newest first: year 9999, then year 1
    last = cursor([ends[1], created[1]["id"]])
    assert app.rpc("get_all", reporter, expect=200, cursor=last)["data"]["incidents"] == []


# -- tokens whose claims are not what we sign ------------------------------------------


def sign(server: Server | InProcess, claims: dict[str, Any]) -> str:
    """A token signed exactly as the server signs, with its SECRET_KEY (conftest's)."""
    return URLSafeTimedSerializer(server.env["SECRET_KEY"], salt="incident-rpc-token").dumps(claims)


def epoch_of_user_one(server: Server | InProcess) -> int:
    """The first user's (the administrator's) session epoch, read from its database."""
    engine = sqlalchemy.create_engine(server.database_url, poolclass=sqlalchemy.NullPool)
    with engine.connect() as connection:
        query = sqlalchemy.text("SELECT session_epoch FROM users WHERE id = 1")
        epoch = connection.execute(query).scalar_one()
    engine.dispose()
    return epoch


FORGED_CLAIMS = {
    "user-id-true": lambda epoch: {"u": True, "e": epoch},  # True == 1: the administrator
    "epoch-boolean": lambda epoch: {"u": 1, "e": bool(epoch)} if epoch in (0, 1) else None,
    "user-id-past-64-bits": lambda epoch: {"u": 2**70, "e": epoch},
    "user-id-zero": lambda epoch: {"u": 0, "e": epoch},
    "epoch-float": lambda epoch: {"u": 1, "e": float(epoch)},
    "epoch-missing": lambda epoch: {"u": 1},
}


@pytest.fixture(params=sorted(FORGED_CLAIMS))
def forged(request: pytest.FixtureRequest, server: Server) -> str:
    claims = FORGED_CLAIMS[request.param](epoch_of_user_one(server))
    if claims is None:
        pytest.skip("the administrator's epoch is neither 0 nor 1")
    return sign(server, claims)


def test_forged_claims_are_refused_in_every_dialect(server: Server, forged: str) -> None:
    native = post(server, "/rpc", json.dumps({"action": "whoami", "token": forged}))
    assert refusal(native, NATIVE) == (401, "Invalid token")
    legacy = post(server, "/incidents/get_all/", json.dumps({"token": forged}))
    assert refusal(legacy, LEGACY) == (401, "Invalid token")
    call = {"jsonrpc": "2.0", "id": 1, "method": "whoami", "params": {"token": forged}}
    assert refusal(post(server, "/rpc", json.dumps(call)), JSONRPC) == (-32001, "Invalid token")
    intake = post(server, "/integrations/alertmanager", notification([]), forged)
    assert refusal(intake, ALERTMANAGER) == (401, "Invalid token")
    assert close_of(connect(server, f"?token={forged}")) == (1008, "Invalid token")


def test_a_well_formed_token_of_user_one_still_works(app: InProcess) -> None:
    app_token = sign(app, {"u": 1, "e": epoch_of_user_one(app)})
    assert app.rpc("whoami", app_token, expect=200)["data"]["username"] == "admin"


# -- Alertmanager: a poison alert neither holds back the others nor comes back ---------


def alert(fingerprint: str, **changes: Any) -> dict[str, Any]:
    return {
        "status": "firing", "fingerprint": fingerprint,
        "labels": {"alertname": "ScooterDown", "severity": "high", "zone": "b"},
        "annotations": {"summary": f"summary of {fingerprint}"},
        "startsAt": "2026-11-23T02:19:44.000Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=up", **changes,
    }  # fmt: skip


@pytest.fixture(scope="module")
def agent(app: InProcess, app_token: str) -> str:
    """An agent's API key: the webhook resolves, so it needs the agent role."""
    name = unique("bad-input-am")[:40]
    return app.rpc("key_create", app_token, expect=201, name=name, role="agent")["data"]["key"]


NUL, CLEAN = "a\u0000b", "a\ufffdb"
URL = "http://prometheus.example/graph?g0.expr="


def test_alertmanager_stores_an_alert_with_nul_in_its_url(app: InProcess, agent: str) -> None:
    """A NUL in generatorURL (PostgreSQL cannot store it) made the whole notification a
    500 that Alertmanager resent forever; the alert is stored with U+FFFD instead."""
    fingerprints = [unique("good"), unique("poison"), unique("other")]
    alerts = [alert(fingerprints[0]), alert(fingerprints[1], generatorURL=URL + NUL),
              alert(fingerprints[2])]  # fmt: skip
    answer = post(app, "/integrations/alertmanager", notification(alerts), agent)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["data"]["alerts"]
    assert [(e["fingerprint"], e["result"]["status"]) for e in entries] == [
        (fingerprint, 201) for fingerprint in fingerprints
    ]
    stored = app.rpc("get", agent, expect=200, id=entries[1]["result"]["data"]["id"])["data"]
    assert stored["details"]["generatorURL"] == URL + CLEAN


def test_alertmanager_replaces_nul_wherever_it_is(app: InProcess, agent: str) -> None:
    """Labels (keys too), annotations and the fingerprint: the same replacement in the
    firing and the resolved alert, so the one resolves the other."""
    poison = unique("nul\u0000print")
    firing = alert(poison, generatorURL=URL + NUL,
                   labels={"alertname": NUL, f"key{NUL}": NUL, "severity": "critical"},
                   annotations={"summary": NUL, "description": f"description {NUL}"})  # fmt: skip
    answer = post(app, "/integrations/alertmanager", notification([firing]), agent)
    assert answer.status_code == 200, answer.text
    stored = answer.json()["data"]["alerts"][0]["result"]["data"]
    assert stored["dedup_key"] == f"alertmanager:{poison.replace(chr(0), chr(0xFFFD))}"
    assert stored["title"] == CLEAN and stored["description"] == f"description {CLEAN}"
    assert stored["details"]["generatorURL"] == URL + CLEAN
    assert stored["details"]["labels"] == {"alertname": CLEAN, f"key{CLEAN}": CLEAN,
                                           "severity": "critical"}  # fmt: skip
    assert app.rpc("get", agent, expect=200, id=stored["id"])["data"] == stored
    again = post(app, "/integrations/alertmanager", notification([firing]), agent)
    assert again.json()["data"]["alerts"][0]["result"]["data"]["occurrences"] == 2
    resolved = notification([{**firing, "status": "resolved"}])
    done = post(app, "/integrations/alertmanager", resolved, agent).json()
    assert done["data"]["alerts"][0]["result"]["data"]["ids"] == [stored["id"]]


@pytest.mark.parametrize(
    "poison",
    [
        {"status": "pending"},
        {"fingerprint": ""},
        {"labels": ["not", "a", "map"]},
        {"labels": {"alertname": 5}},
        {"startsAt": "yesterday"},
        {"startsAt": "9999-12-31T23:59:59-14:00"},  # past year 9999 in UTC
    ],
)
def test_alertmanager_refuses_an_invalid_alert_alone(app, agent: str, poison: dict) -> None:
    """The others are stored; the answer is a 400, which Alertmanager does not resend."""
    first, second = unique("first"), unique("second")
    alerts = [alert(first), {**alert(unique("poison")), **poison}, alert(second), 7]
    answer = post(app, "/integrations/alertmanager", notification(alerts), agent)
    status, error = refusal(answer, ALERTMANAGER)
    assert (status, error) == (400, "2 of 4 alerts refused as invalid; the others stored")
    entries = answer.json()["data"]["alerts"]
    assert [entry["result"]["status"] for entry in entries] == [201, 400, 201, 400]
    assert [entry["fingerprint"] for entry in entries] == [first, alerts[1]["fingerprint"],
                                                          second, None]  # fmt: skip
    for entry in entries[::2]:
        stored = app.rpc("get", agent, expect=200, id=entry["result"]["data"]["id"])["data"]
        assert stored["dedup_key"] == f"alertmanager:{entry['fingerprint']}"
