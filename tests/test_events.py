"""Change events end to end: real gunicorn servers, real WebSocket clients, real databases.

Single-instance behaviour runs on SQLite and PostgreSQL; the cluster (two instances
of two workers on one PostgreSQL database) and the commit-order cases need PostgreSQL.
"""

import copy
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from queueing import CLOSE_WAIT, ESTABLISHED, read_by_server, tcp_sockets
from sqlalchemy import create_engine, text
from support import QUICK_STOP, Server, wait_for

from incident_rpc.events.fanout import LISTENER_NAME

TIMEOUT = 15  # seconds any single socket read may take before the test fails
EVENT_KEYS = {"type", "id", "at", "actor", "data"}
BIG = "x" * 9000  # an incident description that makes an event about 9 kB


# ---------------------------------------------------------------- helpers


def connect(server: Server, token: str | None, since: int | None = None, path: str = "/ws", **kw):
    query = [f"token={token}"] if token is not None else []
    query += [f"since={since}"] if since is not None else []
    url = f"ws://127.0.0.1:{server.port}{path}" + ("?" + "&".join(query) if query else "")
    return websocket.create_connection(url, timeout=TIMEOUT, **kw)


def greeting(ws: websocket.WebSocket) -> int:
    """The position that the socket's first message, `subscribed`, names."""
    opcode, data = ws.recv_data()  # answers pings on the way
    assert opcode == websocket.ABNF.OPCODE_TEXT, (opcode, data)
    message = json.loads(data)
    assert set(message) == {"type", "position"} and message["type"] == "subscribed", message
    return message["position"]


def next_event(ws: websocket.WebSocket) -> dict[str, Any]:
    """The next event, passing over the greeting as older clients do."""
    opcode, data = ws.recv_data()  # answers pings on the way
    assert opcode == websocket.ABNF.OPCODE_TEXT, (opcode, data)
    event = json.loads(data)
    if event.get("type") == "subscribed":
        assert set(event) == {"type", "position"}, event
        return next_event(ws)
    assert set(event) == EVENT_KEYS, event
    return event


def events_until(ws: websocket.WebSocket, last_id: int) -> list[dict[str, Any]]:
    """Read events until one with id >= last_id arrives."""
    received = [next_event(ws)]
    while received[-1]["id"] < last_id:
        received.append(next_event(ws))
    return received


def close_of(ws: websocket.WebSocket) -> tuple[int, str]:
    """The server's close (code, reason); nothing but pings may come before it."""
    for _ in range(10):
        frame = ws.recv_frame()  # raw: a peer the server dropped cannot answer anything
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return struct.unpack("!H", frame.data[:2])[0], frame.data[2:].decode()
        assert frame.opcode == websocket.ABNF.OPCODE_PING, (frame.opcode, frame.data[:200])
    raise AssertionError("the server did not close the socket")


