"""psycopg2 under gevent, with deadlines (installed by gunicorn.conf.py).

A gevent worker must not let psycopg2 block the whole process, so psycopg2 waits
through a callback that yields to gevent (as psycogreen's does). psycogreen's waits
forever, though, and libpq's own connect_timeout holds only for blocking
connections: a database that accepts connections and never answers (a hung host,
a black-holed network) held every request of the worker until gunicorn killed it.
Here each wait has a deadline: DB_CONNECT_TIMEOUT while connecting, the statement
timeout plus as much again once connected. Past it the wait raises
OperationalError; psycopg2 then closes the connection, SQLAlchemy discards it, and
the command answers 503 (errors.classify).
"""

import time
from functools import partial

import psycopg2
from gevent.socket import wait_read, wait_write
from psycopg2 import extensions


def install(connect_timeout: float, query_timeout: float) -> None:
    extensions.set_wait_callback(partial(_wait, connect_timeout, query_timeout))


def _wait(connect_timeout: float, query_timeout: float, connection) -> None:
    connecting = connection.status == extensions.STATUS_SETUP
    limit = connect_timeout if connecting else query_timeout
    deadline = time.monotonic() + limit
    while True:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return
        if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
            raise psycopg2.OperationalError(f"bad result from poll: {state!r}")
        wait = wait_read if state == extensions.POLL_READ else wait_write
        try:
            wait(connection.fileno(), timeout=max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise psycopg2.OperationalError(
                f"the database did not answer within {limit:g} s"
            ) from None
