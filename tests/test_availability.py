"""Nothing stalls a worker and every client reads its answer (issue 10).

Real gunicorn servers on SQLite and PostgreSQL, raw sockets where the bytes on
the wire are the point, `requests` and `urllib` where a client library's view is,
real WebSocket clients (websocket-client). All traffic stays on 127.0.0.1; every
loop is bounded in count and time.
"""

import json
import select
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
import websocket
from queueing import read_by_server
from support import Server, wait_for

BODY_TIMEOUT = 3  # the servers' BODY_TIMEOUT here, in seconds
MIB = 1024 * 1024
LIMIT = MIB  # MAX_CONTENT_LENGTH's default
ENVELOPE_KEYS = {"success", "error", "status", "data"}


@pytest.fixture(scope="module")
def edge(new_database_url, tmp_path_factory) -> Iterator[Server]:
    """One worker, so that its slots, its memory and its sockets are the ones measured."""
    running = Server(
        new_database_url(), tmp_path_factory.mktemp("instance"), workers=1,
        BODY_TIMEOUT=str(BODY_TIMEOUT),
    ).start()  # fmt: skip
    yield running
    running.stop_soon()


@pytest.fixture(scope="module")
def edge_token(edge: Server) -> str:
    return edge.login()


def assert_envelope(raw: bytes, status: int) -> dict[str, Any]:
    """`raw` is one whole HTTP answer: status line, headers, and the envelope as its body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == str(status).encode(), raw[:300]
    assert b"content-type: application/json" in head.lower(), head
    envelope = json.loads(body)
    assert set(envelope) == ENVELOPE_KEYS, envelope
    assert envelope["status"] == status and envelope["success"] is False, envelope
    return envelope


def read_answer(sock: socket.socket, deadline: float) -> bytes:
    """Everything until the server closes (or the deadline); a reset fails the test."""
    answer = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        piece = sock.recv(65536)
        if not piece:
            break
        answer += piece
        head, _, body = answer.partition(b"\r\n\r\n")
        lengths = [line for line in head.lower().split(b"\r\n") if b"content-length:" in line]
        if lengths and len(body) >= int(lengths[0].split(b":")[1]):
            break  # whole; the connection may stay open
    return answer


# ---------------------------------------------------------------- slow bodies


def trickle(port: int, stop: threading.Event, answers: list[bytes], opened: list[int]) -> None:
    """A slowloris connection, again and again until `stop`: headers announcing 100 kB,
    then a byte every 1.2 s (BODY_TIMEOUT falls between two bytes), reading the
    answer as soon as one comes; then a new connection. Its local ports into `opened`."""
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            opened.append(sock.getsockname()[1])
            sock.sendall(b"POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n{")
            while not stop.is_set():
                readable, _, _ = select.select([sock], [], [], 1.2)
                if readable:
                    answers.append(read_answer(sock, time.monotonic() + 10))
                    break
                sock.sendall(b" ")


def test_slow_bodies_hold_no_slot_and_get_a_408(edge: Server, edge_token: str) -> None:
    """20 connections that send their bodies a byte at a time (and, cut off, come back)
    until 20 of them have been cut off (BODY_TIMEOUT, 3 s; at most 8 s): meanwhile every
    `whoami` answers at once, and each slow one gets a 408 envelope that it reads in full."""
    stop, answers, opened = threading.Event(), [], []
    tricklers = [
        threading.Thread(target=trickle, args=(edge.port, stop, answers, opened), daemon=True)
        for _ in range(20)
    ]
    for thread in tricklers:
        thread.start()
    slowest = 0.0
    try:
        # every trickler's headers read by the worker (more than its 8 HTTP_CONCURRENCY slots)
        wait_for(lambda: len(opened) >= 20 and read_by_server(edge, opened[:20]), 15,
                 "the worker did not read every trickler's headers")  # fmt: skip
        end = time.monotonic() + 8
        with requests.Session() as client:
            while time.monotonic() < end and len(answers) < 20:
                started = time.monotonic()
                answer = client.post(
                    f"{edge.url}/rpc", json={"action": "whoami", "token": edge_token}, timeout=5
                )
                slowest = max(slowest, time.monotonic() - started)
                assert answer.status_code == 200, answer.text
                time.sleep(0.2)
    finally:
        stop.set()
        for thread in tricklers:
            thread.join(15)
    assert slowest < 3, f"a whoami took {slowest:.2f} s"
    assert len(answers) >= 20, f"only {len(answers)} slow bodies were answered"
    for raw in answers:
        envelope = assert_envelope(raw, 408)
        assert envelope["error"] == f"the request body did not arrive within {BODY_TIMEOUT} s"


# ---------------------------------------------------------------- oversize bodies


def post_with_urllib(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body)  # urllib sends Connection: close
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post_with_requests(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    answer = requests.post(url, data=body, timeout=30)
    return answer.status_code, answer.json()


CLIENTS = {"urllib": post_with_urllib, "requests": post_with_requests}


@pytest.mark.parametrize("path", ["/rpc", "/incidents/create/"])
@pytest.mark.parametrize("mib", [1, 2, 8])
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_oversize_bodies_read_the_413(edge: Server, path: str, mib: int, client: str) -> None:
    """Just over the limit, and far over it: every client reads the envelope, never
    a reset (which was intermittent, hence five tries each)."""
    body = b'{"action": "create", "description": "' + b"x" * (mib * MIB) + b'"}'
    for _ in range(5):
        status, envelope = CLIENTS[client](edge.url + path, body)
        assert status == 413, envelope
        assert envelope == {
            "success": False, "error": "request body too large", "status": 413, "data": {},
        }  # fmt: skip


def chunks_of(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """`body` as a generator: requests then sends it chunked, without a length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("path", ["/rpc", "/incidents/create/"])
def test_chunked_bodies_are_measured_whole(edge: Server, edge_token: str, path: str) -> None:
    """A chunked body one byte over the limit is a 413 (it used to be cut at the limit
    and parsed: JSON padded with spaces answered 200); one within it is served."""
    command = json.dumps({"action": "whoami", "token": edge_token}).encode()
    status, envelope = post_with_requests(
        edge.url + path, chunks_of(command + b" " * (LIMIT + 1 - len(command)))
    )
    assert (status, envelope["error"]) == (413, "request body too large"), envelope
    status, envelope = post_with_requests(
        edge.url + "/rpc", chunks_of(command + b" " * (LIMIT - len(command)))
    )
    assert (status, envelope["data"]["username"]) == (200, "admin"), envelope


