"""SQLite connections whose waits for the write lock let the rest of the worker run.

One writer at a time holds SQLite's write lock (every write transaction takes it up
front with BEGIN IMMEDIATE, runtime/database.py); another writer's statement gets
SQLITE_BUSY. sqlite3's own busy handler then sleeps inside the C call, in the
calling thread: under a gevent worker that stops every greenlet of the worker,
including the one that holds the lock and would soon release it. Two sign-ins in
one worker (the first waiting for its password check in gevent's thread pool)
stalled it for the whole 15-s timeout; eight kept it stalled until gunicorn killed it.

So SQLite's busy timeout is 0 and a busy statement is retried after `time.sleep`,
which a gevent worker patches into a cooperative wait; elsewhere (the CLI, a gthread
worker) it is an ordinary sleep of that thread. The `timeout` given to connect
(database.engine_options) still bounds the whole wait. Engines use these
connections through `connect_args={"factory": Connection}`.
"""

import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

_FIRST_PAUSE, _LONGEST_PAUSE = 0.001, 0.02  # seconds; SQLite's own handler ramps alike


def _busy(error: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock. Not SQLITE_BUSY_SNAPSHOT: a read transaction
    that wants to write after another commit can never succeed by waiting."""
    code = getattr(error, "sqlite_errorcode", sqlite3.SQLITE_BUSY)
    return code & 0xFF == sqlite3.SQLITE_BUSY and code != sqlite3.SQLITE_BUSY_SNAPSHOT


def _patiently(timeout: float, call: Callable[..., Any], *args: Any) -> Any:
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        try:
            return call(*args)
        except sqlite3.OperationalError as error:
            if not _busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # gevent's sleep in a gevent worker: the lock holder runs
        pause = min(pause * 2, _LONGEST_PAUSE)


class Cursor(sqlite3.Cursor):
    connection: "Connection"

    def execute(self, sql: str, parameters: Any = (), /) -> "Cursor":
        return _patiently(self.connection.lock_timeout, super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> "Cursor":
        parameters = list(parameters)  # may be retried: an iterator would be used up
        return _patiently(self.connection.lock_timeout, super().executemany, sql, parameters)


class Connection(sqlite3.Connection):
    def __init__(self, *args: Any, timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, timeout=0, **kwargs)  # SQLite itself never sleeps
        self.lock_timeout = timeout

    def cursor(self, factory: Any = None) -> Cursor:
        return super().cursor(factory or Cursor)

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:  # (C skips cursor())
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        return self.cursor().executemany(sql, parameters)

    def commit(self) -> None:
        _patiently(self.lock_timeout, super().commit)
