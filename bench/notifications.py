"""What do notifications cost a create, and how soon do they reach the receiver?

    python bench/notifications.py                    # 16 connections, 3 rounds of 10 s
    python bench/notifications.py --rounds 5 --seconds 15
    python bench/notifications.py --outbox-only      # no sender: what writing rows costs

One production gunicorn on a throwaway PostgreSQL database, two webhook channels that
match every event, both pointing at a loopback receiver in this process (asyncio, so
that it costs little of the machine). `create` at 16 connections (wrk) in turns: both
channels disabled, then both enabled, `--rounds` times; the ratio is the median of each
round's enabled/disabled throughput. Before each turn the outbox is drained, so a turn
never pays for the one before. Latency is from the event's time (`at`, taken just
before the commit) to the receiver's hand: under the create load, and alone (one
create at a time). The receiver keeps connections open, as most HTTP servers do; on
this machine it takes CPU that a real receiver, elsewhere, would not (`--receiver-nice`
lowers its thread's priority). Everything stays on 127.0.0.1.
"""

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ADMIN, Database, Gunicorn, instance_dir, wrk  # noqa: E402


class Receiver:
    """An asyncio HTTP/1.1 server on loopback that answers 200 and notes each arrival."""

    def __init__(self, nice: int = 0) -> None:
        self.arrivals: list[tuple[float, str, str]] = []  # (time.time(), at, webhook-id)
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._run, args=(nice,), daemon=True).start()
        self._ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def _run(self, nice: int) -> None:
        self.thread_id = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, self.thread_id, nice)  # this thread's
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # requests on this connection, until the sender closes it
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                arrived = time.time()
                self.arrivals.append((arrived, json.loads(body)["at"], headers["webhook-id"]))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError):
            pass
        finally:
            writer.close()

    def latencies(self, since: float) -> list[float]:
        return [arrived - datetime.fromisoformat(at).timestamp()
                for arrived, at, _ in list(self.arrivals) if arrived >= since]  # fmt: skip


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat: Path) -> float:
    """User and system CPU time of a process or thread (/proc/.../stat)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def cpu_by_part(server: Gunicorn, receiver: "Receiver") -> dict[str, float]:
    """CPU seconds so far of the workers, the sender, PostgreSQL and the receiver."""
    proc = Path("/proc")
    return {
        "workers": sum(cpu_seconds(proc / str(pid) / "stat") for pid in server.workers()),
        "sender": sum(cpu_seconds(proc / str(pid) / "stat") for pid in server.senders()),
        "postgres": sum(cpu_seconds(proc / str(pid) / "stat") for pid in postgres_pids()),
        "receiver": cpu_seconds(proc / "self" / "task" / str(receiver.thread_id) / "stat"),
    }


def pending(database: Database) -> int:
    connection = database.connect()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM notify_deliveries WHERE state = 'pending'")
        (count,) = cursor.fetchone()
    connection.close()
    return count


def drain(database: Database, timeout: float = 300) -> float:
    """Seconds until no delivery is pending."""
    started = time.monotonic()
    while pending(database):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"deliveries still pending after {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    database = Database(args.admin_url).create()
    receiver = Receiver(args.receiver_nice)
    env = {
        "DATABASE_URL": database.sqlalchemy_url, "INCIDENT_RPC_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48), "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1], "INSTANCE_PATH": instance_dir(), "LOG_LEVEL": "WARNING",
        "WEBHOOK_ALLOW_PRIVATE": "1",  # the receiver is on loopback
        "NOTIFY_SENDER": "0" if args.outbox_only else "1",
    }  # fmt: skip
    server = Gunicorn("wsgi:app", env, "/readyz").start()
    try:
        login = {"action": "authorization", "username": ADMIN[0], "password": ADMIN[1]}
        token = server.post("/rpc", login)["data"]["token"]
        channels = [
            server.post("/rpc", {"action": "channel_create", "token": token, "name": f"hook{n}",
                                 "kind": "webhook", "url": receiver.url,
                                 "events": ["added"], "enabled": False})["data"]["id"]
            for n in range(2)
        ]  # fmt: skip

        def switch(enabled: bool) -> None:
            for channel_id in channels:
                update = {"action": "channel_update", "token": token, "id": channel_id,
                          "enabled": enabled}  # fmt: skip
                assert server.post("/rpc", update)["status"] == 200

        body = {"action": "create", "token": token, "description": "Scooter 875643 offline"}
        url = server.url + "/rpc"
        wrk(url, body, args.connections, 2)  # warm-up
        runs: dict[str, list[dict[str, float]]] = {"none": [], "two": []}
        loaded: list[float] = []
        cpu: dict[str, list[dict[str, float]]] = {"none": [], "two": []}  # ms per create
        drains: list[float] = []
        for _ in range(args.rounds):
            for label in ("none", "two"):
                switch(label == "two")
                started, before = time.time(), cpu_by_part(server, receiver)
                runs[label].append(wrk(url, body, args.connections, args.seconds))
                after = cpu_by_part(server, receiver)
                creates = runs[label][-1]["rps"] * args.seconds
                cpu[label].append({part: 1000 * (after[part] - before[part]) / creates
                                   for part in after})  # fmt: skip
                if not args.outbox_only:
                    drains.append(drain(database))
                if label == "two":
                    loaded += receiver.latencies(started)
        switch(True)
        started, alone = time.time(), []
        for n in range(0 if args.outbox_only else args.alone):
            server.post("/rpc", {**body, "description": f"alone {n}"})
            deadline = time.monotonic() + 10
            while len(receiver.latencies(started)) < 2 * (n + 1) and time.monotonic() < deadline:
                time.sleep(0.001)
        alone = receiver.latencies(started)
        ids = [webhook_id for _, _, webhook_id in receiver.arrivals]
    finally:
        server.stop()
        database.drop()
    pairs = list(zip(runs["none"], runs["two"], strict=True))
    return {
        "connections": args.connections,
        "rps_none": statistics.median(run["rps"] for run in runs["none"]),
        "rps_two": statistics.median(run["rps"] for run in runs["two"]),
        "rps_ratio": statistics.median(two["rps"] / none["rps"] for none, two in pairs),
        "p99_ms_none": statistics.median(run["p99_ms"] for run in runs["none"]),
        "p99_ms_two": statistics.median(run["p99_ms"] for run in runs["two"]),
        "failed": sum(r["non_2xx"] + r["socket_errors"] for rs in runs.values() for r in rs),
        "delivered": len(ids), "repeated_webhook_ids": len(ids) - len(set(ids)),
        "cpu_ms_per_create": {label: {part: statistics.median(turn[part] for turn in turns)
                                      for part in turns[0]}
                              for label, turns in cpu.items()},
        "outbox_only": args.outbox_only, "drain_s_max": max(drains, default=0.0),
        "loaded_latency_ms": {"p50": 1000 * percentile(loaded, 0.5),
                              "p99": 1000 * percentile(loaded, 0.99)},
        "alone_latency_ms": {"p50": 1000 * percentile(alone, 0.5),
                             "p99": 1000 * percentile(alone, 0.99)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--alone", type=int, default=200, help="creates timed one at a time")
    parser.add_argument(
        "--outbox-only",
        action="store_true",
        help="no sender (NOTIFY_SENDER=0): the rows are written, never sent",
    )
    parser.add_argument("--receiver-nice", type=int, default=0, help="the receiver's priority")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    figures = run(parser.parse_args(argv))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
