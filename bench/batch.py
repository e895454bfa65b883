"""Intake throughput: incidents created per second by single commands and by batches.

One run starts a real gunicorn (gunicorn.conf.py, WORKERS workers) on a throwaway
PostgreSQL database, then creates incidents three ways over one keep-alive HTTP
connection: one command per request, batches of 100 and batches of 1,000 (each
element its own command and transaction). Target: a batch of 1,000 in well under
a second. `main()` returns the figures, so bench/run.py can call it.

    python bench/batch.py [--database-url postgresql://postgres@127.0.0.1/postgres]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import PostgresDatabases, Server  # noqa: E402  (the test suite's own harness)

DEFAULT_URL = "postgresql://postgres@127.0.0.1/postgres"


def _command(token: str, n: int) -> dict[str, Any]:
    return {
        "action": "create", "token": token, "description": f"bench incident {n}",
        "source": "monitoring", "severity": "low",
    }  # fmt: skip


def _singles(server: Server, token: str, count: int) -> dict[str, float]:
    started = time.perf_counter()
    for n in range(count):
        response = server.post("/rpc", _command(token, n))
        assert response.status_code == 201, response.text
    elapsed = time.perf_counter() - started
    return {"requests": count, "seconds": elapsed, "incidents_per_s": count / elapsed}


def _batches(server: Server, token: str, size: int, rounds: int) -> dict[str, float]:
    timings = []
    for _ in range(rounds):
        body = [_command(token, n) for n in range(size)]
        started = time.perf_counter()
        response = server.post("/rpc", body)
        timings.append(time.perf_counter() - started)
        answers = response.json()
        assert response.status_code == 200 and len(answers) == size, response.text[:300]
        assert all(answer["status"] == 201 for answer in answers)
    total = sum(timings)
    return {
        "batch_size": size,
        "batches": rounds,
        "median_batch_s": statistics.median(timings),
        "max_batch_s": max(timings),
        "incidents_per_s": size * rounds / total,
    }


def _storm(server: Server, token: str) -> dict[str, float]:
    """resolve_many over every open incident the run created (at most MAX_BULK)."""
    started = time.perf_counter()
    wanted = {"status": "new", "source": "monitoring"}
    response = server.post("/rpc", {"action": "resolve_many", "token": token, "filter": wanted})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text[:300]
    changed = response.json()["data"]["changed"]
    return {"resolved": changed, "seconds": elapsed, "incidents_per_s": changed / elapsed}


def run(database_url: str, singles: int, rounds: int, workers: int) -> dict[str, Any]:
    databases = PostgresDatabases(database_url)
    server = Server(databases.create(), Path(tempfile.mkdtemp(prefix="bench-batch-")), workers)
    server.env["WEB_CONCURRENCY"] = str(workers)
    try:
        server.start()
        token = server.login()
        _batches(server, token, 100, 2)  # warm up: connections, caches, JIT of the planner
        return {
            "workers": workers,
            "single": _singles(server, token, singles),
            "batch_100": _batches(server, token, 100, rounds * 2),
            "batch_1000": _batches(server, token, 1000, rounds),
            "resolve_many": _storm(server, token),
        }
    finally:
        server.stop()
        databases.drop_all()


def report(figures: dict[str, Any]) -> str:
    single = figures["single"]
    lines = [
        f"intake on PostgreSQL, gunicorn with {figures['workers']} workers, one client connection",
        f"{'mode':<16}{'incidents/s':>12}{'median request':>18}{'slowest':>10}",
        f"{'single command':<16}{single['incidents_per_s']:>12.0f}"
        f"{single['seconds'] / single['requests'] * 1000:>16.1f}ms{'':>10}",
    ]
    for key in ("batch_100", "batch_1000"):
        row = figures[key]
        lines.append(
            f"{'batch of ' + str(row['batch_size']):<16}{row['incidents_per_s']:>12.0f}"
            f"{row['median_batch_s'] * 1000:>16.1f}ms{row['max_batch_s'] * 1000:>8.0f}ms"
        )
    storm = figures["resolve_many"]
    lines.append(
        f"resolve_many of {storm['resolved']} incidents (one transaction, one event each): "
        f"{storm['seconds']:.2f} s, {storm['incidents_per_s']:.0f} incidents/s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run with the defaults (or `argv`, e.g. ["--rounds", "2"]); print and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
        or DEFAULT_URL,
        help="a PostgreSQL server where a throwaway database may be created",
    )  # fmt: skip
    parser.add_argument("--singles", type=int, default=500, help="single commands to send")
    parser.add_argument("--rounds", type=int, default=5, help="batches of 1,000 to send")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    options = parser.parse_args(argv or [])
    figures = run(options.database_url, options.singles, options.rounds, options.workers)
    print(report(figures))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
