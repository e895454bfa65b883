"""Change-event delivery: latency and throughput, beside a minimal broadcast baseline.

    python bench/events_latency.py [--sizes 1,100,1000] [--worker-class gevent]

Both servers run under the production gunicorn.conf.py (same worker model, two
workers) on one throwaway PostgreSQL database (created here, dropped at the end):

- incident_rpc: `wsgi:app`, commands are `create` on POST /rpc, events reach /ws
  through the event log (xid-ordered ids, LISTEN/NOTIFY doorbell, per-subscriber queues).
- baseline: `baseline_app()` below: flask-sock, a POST that runs pg_notify with the
  message itself, and one LISTEN connection per worker whose greenlet sends each
  notification straight to every socket of that worker. No table, no auth, no queue.

The subscribers live in a separate process (raw sockets, one selector), N on each
system at once. For each size: `--events` rounds of one command to each system
(in alternating order), each waiting until all N subscribers have its message
(latency: the subscriber's receipt minus the moment the command's HTTP answer
arrived, on the system-wide monotonic clock; negative when the event beats the
answer); then, per system, a burst of `--burst` commands from 4 threads
(throughput: events whose every copy arrived, per second, and copies per second).
Target: incident_rpc's p99 within 1.25x of the baseline's at every size.
"""

import argparse
import itertools
import json
import multiprocessing
import os
import resource
import secrets
import select
import selectors
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg2
import requests
import websocket
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import Gunicorn  # noqa: E402  (the tests' server helper)

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("admin", "bench-admin-password")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
CHANNEL = "bench_broadcast"
TARGET = 1.25
DESCRIPTION = "Scooter 875643 offline since 06:10, last seen near the north gate"


# ------------------------------------------------------------------ the baseline


def baseline_app():  # gunicorn "events_latency:baseline_app()"
    """Minimal flask-sock broadcast with a PostgreSQL NOTIFY doorbell."""
    from flask import Flask, request
    from flask_sock import Sock
    from psycopg2.pool import ThreadedConnectionPool

    app = Flask("baseline")
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 25}
    sock = Sock(app)
    dsn = os.environ["BASELINE_DSN"]
    pool = ThreadedConnectionPool(1, 20, dsn)
    sockets: set[Any] = set()

    def listen() -> None:
        connection = psycopg2.connect(dsn)
        connection.autocommit = True
        connection.cursor().execute(f"LISTEN {CHANNEL}")
        while True:
            select.select([connection], [], [], 5)
            connection.poll()
            while connection.notifies:
                payload = connection.notifies.pop(0).payload
                for ws in list(sockets):
                    try:
                        ws.send(payload)
                    except Exception:
                        sockets.discard(ws)

    threading.Thread(target=listen, daemon=True).start()

    @sock.route("/ws")
    def subscribe(ws: Any) -> None:
        sockets.add(ws)
        try:
            while True:
                ws.receive()
        finally:
            sockets.discard(ws)

    @app.get("/healthz")
    def healthz() -> Any:
        return {"alive": True}

    @app.post("/publish")
    def publish() -> Any:
        connection = pool.getconn()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_notify(%s, %s)", (CHANNEL, request.get_data(as_text=True))
                )
        finally:
            pool.putconn(connection)
        return {"success": True, "error": "", "status": 200, "data": {}}

    return app


def baseline_message(key: int) -> str:
    """The same shape and size as an `added` event of incident_rpc."""
    now = "2026-01-17T18:30:00.123456+00:00"
    incident = {
        "id": key, "title": None, "description": DESCRIPTION, "status": "new",
        "severity": "medium", "source": "monitoring", "details": None, "created_by": "admin",
        "created_at": now, "updated_at": now, "resolved_at": None, "resolved_by": None,
        "resolution": None, "version": 1, "assignee": None, "occurrences": 1,
    }  # fmt: skip
    return json.dumps({"type": "added", "id": key, "at": now, "actor": "admin", "data": incident})


# ------------------------------------------------------------------ servers