def logged_ids(database_url: str, after: int) -> list[int]:
    """What the event log holds after `after`, in id order: the truth subscribers must match."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        ids = connection.execute(
            text("SELECT id FROM events WHERE id > :after ORDER BY id"), {"after": after}
        ).scalars()
        result = list(ids)
    engine.dispose()
    return result


def last_logged_id(database_url: str) -> int:
    ids = logged_ids(database_url, 0)
    return ids[-1] if ids else 0


def start(new_database_url, tmp_path_factory, workers: int = 2, **env: str) -> Server:
    instance = tmp_path_factory.mktemp("instance")
    return Server(new_database_url(), instance, workers=workers, **env).start()


@pytest.fixture(scope="module")
def single(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """One instance, two workers; 1 s pings and token checks, so tests need not wait long."""
    server = start(
        new_database_url, tmp_path_factory, EVENTS_PING_INTERVAL="1", EVENTS_REAUTH_INTERVAL="1"
    )
    yield server
    server.stop_soon()


@pytest.fixture(scope="module")
def single_token(single: Server) -> str:
    return single.login()


# ---------------------------------------------------------------- one instance


def test_events_of_commands_arrive_in_the_contract_shape(single: Server, single_token: str):
    since = last_logged_id(single.database_url)
    sockets = [
        connect(single, single_token, since=since),
        connect(single, single_token, since=since, path="/api/v1/ws/"),
    ]
    created = single.rpc("create", single_token, expect=201, description="Scooter 1 offline")
    updated = single.rpc("update", single_token, expect=200, id=created["data"]["id"], title="t")
    resolved = single.rpc("resolve", single_token, expect=200, id=created["data"]["id"])
    answers = [created, updated, resolved]
    ids = logged_ids(single.database_url, since)
    assert len(ids) == 3
    for ws in sockets:
        received = events_until(ws, ids[-1])
        assert [event["id"] for event in received] == ids
        assert [event["type"] for event in received] == ["added", "updated", "resolved"]
        assert [event["data"] for event in received] == [answer["data"] for answer in answers]
        assert {event["actor"] for event in received} == {"admin"}
        ws.close()


def test_without_since_only_live_events_arrive(single: Server, single_token: str):
    """No replay: the socket starts at the last final event before its handshake, and
    what is created the moment the handshake returns reaches it (test_subscribe.py)."""
    single.rpc("create", single_token, expect=201, description="before the socket")
    before = last_logged_id(single.database_url)
    ws = connect(single, single_token)
    live = single.rpc("create", single_token, expect=201, description="live")
    position = greeting(ws)
    assert position <= before  # below it only while an older transaction held events back
    ids = logged_ids(single.database_url, position)
    received = events_until(ws, ids[-1])
    assert [event["id"] for event in received] == ids
    assert received[-1]["data"] == live["data"]
    ws.close()


def test_failed_commands_emit_nothing(single: Server, single_token: str):
    since = last_logged_id(single.database_url)
    ws = connect(single, single_token, since=since)
    incident = single.rpc("create", single_token, expect=201, description="d")["data"]
    single.rpc("resolve", single_token, expect=200, id=incident["id"])
    single.rpc("resolve", single_token, expect=409, id=incident["id"])  # already resolved
    single.rpc("update", single_token, expect=409, id=incident["id"], version=1, title="t")
    single.rpc("update", single_token, expect=200, id=incident["id"], status="completed")  # no-op
    single.rpc("update", single_token, expect=404, id=10**12, title="t")
    single.rpc("create", single_token, expect=400, description="")
    single.rpc("create", "not a token", expect=401, description="d")
    sentinel = single.rpc("create", single_token, expect=201, description="after the failures")
    ids = logged_ids(single.database_url, since)
    received = events_until(ws, ids[-1])
    assert [event["type"] for event in received] == ["added", "resolved", "added"]
    assert [event["id"] for event in received] == ids
    assert received[-1]["data"] == sentinel["data"]
    ws.close()


class SignedLongAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 10 * 24 * 3600


def test_a_batch_emits_the_events_of_its_successful_commands_in_order(
    single: Server, single_token: str
):
    since = last_logged_id(single.database_url)
    ws = connect(single, single_token, since=since)
    command = {"action": "create", "token": single_token}
    batch = [{**command, "description": f"burst {n}"} for n in range(5)]
    batch.insert(2, {**command, "description": ""})  # fails alone: no event
    answers = single.post("/rpc", batch).json()
    assert [answer["status"] for answer in answers] == [201, 201, 400, 201, 201, 201]
    created = [answer["data"] for answer in answers if answer["status"] == 201]
    resolved = single.rpc(
        "resolve_many", single_token, expect=200, ids=[incident["id"] for incident in created]
    )
    assert resolved["data"]["changed"] == 5
    ids = logged_ids(single.database_url, since)
    received = events_until(ws, ids[-1])
    assert [event["id"] for event in received] == ids
    assert [event["data"] for event in received[:5]] == created
    assert [event["type"] for event in received] == ["added"] * 5 + ["resolved"] * 5
    ws.close()


def expired_token(server: Server) -> str:
    """A token for the first admin, correctly signed with the server's key, ten days old."""
    serializer = URLSafeTimedSerializer(
        server.env["SECRET_KEY"], salt="incident-rpc-token", signer=SignedLongAgo
    )
    return serializer.dumps({"u": 1, "e": 0})


