"""Bench plumbing: a throwaway PostgreSQL database, gunicorn servers, wrk and RSS samples.

Nothing here knows what is benchmarked; `run.py` (and the other bench scripts)
compose these pieces. Every server runs the production `gunicorn.conf.py`
(settings through its environment variables) on a free port with
`--no-control-socket`, so several can run side by side with the test suites.
"""

import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import URL, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import servers  # noqa: E402  (the one server helper of tests and benchmarks)
from servers import free_port  # noqa: E402, F401  (for the bench scripts)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
ADMIN = ("bench-admin", "bench-admin-password")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Database:
    """A database created for this run on the server of `admin_url`, dropped by `drop()`."""

    def __init__(self, admin_url: str = DEFAULT_ADMIN_URL) -> None:
        self.admin: URL = make_url(admin_url)
        self.name = f"incident_rpc_bench_{secrets.token_hex(4)}"
        self.url = self.admin.set(drivername="postgresql+psycopg2", database=self.name)

    def _connect(self, database: str | None) -> Any:
        return psycopg2.connect(
            host=self.admin.host or "127.0.0.1", port=self.admin.port or 5432,
            user=self.admin.username, password=self.admin.password,
            dbname=database or self.admin.database or "postgres", connect_timeout=5,
        )  # fmt: skip

    def connect(self) -> Any:
        """A plain psycopg2 connection to the bench database."""
        return self._connect(self.name)

    def _admin(self, sql: str) -> None:
        connection = self._connect(None)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
        connection.close()

    def create(self) -> "Database":
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.render_as_string(hide_password=False)


class Gunicorn(servers.Gunicorn):
    """The tests' gunicorn (tests/servers.py), with a stdlib client for the API."""

    def __init__(self, app: str, env: dict[str, str], ready_path: str, root: Path = ROOT) -> None:
        if app != "wsgi:app":  # a baseline, under our gunicorn.conf.py: no sender of ours
            env = {**env, "NOTIFY_SENDER": "0"}  # beside it, on its database
        super().__init__(app, env, root=root, ready_path=ready_path)

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)


def wrk(
    url: str, body: Any, connections: int, seconds: int, script: str = "post.lua",
    *args: str,
) -> dict[str, float]:  # fmt: skip
    """POST `body` to `url` from `connections` keep-alive connections for `seconds`
    (with bench/storm.lua, each with a dedup_key of its own or a repeat)."""
    command = [
        "wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(BENCH / script), url, "--", json.dumps(body), *args,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    for line in output.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH ") :])
    raise RuntimeError(f"wrk printed no result:\n{output}")


def summarise(runs: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, float]:
    """The median of each of `keys` over a turn's runs, and the failed requests in all."""
    summary: dict[str, float] = {key: statistics.median(run[key] for run in runs) for key in keys}
    summary["failed"] = sum(run["non_2xx"] + run["socket_errors"] for run in runs)
    return summary


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (or `VmHWM`, its peak so far) in KiB; 0 once gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class RssSampler:
    """Samples the RSS of some processes every `interval` seconds, in a thread."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = {pid: rss_kib(pid) for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_kib(pid))

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def seed_incidents(database: "Database", sql: str, params: dict[str, Any]) -> int:
    """Run a seeding INSERT straight into the migrated `incidents` table, its secondary
    indexes dropped first and rebuilt from their own definitions once at the end, then
    VACUUM ANALYZE: the rows now in the table."""
    connection = database.connect()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'incidents'"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute(sql, params)
        for _, definition in indexes:
            cursor.execute(definition)
    connection.commit()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE incidents")
        cursor.execute("SELECT count(*) FROM incidents")
        (total,) = cursor.fetchone()
    connection.close()
    return total


def instance_dir() -> str:
    return tempfile.mkdtemp(prefix="incident_rpc_bench_")
