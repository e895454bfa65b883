"""What one batch of big reads costs a worker: its RSS before, at its peak and after.

One run starts a real gunicorn with one worker (on loopback, a throwaway database),
seeds incidents, then posts a batch of `get_all` pages at limit 1,000 (by default the
issue's 100 of them: a 4 KB request) a few times, and reads the worker's VmRSS and
VmHWM (peak, reset before each batch through /proc/<pid>/clear_refs) from /proc.
Bounded: a fixed number of batches, each with a 300 s timeout. `main()` returns the
figures, so bench/run.py can call it.

    python bench/batch_memory.py [--database-url postgresql://...] [--sqlite]
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import PostgresDatabases, Server  # noqa: E402  (the test suite's own harness)

DEFAULT_URL = "postgresql://postgres@127.0.0.1/postgres"


def _memory_mib(pid: int) -> dict[str, float]:
    """The process's resident set now and at its peak, in MiB."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) / 1024
    return found


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM starts again from the current RSS


def _worker(server: Server) -> int:
    assert server.process is not None
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        (worker,) = children.read().split()
    return int(worker)


def _seed(server: Server, token: str, count: int, size: int) -> None:
    per_batch = max(1, 700_000 // size)  # under MAX_CONTENT_LENGTH (1 MiB)
    for start in range(0, count, per_batch):
        body = [{"action": "create", "token": token, "description": f"{n} " + "s" * size}
                for n in range(start, min(count, start + per_batch))]  # fmt: skip
        response = server.post("/rpc", body)
        assert response.status_code == 200, response.text[:300]


def _one_batch(server: Server, token: str, pages: int, limit: int) -> dict[str, Any]:
    pid = _worker(server)
    body = json.dumps([{"action": "get_all", "limit": limit}] * pages)  # token: in the header
    before = _memory_mib(pid)["VmRSS"]
    _reset_peak(pid)
    started = time.perf_counter()
    response = server.session.post(
        f"{server.url}/rpc", data=body, timeout=300,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    after = _memory_mib(pid)
    answers = response.json()
    return {
        "request_bytes": len(body),
        "http_status": response.status_code,
        "answer_bytes": len(response.content),
        "statuses": dict(collections.Counter(answer["status"] for answer in answers)),
        "seconds": elapsed,
        "rss_before_mib": before,
        "rss_peak_mib": after["VmHWM"],
        "rss_after_mib": after["VmRSS"],
        "same_worker": _worker(server) == pid,
    }


def run(database_url: str | None, incidents: int, size: int, pages: int, rounds: int):
    databases = PostgresDatabases(database_url) if database_url else None
    instance = Path(tempfile.mkdtemp(prefix="bench-batch-memory-"))
    url = databases.create() if databases else f"sqlite:///{instance / 'bench.sqlite3'}"
    server = Server(url, instance, workers=1, GUNICORN_TIMEOUT="300")
    try:
        server.start()
        token = server.login()
        _seed(server, token, incidents, size)
        server.post("/rpc", [{"action": "get_all", "token": token, "limit": 1000}])  # warm up
        return {
            "database": "postgresql" if databases else "sqlite",
            "incidents": incidents,
            "description_chars": size,
            "pages": pages,
            "batches": [_one_batch(server, token, pages, 1000) for _ in range(rounds)],
        }
    finally:
        server.stop()
        if databases:
            databases.drop_all()


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['pages']} x get_all limit 1000 in one batch, over {figures['incidents']}"
        f" incidents of {figures['description_chars']} characters, {figures['database']},"
        " one gevent worker",
        f"{'request':>9}{'answer':>12}{'statuses':>22}{'seconds':>9}"
        f"{'RSS before':>12}{'peak':>8}{'after':>8}  (MiB)",
    ]
    for row in figures["batches"]:
        counts = " ".join(f"{count}x{status}" for status, count in sorted(row["statuses"].items()))
        lines.append(
            f"{row['request_bytes']:>8}B{row['answer_bytes'] / 2**20:>10.1f}Mi{counts:>22}"
            f"{row['seconds']:>9.2f}{row['rss_before_mib']:>12.0f}{row['rss_peak_mib']:>8.0f}"
            f"{row['rss_after_mib']:>8.0f}" + ("" if row["same_worker"] else "  WORKER RESTARTED")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
        or DEFAULT_URL,
        help="a PostgreSQL server where a throwaway database may be created",
    )  # fmt: skip
    parser.add_argument("--sqlite", action="store_true", help="a throwaway SQLite file instead")
    parser.add_argument("--incidents", type=int, default=1000, help="incidents to seed")
    parser.add_argument("--size", type=int, default=2000, help="characters per description")
    parser.add_argument("--pages", type=int, default=100, help="get_all commands in the batch")
    parser.add_argument("--rounds", type=int, default=3, help="batches to send (at most 10)")
    options = parser.parse_args(argv or [])
    url = None if options.sqlite else options.database_url
    rounds = max(1, min(options.rounds, 10))
    figures = run(url, options.incidents, options.size, min(options.pages, 1000), rounds)
    print(report(figures))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