@pytest.mark.parametrize(
    "token, first_message, reason",
    [
        (None, '{"since": 0}', "Token is required"),
        ("not-a-token", None, "Invalid token"),
        (None, '{"token": "not-a-token"}', "Invalid token"),
        (None, "not json", 'the first message must be {"token": "..."}'),
        (None, "[1, 2]", 'the first message must be {"token": "..."}'),
        ("expired", None, "Token is expired"),
        (None, "expired", "Token is expired"),
    ],
)
def test_bad_tokens_get_no_events_and_a_policy_violation(
    single: Server, single_token: str, token: str | None, first_message: str | None, reason: str
):
    expired = expired_token(single)
    ws = connect(single, expired if token == "expired" else token, since=0)
    if first_message is not None:
        ws.send(json.dumps({"token": expired}) if first_message == "expired" else first_message)
    single.rpc("create", single_token, expect=201, description="must not reach the socket")
    assert close_of(ws) == (1008, reason)  # no event frame before the close


def test_token_in_the_first_message_and_a_bad_since(single: Server, single_token: str):
    since = last_logged_id(single.database_url)
    ws = connect(single, None)
    ws.send(json.dumps({"token": single_token, "since": since}))
    created = single.rpc("create", single_token, expect=201, description="first message")
    assert next_event(ws)["data"] == created["data"]
    ws.close()
    for bad in ("-1", "abc", "1.5", str(2**63)):
        ws = connect(single, single_token, since=bad)  # type: ignore[arg-type]
        assert close_of(ws)[0] == 1008


def new_user(server: Server, admin_token: str, role: str) -> tuple[str, str]:
    """(username, token) of a fresh user with that role."""
    name = f"{role}{time.monotonic_ns()}"
    password = "a long enough password"
    server.rpc("user_create", admin_token, expect=201, username=name, password=password, role=role)
    return name, server.login(name, password)


def test_a_reporter_gets_only_its_own_incidents(single: Server, single_token: str):
    name, reporter = new_user(single, single_token, "reporter")
    since = last_logged_id(single.database_url)
    mine, everything = (
        connect(single, reporter, since=since),
        connect(single, single_token, since=since),
    )
    others = single.rpc("create", single_token, expect=201, description="not the reporter's")
    own = single.rpc("create", reporter, expect=201, description="the reporter's")
    single.rpc("resolve", single_token, expect=200, id=others["data"]["id"])
    single.rpc("resolve", single_token, expect=200, id=own["data"]["id"])
    ids = logged_ids(single.database_url, since)
    assert len(events_until(everything, ids[-1])) == 4
    received = events_until(mine, ids[-1])
    assert [(event["type"], event["data"]["id"]) for event in received] == [
        ("added", own["data"]["id"]),
        ("resolved", own["data"]["id"]),
    ]
    assert {event["data"]["created_by"] for event in received} == {name}
    for ws in (mine, everything):
        ws.close()


def test_a_socket_ends_soon_after_its_session_does(single: Server, single_token: str):
    _, agent = new_user(single, single_token, "agent")
    ws = connect(single, agent)
    greeting(ws)  # subscribed: the token was checked before the logout, not after it
    single.rpc("logout", agent, expect=200)
    assert close_of(ws) == (1008, "Invalid token")  # within EVENTS_REAUTH_INTERVAL (1 s)


def test_resume_with_since_misses_nothing_and_repeats_nothing(single: Server, single_token: str):
    since = last_logged_id(single.database_url)
    writer = Background(write_many, [single], single_token, 2, 15)
    writer.start()
    received: list[dict[str, Any]] = []
    ws = connect(single, single_token, since=since)
    for _ in range(10):
        received.append(next_event(ws))
    ws.shutdown()  # drop the connection mid-stream, no close handshake
    writer.finish()
    ids = logged_ids(single.database_url, since)
    ws = connect(single, single_token, since=received[-1]["id"])
    received += events_until(ws, ids[-1])
    assert [event["id"] for event in received] == ids
    ws.close()


def test_idle_sockets_are_pinged_and_dead_peers_dropped(single: Server, single_token: str):
    held_before = client_connections(single)
    idle = connect(single, single_token)
    greeting(idle)
    opcode, _ = idle.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PING
    dead = [connect(single, single_token) for _ in range(10)]  # never read, never answer
    assert client_connections(single) >= held_before + 11
    ports = [ws.sock.getsockname()[1] for ws in dead]
    wait_for(lambda: closed_by_server(single, ports), 15, "the dead peers were not dropped")
    for ws in dead:
        greeting(ws)
        assert close_of(ws) == (1008, "Ping/Pong timeout")
    idle.close()
    wait_for(lambda: client_connections(single) <= held_before, 10,
             "the workers did not let go of every socket")  # fmt: skip


