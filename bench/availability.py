"""Availability under abuse, and what its defences cost: bounded, loopback-only stress runs.

- slow    N connections that announce a 100 kB body and send a byte every 2 s (each
          comes back when answered) for SECONDS, while a prober sends `whoami` every
          0.1 s: the prober's latencies, its failures, and the slow ones' answers.
- flood   one WebSocket subscriber sending 60 kB messages as fast as it can (at most
          5 s or 500 MiB): what it sent, how it was closed, the worker's RSS.
- create  `create` at 16 and 64 connections (wrk), this tree against another one in
          turns (bench/run.py's `compare`): what the defences cost the hot path.

`--against REF` runs the same on another commit's code (`git archive REF`), for
slow and flood instead of this tree, for create beside it. On a throwaway
PostgreSQL database (BENCH_DATABASE_URL, default the local server); dropped at
the end.

    .venv/bin/python bench/availability.py slow [--against main]
    .venv/bin/python bench/availability.py flood [--against main]
    .venv/bin/python bench/availability.py create --against main
"""

import argparse
import json
import os
import secrets
import select
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import websocket
from harness import (
    ADMIN,
    DEFAULT_ADMIN_URL,
    ROOT,
    Database,
    Gunicorn,
    RssSampler,
    instance_dir,
    rss_kib,
)


def checkout(ref: str) -> Path:
    """`ref`'s files in a temporary folder (removed with the machine's /tmp)."""
    folder = Path(tempfile.mkdtemp(prefix="incident_rpc_ref_"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def start(database: Database, root: Path, **env: str) -> Gunicorn:
    base = {
        "DATABASE_URL": database.sqlalchemy_url, "INCIDENT_RPC_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48), "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1], "INSTANCE_PATH": instance_dir(), "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    return Gunicorn("wsgi:app", {**base, **env}, "/readyz", root).start()


def login(server: Gunicorn) -> str:
    body = {"action": "authorization", "username": ADMIN[0], "password": ADMIN[1]}
    return server.post("/rpc", body)["data"]["token"]


def trickle(port: int, stop: threading.Event, answers: list[str]) -> None:
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /rpc HTTP/1.1\r\nHost: b\r\nContent-Length: 100000\r\n\r\n{")
            while not stop.is_set():
                if select.select([sock], [], [], 2)[0]:
                    try:
                        answers.append(sock.recv(65536).split(b" ", 2)[1].decode())
                    except (OSError, IndexError) as error:
                        answers.append(type(error).__name__)
                    break
                try:
                    sock.sendall(b" ")
                except OSError as error:
                    answers.append(type(error).__name__)
                    break


def bench_slow(args: argparse.Namespace, database: Database, root: Path) -> dict[str, Any]:
    server = start(database, root, WEB_CONCURRENCY="1")
    try:
        token = login(server)
        stop, answers = threading.Event(), []
        threads = [
            threading.Thread(target=trickle, args=(server.port, stop, answers), daemon=True)
            for _ in range(args.connections)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        latencies, failures = [], 0
        end = time.monotonic() + args.seconds
        with requests.Session() as prober:
            while time.monotonic() < end:
                started = time.monotonic()
                try:
                    answer = prober.post(
                        server.url + "/rpc", json={"action": "whoami", "token": token}, timeout=5
                    )
                    failures += answer.status_code != 200
                except requests.RequestException:
                    failures += 1
                latencies.append((time.monotonic() - started) * 1000)
                time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join(15)
    finally:
        server.stop()
    latencies.sort()
    return {
        "slow_connections": args.connections, "seconds": args.seconds,
        "whoami": len(latencies), "whoami_failed": failures,
        "whoami_p50_ms": statistics.median(latencies),
        "whoami_p99_ms": latencies[int(len(latencies) * 0.99)], "whoami_max_ms": latencies[-1],
        "slow_answers": {code: answers.count(code) for code in sorted(set(answers))},
    }  # fmt: skip


def bench_flood(args: argparse.Namespace, database: Database, root: Path) -> dict[str, Any]:
    server = start(database, root, WEB_CONCURRENCY="1")
    try:
        token = login(server)
        (pid,) = server.workers()
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?token={token}")
        time.sleep(0.5)
        before = rss_kib(pid)
        found: dict[str, Any] = {}

        def read_close() -> None:
            try:
                while (frame := ws.recv_frame()).opcode != websocket.ABNF.OPCODE_CLOSE:
                    pass
                found["close"] = [struct.unpack("!H", frame.data[:2])[0], frame.data[2:].decode()]
            except Exception as error:
                found["error"] = type(error).__name__

        reader = threading.Thread(target=read_close, daemon=True)
        message, sent, started = "x" * 60000, 0, time.monotonic()
        with RssSampler([pid]) as sampler:
            reader.start()
            try:
                while reader.is_alive() and time.monotonic() - started < 5 and sent < 500 << 20:
                    ws.send(message)
                    sent += len(message)
            except OSError as error:
                found.setdefault("send_error", type(error).__name__)
            took = time.monotonic() - started
            reader.join(10)
            ws.shutdown()
            time.sleep(2)  # what the worker keeps once the socket is gone
    finally:
        after = rss_kib(pid)
        server.stop()
    return {
        "sent_mib": sent / (1 << 20), "sending_s": took, **found,
        "worker_rss_before_mib": before / 1024, "worker_rss_peak_mib": sampler.peak[pid] / 1024,
        "worker_rss_after_close_mib": after / 1024,
    }  # fmt: skip


def bench_create(args: argparse.Namespace, database: Database, other: Path) -> dict[str, Any]:
    from run import compare

    second = Database(args.admin_url).create()
    ours, theirs = start(database, ROOT), start(second, other)
    try:
        bodies = [
            {"action": "create", "token": login(server), "description": "Scooter 875643 offline",
             "source": "monitoring"} for server in (ours, theirs)
        ]  # fmt: skip
        results = {}
        for connections in (16, 64):
            result = compare(
                args, (ours, "/rpc", bodies[0]), (theirs, "/rpc", bodies[1]), connections
            )
            del result["runs"]
            result["theirs"] = result.pop("baseline")  # compare's name for the other server
            results[f"{connections} connections"] = result
            print(json.dumps({"connections": connections, **result}), flush=True)
        return results
    finally:
        ours.stop()
        theirs.stop()
        second.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", choices=["slow", "flood", "create"])
    parser.add_argument("--against", help="a git ref: its code instead of (create: beside) ours")
    parser.add_argument("--connections", type=int, default=20, help="slow: slow connections")
    parser.add_argument("--seconds", type=int, default=10, help="slow: length; create: per run")
    parser.add_argument("--rounds", type=int, default=5, help="create: runs per server")
    parser.add_argument(
        "--admin-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)
    )
    args = parser.parse_args()
    if args.bench == "create":
        if not args.against:
            parser.error("create needs --against REF")
        args.seconds = min(args.seconds, 5)
    root = checkout(args.against) if args.against else ROOT
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    database = Database(args.admin_url).create()
    try:
        bench = {"slow": bench_slow, "flood": bench_flood, "create": bench_create}[args.bench]
        result = bench(args, database, root)
    finally:
        database.drop()
    print(json.dumps({"bench": args.bench, "code": args.against or "this tree", **result}))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