# ---------------------------------------------------------------- gunicorn's own refusals


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return read_answer(sock, time.monotonic() + 10)


@pytest.mark.parametrize(
    "request_bytes, status, error",
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "the HTTP request is malformed"),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414,
         "the request line is too long"),
        (b"POST /rpc HTTP/1.1\r\nHost: t\r\n" + b"X-Many: y\r\n" * 200 + b"\r\n", 431,
         "the request headers are too large"),
        (b"POST /rpc HTTP/1.1\r\nHost: t\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431,
         "the request headers are too large"),
    ],
    ids=["request-line", "long-url", "many-headers", "large-header"],
)  # fmt: skip
def test_gunicorn_refusals_are_envelopes(
    edge: Server, request_bytes: bytes, status: int, error: str
) -> None:
    """What gunicorn refuses before the app sees it is an envelope too, and says nothing
    of the request (a request line or a header may carry a token)."""
    envelope = assert_envelope(raw_exchange(edge.port, request_bytes), status)
    assert envelope == {"success": False, "error": error, "status": status, "data": {}}


def test_a_refused_header_with_a_large_body_reads_the_answer(edge: Server) -> None:
    """gunicorn refuses the headers with 8 MiB of body still coming: it reads that body
    away before it closes, so urllib reads the 431 instead of a reset."""
    request = urllib.request.Request(edge.url + "/rpc", data=b"x" * (8 * MIB))
    request.add_header("X-Big", "y" * 10000)
    for _ in range(3):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 431
        assert json.load(refused.value)["error"] == "the request headers are too large"


# ---------------------------------------------------------------- a flooding subscriber


def worker_pid(server: Server) -> int:
    assert server.process is not None
    pid = server.process.pid
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(child)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def subscribe(server: Server, token: str) -> websocket.WebSocket:
    url = f"ws://127.0.0.1:{server.port}/ws?token={token}"
    ws = websocket.create_connection(url, timeout=15)
    assert json.loads(ws.recv())["type"] == "subscribed"  # the greeting comes first
    return ws