def closed_by_server(server: Server, client_ports: list[int]) -> bool:
    """Whether the server has closed its end of each of these connections (the
    client's end is then in CLOSE_WAIT, its unread frames still there to read)."""
    states = {entry.local: entry.state for entry in tcp_sockets() if entry.remote == server.port}
    return all(states.get(port) == CLOSE_WAIT for port in client_ports)


def client_connections(server: Server) -> int:
    """TCP connections from clients that the server's workers hold open."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            if port == server.port and state != "0A":  # 0A: the listening socket
                inodes.add(f"socket:[{inode}]")
    held = 0
    for pid in worker_pids(server):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                held += os.readlink(fd) in inodes
            except OSError:  # closed meanwhile
                pass
    return held


def worker_pids(server: Server) -> list[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def test_a_slow_subscriber_is_closed_and_others_carry_on(new_database_url, tmp_path_factory):
    server = start(new_database_url, tmp_path_factory, 1, EVENTS_QUEUE_SIZE="16")
    try:
        token = server.login()
        since = last_logged_id(server.database_url)
        fast = connect(server, token, since=since)
        small_buffers = [
            (socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536),
            (socket.SOL_SOCKET, socket.SO_RCVBUF, 1),
        ]
        slow = connect(server, token, since=since, sockopt=small_buffers)  # reads little yet
        # Both live before the flood: a socket still replaying would get every event from
        # the log (its replay starts over when its queue overflows) and never be closed.
        # A first event, created now, reaches both: they have replayed and are live.
        assert greeting(slow) == since
        server.rpc("create", token, expect=201, description="both live")
        since = last_logged_id(server.database_url)
        for ws in (fast, slow):
            assert next_event(ws)["id"] == since
        fast_received: list[dict[str, Any]] = []
        reader = Background(lambda: fast_received.extend(next_event(fast) for _ in range(80)))
        reader.start()
        for _ in range(80):
            server.rpc("create", token, expect=201, description=BIG)
        reader.finish()
        ids = logged_ids(server.database_url, since)
        assert [event["id"] for event in fast_received] == ids
        slow_received: list[int] = []
        while True:
            frame = slow.recv_frame()
            if frame.opcode != websocket.ABNF.OPCODE_TEXT:
                break
            slow_received.append(json.loads(frame.data)["id"])
        assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
        code, reason = struct.unpack("!H", frame.data[:2])[0], frame.data[2:].decode()
        got = len(slow_received)
        assert slow_received == ids[:got] and got < len(ids)
        assert code == 1013
        assert reason == f"too slow, events dropped; resume with since={slow_received[-1]}"
        slow.shutdown()
        resumed = connect(server, token, since=slow_received[-1])
        assert [event["id"] for event in events_until(resumed, ids[-1])] == ids[got:]
        for ws in (fast, resumed):
            ws.close()
    finally:
        server.stop_soon()


def test_a_stopping_server_tells_subscribers_where_to_resume(new_database_url, tmp_path_factory):
    server = start(new_database_url, tmp_path_factory, 1)
    try:
        token = server.login()
        ws = connect(server, token, since=0)
        created = server.rpc("create", token, expect=201, description="before the restart")
        last = next_event(ws)
        assert last["data"] == created["data"]
        stopping = Background(server.stop)
        started = time.monotonic()
        stopping.start()
        assert close_of(ws) == (1001, f"server restarting; resume with since={last['id']}")
        stopping.finish()
        assert time.monotonic() - started < 8  # not the 10 s graceful timeout
    finally:
        server.stop_soon()


class Watcher:
    """`python client.py watch` in its own process, its output lines collected."""

    def __init__(self, server: Server, token: str, *args: str) -> None:
        env = {**os.environ, "INCIDENT_RPC_URL": server.url, "INCIDENT_RPC_TOKEN": token}
        command = [sys.executable, "client.py", "--json", "watch", *args]
        self.process = subprocess.Popen(
            command, cwd=Path(__file__).parent.parent, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def events(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(self.lines.get(timeout=TIMEOUT)) for _ in range(count)]

    def stop_when_done(self) -> tuple[int, str]:
        _, stderr = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, stderr

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        _, stderr = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, stderr


def test_client_watch_prints_events_and_resumes_after_a_restart(new_database_url, tmp_path_factory):
    server = start(new_database_url, tmp_path_factory, 1, **QUICK_STOP)
    try:
        token = server.login()
        since = last_logged_id(server.database_url)
        watcher = Watcher(server, token, "--since", str(since))
        first = server.rpc("create", token, expect=201, description="before the restart")
        received = watcher.events(1)
        assert [event["data"] for event in received] == [first["data"]]
        server.stop()
        server.start()  # the same port and database
        second = server.rpc("create", token, expect=201, description="after the restart")
        assert [event["data"] for event in watcher.events(1)] == [second["data"]]
        status, stderr = watcher.stop()
        assert status == 130  # Ctrl-C, as a shell reports it
        assert f"reconnecting (since={received[0]['id']})" in stderr
        assert watcher.lines.empty()  # nothing twice
    finally:
        server.stop_soon()


def test_client_watch_stops_on_a_bad_token(single: Server):
    status, stderr = Watcher(single, "not-a-token").stop_when_done()
    assert status == 1 and "error 401: Invalid token" in stderr


def in_process_app(server: Server):
    """The app itself, in this process, on the server's database: to hold a transaction open."""
    from incident_rpc import create_app

    return create_app(
        {"SQLALCHEMY_DATABASE_URI": server.database_url, "SECRET_KEY": server.env["SECRET_KEY"]}
    )


