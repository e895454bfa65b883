"""The baseline: a bare Flask app doing the benchmarked work with plain psycopg2.

It runs under the same gunicorn settings as the service (`gunicorn.conf.py`)
and against the same incidents table, so the ratio of our figures to its
figures measures only what our own code adds: dispatch, authentication,
validation, the ORM, the event row and serialization.

- `POST /create`: one INSERT ... RETURNING id and a commit; answers the id.
- `POST /latest`: one indexed SELECT of the latest 50 incidents with a status,
  answered as JSON with the same fields the service returns.

Settings: DATABASE_URL (required), DB_POOL_SIZE (as the service: the pool holds
up to twice that many connections per worker). Under gevent workers the production
gunicorn config makes psycopg2 wait on gevent, for the baseline as for the service.
"""

import json
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg2
from flask import Flask, Response, request

COLUMNS = (
    "id, title, description, status, severity, source, details, created_by, created_at,"
    " updated_at, resolved_at, resolved_by, resolution, version"
)
INSERT = (
    "INSERT INTO incidents (description, status, severity, source, created_by, created_at,"
    " updated_at, version) VALUES (%s, 'new', 'medium', %s, 'admin', %s, %s, 1) RETURNING id"
)
LATEST = (
    f"SELECT {COLUMNS} FROM incidents WHERE status = %s ORDER BY created_at DESC, id DESC LIMIT 50"
)


class Pool:
    """At most `size` connections, reused last-in first-out; callers wait for a free one."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.free: queue.LifoQueue[Any] = queue.LifoQueue()
        self.slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        self.slots.acquire()
        try:
            try:
                connection = self.free.get_nowait()
            except queue.Empty:
                connection = psycopg2.connect(self.dsn)
            try:
                yield connection
            except BaseException:
                connection.close()
                raise
            self.free.put(connection)
        finally:
            self.slots.release()


app = Flask(__name__)
pool = Pool(  # connects on first use: bench/run.py imports this module for its SQL
    os.environ.get("DATABASE_URL", "").replace("postgresql+psycopg2://", "postgresql://"),
    2 * int(os.environ.get("DB_POOL_SIZE", 10)),
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def answer(status: int, data: Any) -> Response:
    body = {"success": True, "error": "", "status": status, "data": data}
    return Response(json.dumps(body), status=status, mimetype="application/json")


@app.get("/healthz")
def healthz() -> Response:
    return answer(200, {"alive": True})


@app.post("/create")
def create() -> Response:
    command = json.loads(request.get_data())
    now = datetime.now(UTC)
    with pool.connection() as connection:
        with connection.cursor() as cursor:
            cursor.execute(
                INSERT, (command["description"], command.get("source", "unknown"), now, now)
            )
            (incident_id,) = cursor.fetchone()
        connection.commit()
    return answer(201, {"id": incident_id})


@app.post("/latest")
def latest() -> Response:
    command = json.loads(request.get_data())
    with pool.connection() as connection:
        with connection.cursor() as cursor:
            cursor.execute(LATEST, (command["status"],))
            names = [column.name for column in cursor.description]
            rows = cursor.fetchall()
        connection.rollback()
    incidents = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        for name in ("created_at", "updated_at", "resolved_at"):
            item[name] = _iso(item[name])
        incidents.append(item)
    return answer(200, {"incidents": incidents, "next_cursor": None})