def close_frame(ws: websocket.WebSocket, found: dict[str, Any]) -> None:
    """Read frames until the server's close; its (code, reason) into `found`."""
    try:
        while True:
            frame = ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                found["close"] = struct.unpack("!H", frame.data[:2])[0], frame.data[2:].decode()
                return
    except Exception as failure:  # the test reports it
        found["failure"] = repr(failure)


def test_a_flooding_subscriber_is_closed_and_memory_stays_flat(
    edge: Server, edge_token: str
) -> None:
    """A subscriber that sends 60 kB messages as fast as it can (at most 5 s or 300 MiB)
    gets a 1008 close that it reads; the worker's RSS does not grow with what it sent
    (it grew by 300 MiB in 4.5 s, kept after the close); a quiet subscriber beside it
    still gets its events."""
    quiet = subscribe(edge, edge_token)
    flood = subscribe(edge, edge_token)
    try:
        sent, grown, found = flood_until_closed(flood, worker_pid(edge))
        assert grown < 30, f"the worker grew by {grown:.0f} MiB ({sent / MIB:.0f} MiB sent)"
        assert found.get("close") == (1008, "this channel takes no messages; stop sending them"), (
            found,
            f"{sent / MIB:.0f} MiB sent",
        )
        created = edge.rpc("create", edge_token, expect=201, description="after the flood")
        for _ in range(50):  # events of the earlier tests' creates may come first
            event = json.loads(quiet.recv())
            if event["data"]["id"] == created["data"]["id"]:
                break
        assert (event["type"], event["data"]["id"]) == ("added", created["data"]["id"])
    finally:
        flood.shutdown()
        quiet.close()


def flood_until_closed(flood: websocket.WebSocket, pid: int) -> tuple[int, float, dict[str, Any]]:
    """Send 60 kB messages until the server's close arrives (at most 5 s or 300 MiB):
    bytes sent, the worker's RSS growth in MiB, and what the reading thread found.
    Both sockets are live: subscribe() has read each one's greeting."""
    before = rss_mib(pid)
    found: dict[str, Any] = {}
    reader = threading.Thread(target=close_frame, args=(flood, found), daemon=True)
    reader.start()
    message, sent, end = "x" * 60000, 0, time.monotonic() + 5
    try:
        while reader.is_alive() and time.monotonic() < end and sent < 300 * MIB:
            flood.send(message)
            sent += len(message)
    except OSError:  # the server closed after its close frame: the reader has that
        pass
    grown = rss_mib(pid) - before
    reader.join(10)
    return sent, grown, found


# ---------------------------------------------------------------- a saturated worker


@pytest.mark.postgres
def test_healthz_answers_503_while_every_slot_is_stuck(postgres, tmp_path_factory) -> None:
    """HTTP_CONCURRENCY=1 and its slot held by a create that waits for a lock held
    here: after HEALTH_STALL_TIMEOUT /healthz answers 503; once the lock goes, the
    create answers and /healthz is 200 again."""
    server = Server(
        postgres.create(), tmp_path_factory.mktemp("instance"), workers=1,
        HTTP_CONCURRENCY="1", HEALTH_STALL_TIMEOUT="1",
    ).start()  # fmt: skip
    lock = psycopg2.connect(server.database_url.replace("+psycopg2", ""))
    try:
        token = server.login()
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        with lock.cursor() as cursor:
            cursor.execute("LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
        created: dict[str, Any] = {}

        def create() -> None:
            created["envelope"] = server.rpc("create", token, description="stuck")

        stuck = threading.Thread(target=create, daemon=True)
        stuck.start()
        answer = poll_healthz(server, 503)
        assert answer["error"].startswith("every request slot of this worker has been busy for")
        lock.rollback()
        stuck.join(15)
        assert created["envelope"]["status"] == 201
        assert poll_healthz(server, 200)["data"] == {"alive": True}
    finally:
        lock.close()
        server.stop()


def poll_healthz(server: Server, status: int, seconds: float = 10) -> dict[str, Any]:
    """/healthz's envelope once it answers `status` (it must within `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = requests.get(f"{server.url}/healthz", timeout=5)
        if answer.status_code == status or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status_code == status, answer.text
    envelope = answer.json()
    assert envelope["status"] == status, envelope
    return envelope