def open_transaction_with_an_event(description: str) -> int:
    """Create an incident and write its event, as `create` does, but do not commit yet;
    the event's id."""
    from incident_rpc.events import journal
    from incident_rpc.extensions import db
    from incident_rpc.models import Incident, Status, utcnow

    now = utcnow()
    incident = Incident(
        description=description, status=Status.new, created_by="test", created_at=now,
        updated_at=now,
    )  # fmt: skip
    db.session.add(incident)
    journal.record("added", incident, "test")
    journal.write_pending(db.session)  # what commit does first
    return db.session.execute(text("SELECT max(id) FROM events")).scalar_one()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_younger_transactions_events_wait_for_an_older_one(
    single: Server, single_token: str, outcome: str
):
    """T1 writes an event, then dawdles; T2 commits its own at once, with a higher id.
    Nobody waits for T1's commit, but no subscriber sees T2's event before T1 has ended:
    a reader that passed T2's id could never go back for T1's. Then both arrive, in
    id order (or T2's alone, if T1 rolls back)."""
    from incident_rpc.extensions import db

    if single.database_url.startswith("sqlite"):
        pytest.skip("SQLite serializes writers (BEGIN IMMEDIATE): T2 would wait for T1")
    since = last_logged_id(single.database_url)
    ws = connect(single, single_token, since=since)
    app = in_process_app(single)
    with app.app_context():
        first_id = open_transaction_with_an_event("T1, slow to commit")
        answer = single.rpc("create", single_token, expect=201, description="T2")
        t2_committed = database_now(single.database_url)
        assert logged_ids(single.database_url, since)[-1] > first_id  # T2's, committed

        # Nothing can arrive as a sign (every later event waits behind T1 as well): wait
        # until every listener has read the log since T2 committed, and held it back,
        # reading the socket meanwhile (its pongs keep it open; no event may come).
        def held_back() -> bool:
            ws.settimeout(0.05)
            with pytest.raises(websocket.WebSocketTimeoutException):
                next_event(ws)
            return listeners_read_since(single.database_url, t2_committed)

        wait_for(held_back, 10, "the listeners did not read the log after T2's commit")
        ws.settimeout(0.5)  # below the ping interval: a ping must not look like an event
        with pytest.raises(websocket.WebSocketTimeoutException):
            next_event(ws)  # held back behind T1
        getattr(db.session, outcome)()
        db.session.remove()
        db.engine.dispose()
    ws.settimeout(TIMEOUT)
    ids = logged_ids(single.database_url, since)
    if outcome == "commit":
        assert ids[:-1] == [first_id] and ids[-1] > first_id
    else:
        assert len(ids) == 1 and ids[0] > first_id
    received = events_until(ws, ids[-1])
    assert [event["id"] for event in received] == ids
    assert received[-1]["data"] == answer["data"]
    ws.close()


