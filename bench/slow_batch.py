"""How long do other clients' events wait while a slow batch runs?

    python bench/slow_batch.py                        # PostgreSQL (throwaway database)
    python bench/slow_batch.py --sqlite               # a throwaway SQLite file
    python bench/slow_batch.py --logins 60 --rounds 3

Starts a real gunicorn (2 workers, login throttling on, as in production) and one
WebSocket subscriber. First, with nothing else running, one client creates
incidents one at a time and times each event's arrival at the subscriber. Then, in
each round, another client posts a batch of one create and `--logins` sign-ins
(seconds of password checks) while the first keeps creating, one incident every
50 ms (or as soon as the previous one's event arrived, if later): the latencies of its
events while the batch runs are what a slow batch costs everyone else. Latency is
measured from the moment the create was sent (so a create that itself waits for
the batch counts in full) to the event's arrival. Everything stays on 127.0.0.1;
every wait has a deadline.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import requests
import websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import ADMIN, PostgresDatabases, Server  # noqa: E402  (the suite's launcher)

DEADLINE = 120.0  # seconds any one round may take
PACE = 0.05  # seconds between the starts of two measured creates: 20 alerts a second


def create(server: Server, token: str, text: str) -> int:
    body = {"action": "create", "token": token, "description": text}
    answer = requests.post(f"{server.url}/rpc", json=body, timeout=60).json()
    if answer["status"] != 201:
        raise SystemExit(f"create answered {answer['status']}: {answer['error']}")
    return answer["data"]["id"]


def arrival(socket: websocket.WebSocket, incident_id: int, deadline: float) -> float | None:
    """When the event of `incident_id` arrived (monotonic), or None if not in time."""
    while time.monotonic() < deadline:
        socket.settimeout(max(deadline - time.monotonic(), 0.05))
        try:  # control frames too: pings must not extend the wait
            opcode, data = socket.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return None
        message = json.loads(data) if opcode == websocket.ABNF.OPCODE_TEXT else {}
        if message.get("data", {}).get("id") == incident_id:  # (past the greeting)
            return time.monotonic()
    return None


def latency(server: Server, token: str, socket: websocket.WebSocket, deadline: float) -> float:
    sent = time.monotonic()
    incident_id = create(server, token, "bench: another client's alert")
    arrived = arrival(socket, incident_id, deadline)
    if arrived is None:
        raise SystemExit(f"the event of incident {incident_id} did not arrive in time")
    return arrived - sent


def during_batch(
    server: Server, token: str, socket: websocket.WebSocket, logins: int
) -> tuple[list[float], float]:
    """Latencies of one client's events while another's batch runs; the batch's duration."""
    batch: list[dict[str, Any]] = [{"action": "create", "token": token, "description": "bench"}]
    batch += [{"action": "authorization", "username": ADMIN[0], "password": ADMIN[1]}] * logins
    latencies: list[float] = []
    deadline = time.monotonic() + DEADLINE
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        sent = pool.submit(requests.post, f"{server.url}/rpc", json=batch, timeout=DEADLINE)
        next_start = time.monotonic()
        while len(latencies) < 2000:
            wait([sent], timeout=max(next_start - time.monotonic(), 0))  # the pace
            if sent.done():
                break
            next_start = max(next_start + PACE, time.monotonic())
            latencies.append(latency(server, token, socket, deadline))
        answers = sent.result(timeout=DEADLINE).json()
        lasted = time.monotonic() - started
    bad = [answer["status"] for answer in answers if answer["status"] >= 400]
    if bad:
        raise SystemExit(f"the batch had failures: {bad[:5]}")
    return latencies, lasted


def line(label: str, values: list[float]) -> str:
    ms = sorted(value * 1000 for value in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{label:24}{len(ms):6d}{statistics.median(ms):10.1f}{p95:10.1f}{ms[-1]:10.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--logins", type=int, default=60, help="sign-ins in the batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=30, help="creates measured with no batch")
    args = parser.parse_args()
    databases = None if args.sqlite else PostgresDatabases(args.postgres)
    workdir = Path(tempfile.mkdtemp(prefix="incident_rpc_bench_"))
    url = f"sqlite:///{workdir / 'bench.sqlite3'}" if databases is None else databases.create()
    server = Server(
        url, workdir / "instance", workers=2,
        LOGIN_MAX_FAILURES="5", LOGIN_MAX_FAILURES_PER_ADDRESS="30",
    )  # fmt: skip
    try:
        server.start()
        token = server.login()
        socket = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?token={token}")
        try:
            deadline = time.monotonic() + DEADLINE
            idle = [latency(server, token, socket, deadline) for _ in range(args.idle)]
            rounds = [during_batch(server, token, socket, args.logins) for _ in range(args.rounds)]
        finally:
            socket.close()
    finally:
        server.stop()
        if databases is not None:
            databases.drop_all()
    kind = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"{kind}, 2 workers; batch = 1 create + {args.logins} sign-ins")
    print(f"{'event latency from send':24}{'n':>6}{'p50':>10}{'p95':>10}{'max':>10}   (ms)")
    print(line("no batch running", idle))
    for n, (latencies, lasted) in enumerate(rounds, 1):
        print(line(f"batch {n} ({lasted:.1f} s)", latencies))


if __name__ == "__main__":
    main()
