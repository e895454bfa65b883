"""What a subscriber is owed from the moment it connects (contract section 6).

A socket opened without `since` starts at the position its `subscribed` greeting
names, which the server takes before it answers the handshake: every change that
commits after the client's handshake has returned reaches the socket, whether its
token came in the URL or comes in a first message, sent before or after the change.
With `since`, the greeting names that id and the log after it follows, none missed,
none twice. Real gunicorn (two workers, so the change and the socket often meet on
different workers), real WebSocket clients, on SQLite and PostgreSQL.
"""

import json
import threading
from typing import Any

import pytest
import websocket
from sqlalchemy import create_engine, text
from support import Server

ROUNDS = 50
TIMEOUT = 10  # seconds a single read may take: a bound on a failure, far above a delivery
ORDERS = ["token in the URL", "token, then create", "create, then token"]


@pytest.fixture(scope="module")
def two_workers(shared_servers) -> Server:
    return shared_servers(workers=2)  # the `server` of the other modules


@pytest.fixture(scope="module")
def token(two_workers: Server) -> str:
    return two_workers.login()


def open_socket(server: Server, query: str = "") -> websocket.WebSocket:
    """A socket whose handshake has returned: connected, from the client's side."""
    url = f"ws://127.0.0.1:{server.port}/ws" + (f"?{query}" if query else "")
    return websocket.create_connection(url, timeout=TIMEOUT)


def connect_then_create(server: Server, token: str, order: str) -> tuple[Any, dict[str, Any]]:
    """Open a socket and create an incident the moment the handshake returns, with the
    token in `order`; (the socket, the incident)."""
    ws = open_socket(server, f"token={token}" if order == "token in the URL" else "")
    if order == "token, then create":
        ws.send(json.dumps({"token": token}))  # and at once, without waiting for an answer
    incident = server.rpc("create", token, expect=201, description="right after connecting")
    if order == "create, then token":
        ws.send(json.dumps({"token": token}))
    return ws, incident["data"]


def message(ws: websocket.WebSocket) -> dict[str, Any]:
    opcode, data = ws.recv_data()  # answers pings on the way
    assert opcode == websocket.ABNF.OPCODE_TEXT, (opcode, data)
    return json.loads(data)


def until_one_of(ws: websocket.WebSocket, incident_ids: set[int]) -> list[dict[str, Any]]:
    """Messages up to and including the first event about one of these incidents."""
    received = [message(ws)]
    while received[-1].get("data", {}).get("id") not in incident_ids:
        received.append(message(ws))
    return received


def logged_ids(database_url: str, after: int) -> list[int]:
    """What the event log holds after `after`, in id order: the truth to match."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        query = text("SELECT id FROM events WHERE id > :after ORDER BY id")
        ids = list(connection.execute(query, {"after": after}).scalars())
    engine.dispose()
    return ids


@pytest.mark.parametrize("order", ORDERS)
def test_a_change_right_after_connecting_reaches_the_subscriber(
    two_workers: Server, token: str, order: str
):
    """Connect, create at once, fifty times. Each socket is read once the next round's
    incident exists, which it gets too (it is long subscribed by then): so a socket that
    missed its own incident shows it at once, by getting the next one first."""
    lost, ungreeted = [], []
    following = connect_then_create(two_workers, token, order)
    try:
        for round_number in range(1, ROUNDS + 1):
            (ws, own), following = following, connect_then_create(two_workers, token, order)
            try:
                *before, event = until_one_of(ws, {own["id"], following[1]["id"]})
            except websocket.WebSocketTimeoutException:  # missed both
                before, event = [], {}
            finally:
                ws.close()
            if event.get("data") != own:
                lost.append(round_number)
            elif not greeted(before, event):
                ungreeted.append([*before, event])
    finally:
        following[0].close()
    assert not lost, f"the added event never came in {len(lost)} of {ROUNDS} rounds: {lost}"
    assert not ungreeted, f"not one greeting, then the event: {ungreeted[:3]}"


def greeted(before: list[dict[str, Any]], event: dict[str, Any]) -> bool:
    """The greeting came first and named a position below every event after it. Events
    of changes that committed just before the handshake may come between: on PostgreSQL
    they were not final yet (an older transaction anywhere on the server held them back),
    so they lie above the position, and arrive once, in order."""
    if not before or set(before[0]) != {"type", "position"} or before[0]["type"] != "subscribed":
        return False
    ids = [before[0]["position"], *(earlier["id"] for earlier in before[1:]), event["id"]]
    return type(ids[0]) is int and ids == sorted(set(ids)) and event["type"] == "added"


@pytest.mark.parametrize("where", ["URL", "first message"])
def test_since_replays_the_rest_without_gap_or_duplicate(
    two_workers: Server, token: str, where: str
):
    """The greeting names `since`; then every later event, replayed and then live while
    another client writes, each once and in id order."""
    for _ in range(3):
        two_workers.rpc("create", token, expect=201, description="before the socket")
    since = logged_ids(two_workers.database_url, 0)[-3]  # two of them are replayed
    writer = threading.Thread(target=create_many, args=(two_workers, token, 30))
    writer.start()
    if where == "URL":
        ws = open_socket(two_workers, f"token={token}&since={since}")
    else:
        ws = open_socket(two_workers)
        ws.send(json.dumps({"token": token, "since": since}))
    try:
        assert message(ws) == {"type": "subscribed", "position": since}
        writer.join(60)
        assert not writer.is_alive()
        ids = logged_ids(two_workers.database_url, since)
        assert len(ids) == 2 + 30
        received = [message(ws)]
        while received[-1]["id"] < ids[-1]:
            received.append(message(ws))
        assert [event["id"] for event in received] == ids
    finally:
        ws.close()


def create_many(server: Server, token: str, count: int) -> None:
    for number in range(count):
        server.rpc("create", token, expect=201, description=f"during the replay {number}")