def database_now(database_url: str) -> Any:
    """The database server's clock."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        now = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
    engine.dispose()
    return now


def listeners_read_since(database_url: str, moment: Any) -> bool:
    """Whether every events listener of this database has run a read that started
    after `moment` and has finished it (pg_stat_activity, by application_name)."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        starts = (
            connection.execute(
                text(
                    "SELECT query_start FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = :name AND state = 'idle'"
                    " AND query NOT LIKE 'LISTEN%' AND query NOT LIKE 'SET%'"
                ),
                {"name": LISTENER_NAME},
            )
            .scalars()
            .all()
        )
        listening = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = :name"
            ),
            {"name": LISTENER_NAME},
        ).scalar_one()
    engine.dispose()
    return bool(starts) and len(starts) == listening and all(start > moment for start in starts)


def test_one_transaction_numbers_at_most_2_to_the_16_events(single: Server):
    """The 65,537th event of one transaction would take the next transaction's ids: the
    commit is refused with a 413 and nothing is written."""
    from incident_rpc.dispatch import transaction
    from incident_rpc.events import journal
    from incident_rpc.extensions import db
    from incident_rpc.schemas.incidents import incident_out

    if single.database_url.startswith("sqlite"):
        pytest.skip("SQLite numbers events with its own autoincrement ids")
    since = last_logged_id(single.database_url)
    with in_process_app(single).app_context():
        last_of_65536 = f"(pg_current_xact_id()::text::bigint << {journal.ID_SHIFT}) + 65535"
        db.session.execute(
            text(
                "INSERT INTO events (id, type, incident_id, actor, at, data, changes)"
                f" VALUES ({last_of_65536}, 'updated', 0, 'test', now(), '{{}}', '{{}}')"
            )
        )
        incident = dict.fromkeys(incident_out.fields, None) | {"id": 0, "description": "over"}
        journal.record("updated", incident, "test")
        with pytest.raises(journal.TooManyEvents) as refused:
            transaction.commit()  # the one commit step: it writes the events
        assert refused.value.status == 413
        transaction.rollback()
        db.session.remove()
        db.engine.dispose()
    assert logged_ids(single.database_url, since) == []