def gunicorn(app: str, env: dict[str, str], args: argparse.Namespace, ready: str) -> Gunicorn:
    """A started server of `app` (tests/servers.py) in the worker model under test."""
    settings = {
        "GUNICORN_WORKER_CLASS": args.worker_class,
        "GUNICORN_THREADS": str(args.threads),
        "GUNICORN_WORKER_CONNECTIONS": "4000",
        "LOG_LEVEL": "WARNING",
    }
    server = Gunicorn(
        app, {**settings, **env}, workers=args.workers, ready_path=ready,
        options=("--pythonpath", str(ROOT / "bench")),
    )  # fmt: skip
    return server.start()


class Database:
    """A throwaway database on the PostgreSQL server of `admin_url`."""

    def __init__(self, admin_url: str) -> None:
        self.admin = make_url(admin_url)
        self.name = f"bench_events_{secrets.token_hex(4)}"
        self._run(f'CREATE DATABASE "{self.name}"')
        url = self.admin.set(drivername="postgresql+psycopg2", database=self.name)
        self.url = url.render_as_string(hide_password=False)
        self.dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _run(self, statement: str) -> None:
        dsn = self.admin.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = psycopg2.connect(dsn)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
        connection.close()

    def drop(self) -> None:
        self._run(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# ------------------------------------------------------------------ the subscribers' process


def subscribers(pipe: Any) -> None:
    """Child process: holds every group's sockets, timestamps each message, reports."""
    raise_open_files()
    selector = selectors.DefaultSelector()
    selector.register(pipe, selectors.EVENT_READ, None)
    sockets: dict[socket.socket, tuple[str, bytearray]] = {}
    sizes: dict[str, int] = {}
    receipts: dict[tuple[str, int], list[float]] = {}
    while True:
        for key, _ in selector.select():
            if key.data is None:  # an order from the parent
                order = pipe.recv()
                if order[0] == "connect":  # ("connect", [(group, url, count), ...])
                    for raw in sockets:
                        selector.unregister(raw)
                        raw.close()
                    sockets, receipts = {}, {}
                    sizes = {group: count for group, _, count in order[1]}
                    for group, url, count in order[1]:
                        for _ in range(count):
                            raw = websocket.create_connection(url, timeout=30).sock
                            raw.setblocking(False)
                            sockets[raw] = (group, bytearray())
                            selector.register(raw, selectors.EVENT_READ, raw)
                    pipe.send(("connected",))
                elif order[0] == "report":
                    pipe.send(("report", receipts))
                    receipts = {}
                elif order[0] == "exit":
                    return
                continue
            now = time.monotonic()
            raw = key.data
            group, buffer = sockets[raw]
            try:
                chunk = raw.recv(1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise RuntimeError("the server closed a subscriber's socket")
            buffer += chunk
            for opcode, payload in frames(buffer):
                if opcode == 0x9:
                    raw.setblocking(True)
                    raw.sendall(pong(payload))
                    raw.setblocking(False)
                elif opcode == 0x1:
                    message = json.loads(payload)
                    if message.get("type") == "subscribed":
                        continue  # incident_rpc's greeting, not an event
                    mark = (group, message["data"]["id"])
                    times = receipts.setdefault(mark, [])
                    times.append(now)
                    if len(times) == sizes[group]:
                        pipe.send(("done", mark))


def frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Whole frames off the front of `buffer` (server frames: unmasked, unfragmented)."""
    found = []
    while len(buffer) >= 2:
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + length:
            break
        found.append((buffer[0] & 0x0F, bytes(buffer[start : start + length])))
        del buffer[: start + length]
    return found


def pong(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    return bytes([0x8A, 0x80 | len(payload)]) + mask + masked


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------ the commander


class System:
    """How to send one command to a system and which message key it produces."""

    def __init__(self, name: str, server: Gunicorn, ws_url: str, token: str | None) -> None:
        self.name, self.server, self.ws_url, self.token = name, server, ws_url, token
        self.sequence = itertools.count(1)  # next() is atomic: the burst's threads share it

    def command(self, session: requests.Session) -> int:
        if self.token is None:  # the baseline: we choose the key
            key = next(self.sequence)
            session.post(self.server.url + "/publish", data=baseline_message(key), timeout=30)
            return key
        body = {"action": "create", "token": self.token, "description": DESCRIPTION}
        body["source"] = "monitoring"
        answer = session.post(self.server.url + "/rpc", json=body, timeout=30).json()
        assert answer["status"] == 201, answer
        return answer["data"]["id"]


class Subscribers:
    """The parent's handle on the subscribers' process."""

    def __init__(self) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=subscribers, args=(child,), daemon=True)
        self.process.start()
        self.done: set[tuple[str, int]] = set()

    def connect(self, groups: list[tuple[str, str, int]]) -> None:
        self.pipe.send(("connect", groups))
        self.expect("connected")

    def expect(self, kind: str, timeout: float = 600) -> tuple:
        deadline = time.monotonic() + timeout
        while self.pipe.poll(max(0.0, deadline - time.monotonic())):
            message = self.pipe.recv()
            if message[0] == "done":
                self.done.add(message[1])
            elif message[0] == kind:
                return message
        raise TimeoutError(f"no {kind!r} from the subscribers' process")

    def wait_done(self, marks: set[tuple[str, int]], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not marks <= self.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.pipe.poll(remaining):
                raise TimeoutError(f"{len(marks - self.done)} events never reached everyone")
            message = self.pipe.recv()
            if message[0] == "done":
                self.done.add(message[1])

    def report(self) -> dict[tuple[str, int], list[float]]:
        self.pipe.send(("report",))
        return self.expect("report")[1]

    def close(self) -> None:
        self.pipe.send(("exit",))
        self.process.join(10)


def measure(systems: list[System], clients: Subscribers, size: int, events: int, burst: int):
    """Both systems' subscribers connected at once; their events alternate, so that
    noise from the rest of the machine falls on both alike."""
    clients.connect([(system.name, system.ws_url, size) for system in systems])
    time.sleep(1 + size / 250)  # every socket subscribed server-side
    sessions = {system.name: requests.Session() for system in systems}
    sent: dict[tuple[str, int], tuple[float, float]] = {}  # mark: (command sent, answered)
    for number in range(3 + events):  # three rounds to warm up, not counted
        for system in systems if number % 2 else systems[::-1]:
            started = time.monotonic()
            mark = (system.name, system.command(sessions[system.name]))
            if number >= 3:
                sent[mark] = (started, time.monotonic())
            clients.wait_done({mark})
    after_answer: dict[str, list[float]] = {system.name: [] for system in systems}
    after_send: dict[str, list[float]] = {system.name: [] for system in systems}
    for mark, times in clients.report().items():
        if mark in sent:
            started, answered = sent[mark]
            after_answer[mark[0]] += [(received - answered) * 1000 for received in times]
            after_send[mark[0]] += [(received - started) * 1000 for received in times]
    rows = []
    for system in systems:
        events_per_s = throughput(system, clients, burst)
        latencies = after_answer[system.name]
        rows.append({
            "system": system.name, "subscribers": size, "samples": len(latencies),
            "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
            "p99_from_send_ms": percentile(after_send[system.name], 99),
            "events_per_s": events_per_s, "deliveries_per_s": events_per_s * size,
        })  # fmt: skip
    return rows


def percentile(values: list[float], which: int) -> float:
    return statistics.quantiles(values, n=100)[which - 1]


def throughput(system: System, clients: Subscribers, burst: int) -> float:
    """Events per second when `burst` commands come from 4 threads at once, counted to
    the moment the last copy of the last event arrived."""
    sessions = [requests.Session() for _ in range(4)]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(lambda n: system.command(sessions[n % 4]), range(burst)))
    marks = {(system.name, key) for key in keys}
    clients.wait_done(marks, timeout=300)
    last = max(max(times) for mark, times in clients.report().items() if mark in marks)
    return burst / (last - started)


# ------------------------------------------------------------------ main


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,1000", help="subscriber counts")
    parser.add_argument("--events", default="200,100,40", help="latency samples per size")
    parser.add_argument("--burst", default="400,200,40", help="burst commands per size")
    parser.add_argument("--worker-class", default=os.environ.get("GUNICORN_WORKER_CLASS", "gevent"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="gthread: per worker")
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_POSTGRES))
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def per_size(text: str, sizes: list[int]) -> list[int]:
    values = [int(v) for v in text.split(",")]
    return (values + values[-1:] * len(sizes))[: len(sizes)]


def within_target(ours: float, baseline: float) -> bool:
    """p99 at most 1.25x the baseline's; with a p99 at or below zero (the event beat the
    answer), "1.25x" is read as a quarter of its size above it."""
    return ours <= baseline + (TARGET - 1) * abs(baseline)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    model = args.worker_class + (
        f" x {args.threads} threads" if args.worker_class == "gthread" else ""
    )
    print(f"\nevents_latency: {model}, {args.workers} workers per server")
    print("latency (ms) = subscriber's receipt - the command's HTTP answer (< 0: event first)")
    print(
        f"{'subs':>5}  {'system':<13}{'p50':>7}{'p99':>7}{'p99 from send':>15}"
        f"{'events/s':>10}{'deliveries/s':>14}  p99 target (<= {TARGET}x baseline)"
    )
    baseline = {row["subscribers"]: row for row in rows if row["system"] == "baseline"}
    for row in rows:
        verdict = ""
        base = baseline.get(row["subscribers"])
        if row["system"] != "baseline" and base:
            ratio = f"{row['p99_ms'] / base['p99_ms']:.2f}x, " if base["p99_ms"] > 0 else ""
            met = within_target(row["p99_ms"], base["p99_ms"])
            verdict = f"{ratio}{'met' if met else 'NOT met'}"
        print(
            f"{row['subscribers']:>5}  {row['system']:<13}{row['p50_ms']:>7.2f}"
            f"{row['p99_ms']:>7.2f}{row['p99_from_send_ms']:>15.2f}{row['events_per_s']:>10.0f}"
            f"{row['deliveries_per_s']:>14.0f}  {verdict}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raise_open_files()
    sizes = [int(v) for v in args.sizes.split(",")]
    events, bursts = per_size(args.events, sizes), per_size(args.burst, sizes)
    if args.worker_class == "gthread":
        args.threads = max(args.threads, max(sizes) + 16)  # a thread per socket, and some
    database = Database(args.postgres)
    servers: list[Gunicorn] = []
    clients = Subscribers()
    rows: list[dict] = []
    try:
        ours = gunicorn("wsgi:app", {
            "DATABASE_URL": database.url, "INSTANCE_PATH": str(ROOT / "instance" / "bench"),
            "SECRET_KEY": secrets.token_urlsafe(32), "ADMIN_USERNAME": ADMIN[0],
            "ADMIN_PASSWORD": ADMIN[1],
        }, args, "/readyz")  # fmt: skip
        servers.append(ours)
        base = gunicorn(
            "events_latency:baseline_app()", {"BASELINE_DSN": database.dsn}, args, "/healthz"
        )
        servers.append(base)
        login = {"action": "authorization", "username": ADMIN[0], "password": ADMIN[1]}
        token = requests.post(ours.url + "/rpc", json=login, timeout=30).json()["data"]["token"]
        systems = [
            System("baseline", base, f"ws://127.0.0.1:{base.port}/ws", None),
            System("incident_rpc", ours, f"ws://127.0.0.1:{ours.port}/ws?token={token}", token),
        ]
        for size, count, burst in zip(sizes, events, bursts, strict=True):
            rows += measure(systems, clients, size, count, burst)
            print(f"  measured {size} subscribers", flush=True)
    finally:
        clients.close()
        for server in servers:
            server.stop()
        database.drop()
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