# ---------------------------------------------------------------- two instances, PostgreSQL


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory) -> Iterator[list[Server]]:
    """Two instances of two workers each on ONE PostgreSQL database."""
    database_url = postgres.create()
    servers: list[Server] = []
    try:
        for _ in range(2):
            instance = tmp_path_factory.mktemp("instance")
            servers.append(Server(database_url, instance, workers=2).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def cluster_token(cluster: list[Server]) -> str:
    return cluster[0].login()  # the instances share the database and the key


@pytest.mark.postgres
def test_a_client_on_one_instance_gets_the_events_of_the_other(cluster, cluster_token):
    for here, there in (cluster, cluster[::-1]):
        since = last_logged_id(here.database_url)
        sockets = [connect(here, cluster_token, since=since) for _ in range(4)]
        created = there.rpc("create", cluster_token, expect=201, description="over there")
        incident_id = created["data"]["id"]
        there.rpc("update", cluster_token, expect=200, id=incident_id, status="processing")
        there.rpc("resolve", cluster_token, expect=200, id=incident_id)
        ids = logged_ids(here.database_url, since)
        assert len(ids) == 4  # the update to processing also acknowledged it
        for ws in sockets:
            received = events_until(ws, ids[-1])
            assert [event["id"] for event in received] == ids
            assert [event["type"] for event in received] == [
                "added", "updated", "acknowledged", "resolved",
            ]  # fmt: skip
            ws.close()


@pytest.mark.postgres
def test_concurrent_writers_on_both_instances(cluster, cluster_token):
    """Each subscriber gets every event exactly once, ids strictly increasing, none missing."""
    since = last_logged_id(cluster[0].database_url)
    sockets = [connect(server, cluster_token, since=since) for server in cluster for _ in range(3)]
    write_many(cluster, cluster_token, writers=2, rounds=8)
    ids = logged_ids(cluster[0].database_url, since)
    assert len(ids) == 2 * 2 * 8 * 3 and ids == sorted(set(ids))
    for ws in sockets:
        assert [event["id"] for event in events_until(ws, ids[-1])] == ids
        ws.close()


@pytest.mark.postgres
def test_resume_on_the_other_instance_after_a_drop_during_writes(cluster, cluster_token):
    since = last_logged_id(cluster[0].database_url)
    writers = Background(write_many, cluster, cluster_token, 1, 10)
    writers.start()
    ws = connect(cluster[0], cluster_token, since=since)
    received = [next_event(ws) for _ in range(15)]
    ws.shutdown()  # dropped mid-stream, while both instances are still writing
    ws = connect(cluster[1], cluster_token, since=received[-1]["id"])
    writers.finish()
    ids = logged_ids(cluster[0].database_url, since)
    received += events_until(ws, ids[-1])
    assert [event["id"] for event in received] == ids
    ws.close()


@pytest.mark.postgres
def test_queued_requests_leave_the_probes_and_the_channel_alone(postgres, tmp_path_factory):
    """HTTP_CONCURRENCY=1 and its one slot taken by a create that waits for a lock on
    the incidents table (held here): another create waits its turn, the probes and the
    channel do not."""
    from incident_rpc.extensions import db

    server = Server(postgres.create(), tmp_path_factory.mktemp("instance"), workers=1,
                    HTTP_CONCURRENCY="1").start()  # fmt: skip
    try:
        token = server.login()
        server.session.close()  # from here on, the creates' connections are the only ones
        app = in_process_app(server)
        with app.app_context():
            held = open_transaction_with_an_event("holds up the creates")
            db.session.execute(text("LOCK TABLE incidents IN EXCLUSIVE MODE"))  # reads pass
            creates = [Background(write_rounds, server, token, 1) for _ in range(2)]
            for create in creates:
                create.start()

            # They queue: the first waits for the lock, the worker has read the second.
            def queued() -> bool:
                return (
                    waiting_for_a_lock(server.database_url) == 1 and len(read_requests(server)) == 2
                )

            wait_for(queued, 30, "the creates did not queue")
            assert all(create.is_alive() for create in creates)
            assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
            ws = connect(server, token, since=held - 1)  # authenticates while they wait
            db.session.commit()
            for create in creates:
                create.finish()
            db.session.remove()
            db.engine.dispose()
        ids = logged_ids(server.database_url, held - 1)
        assert [event["id"] for event in events_until(ws, ids[-1])] == ids
        ws.close()
    finally:
        server.stop_soon()


def waiting_for_a_lock(database_url: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        count = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    engine.dispose()
    return count


def read_requests(server: Server) -> list[int]:
    """The client ports of the open connections to the server whose every byte the
    worker has read."""
    ports = [entry.local for entry in tcp_sockets()
             if entry.remote == server.port and entry.state == ESTABLISHED]  # fmt: skip
    return [port for port in ports if read_by_server(server, [port])]


def insert_quietly(database_url: str) -> None:
    """An event written as journal.write_pending writes it, but with no NOTIFY after the
    commit: as if the ring were lost."""
    from incident_rpc.events.journal import ID_SHIFT

    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO events (id, type, incident_id, actor, at, data, changes) VALUES"
                f" (pg_current_xact_id()::text::bigint << {ID_SHIFT}, 'updated', 0, 'quiet',"
                " now(), '{}', '{}')"
            )
        )
    engine.dispose()


def live(sockets: list[websocket.WebSocket], server: Server, token: str) -> int:
    """Create an incident and read its event on every socket: each has replayed what
    it was owed and follows live. The event's id."""
    server.rpc("create", token, expect=201, description="marks the sockets live")
    marker = last_logged_id(server.database_url)
    for ws in sockets:
        assert events_until(ws, marker)[-1]["id"] == marker
    return marker


@pytest.mark.postgres
@pytest.mark.parametrize("then", ["nothing", "a notified event"])
def test_an_event_without_a_notification_still_arrives(cluster, cluster_token, then):
    """A lost ring only delays (the listeners poll the log), and the next ring's read
    delivers it in order with whatever came after it."""
    since = last_logged_id(cluster[0].database_url)
    sockets = [connect(server, cluster_token, since=since) for server in cluster]
    since = live(sockets, cluster[1], cluster_token)  # what follows comes live
    insert_quietly(cluster[0].database_url)
    if then == "a notified event":
        cluster[1].rpc("create", cluster_token, expect=201, description="notified")
    ids = logged_ids(cluster[0].database_url, since)
    for ws in sockets:
        received = events_until(ws, ids[-1])
        assert [event["id"] for event in received] == ids
        assert received[0]["actor"] == "quiet"
        ws.close()


@pytest.mark.postgres
def test_listeners_reconnect_and_catch_up_after_losing_their_connection(cluster, cluster_token):
    since = last_logged_id(cluster[0].database_url)
    sockets = [connect(server, cluster_token, since=since) for server in cluster for _ in range(2)]
    for ws in sockets:  # a worker greets once its listener is up (on PostgreSQL)
        greeting(ws)
    engine = create_engine(cluster[0].database_url)
    with engine.begin() as connection:
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database()"
                " AND application_name = 'incident_rpc events listener'"
            )
        ).scalar_one()
    engine.dispose()
    assert ended >= 2  # at least one listener per instance
    write_rounds(cluster[1], cluster_token, 2)
    ids = logged_ids(cluster[0].database_url, since)
    for ws in sockets:
        assert [event["id"] for event in events_until(ws, ids[-1])] == ids
        ws.close()


@pytest.mark.postgres
def test_the_doorbell_reconnects_after_losing_its_connection(postgres, tmp_path_factory):
    """Two instances of one worker each, polling only every 60 s: an event written on one
    reaches a subscriber of the other through the writer's doorbell alone. Its backend is
    terminated; the next write still arrives within seconds."""
    database_url = postgres.create()
    writer, reader = (
        Server(database_url, tmp_path_factory.mktemp("instance"), workers=1,
               EVENTS_POLL_INTERVAL="60").start()
        for _ in range(2)
    )  # fmt: skip
    try:
        token = writer.login()
        ws = connect(reader, token)
        greeting(ws)  # subscribed: what follows comes live
        first = writer.rpc("create", token, expect=201, description="rings")["data"]
        ws.settimeout(5)
        assert next_event(ws)["data"] == first  # the doorbell works, and now exists
        engine = create_engine(database_url)
        with engine.begin() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": "incident_rpc events doorbell"},
            ).scalar_one()
        engine.dispose()
        assert ended == 1
        second = writer.rpc("create", token, expect=201, description="rings again")["data"]
        assert next_event(ws)["data"] == second  # within 5 s, far below the poll interval
        ws.close()
    finally:
        writer.stop_soon()
        reader.stop_soon()


class Background(threading.Thread):
    """A thread whose failure fails the test when joined."""

    def __init__(self, target, *args: Any) -> None:
        super().__init__(daemon=True)
        self.work, self.args, self.failure = target, args, None

    def run(self) -> None:
        try:
            self.work(*self.args)
        except BaseException as failure:
            self.failure = failure

    def finish(self) -> None:
        self.join(120)
        assert not self.is_alive(), "background work did not finish"
        if self.failure is not None:
            raise self.failure


def write_rounds(server: Server, token: str, rounds: int) -> None:
    """Each round: create, update, resolve, and a second resolve that fails (no event)."""
    client = copy.copy(server)
    client.session = requests.Session()  # one per thread
    try:
        for index in range(rounds):
            incident = client.rpc("create", token, expect=201, description=f"w{index}")["data"]
            client.rpc("update", token, expect=200, id=incident["id"], severity="high")
            client.rpc("resolve", token, expect=200, id=incident["id"])
            client.rpc("resolve", token, expect=409, id=incident["id"])
    finally:
        client.session.close()


def write_many(servers: list[Server], token: str, writers: int, rounds: int) -> None:
    """`writers` concurrent writers per server."""
    threads = [Background(write_rounds, s, token, rounds) for s in servers for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.finish()
