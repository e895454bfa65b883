"""Fan-out: one listener per worker process pushes new events to its subscribers.

The event table is the truth. The listener reads `id > last_id ORDER BY id`
whenever its doorbell rings, and every `EVENTS_POLL_INTERVAL` seconds anyway, so
a lost ring delays an event but never loses it. On PostgreSQL the doorbell is
LISTEN/NOTIFY on a dedicated connection (it reaches every worker of every
instance), and a notification also carries its events with the id of the event
before them: when that id is the listener's last id, nothing can be missing and
the events go out without a read (see `Bus._hear`). On SQLite the doorbell is
rung in-process by the session's commit (other workers of the same file find
events by polling). Either way, right after a commit the committing worker hands
its own subscribers the events itself (`_deliver_after_commit`), under the same
"previous id" check, and its listener then skips them.

The listener never waits for a socket: it writes to idle ones without waiting
and queues the rest (subscriber.py), so a slow socket never stalls it or the
other subscribers.
"""

import logging
import select
import threading
import time
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session

from . import events
from .database import engine_options
from .subscriber import Batch, Subscriber, framed

log = logging.getLogger("incident_rpc")
PAGE = 500  # events per read
SQLITE_POLL_INTERVAL = 0.2  # seconds; a local B-tree lookup
LISTENER_NAME = "incident_rpc events listener"  # its application_name in PostgreSQL


class Bus:
    """The per-process listener and its set of subscribers."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.engine = _reader_engine(config)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.poll_interval = config["EVENTS_POLL_INTERVAL"]
        if not self.postgres:  # other workers on the same file cannot ring us; polling is cheap
            self.poll_interval = min(self.poll_interval, SQLITE_POLL_INTERVAL)
        self.capacity = config["EVENTS_QUEUE_SIZE"]
        self.last_id = 0
        self.subscribers: set[Subscriber] = set()
        self._lock = threading.RLock()
        self._doorbell = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="incident-events", daemon=True)
        self._thread.start()

    def subscribe(self, timeout: float) -> Subscriber:
        """Join the bus; raises TimeoutError while the listener cannot read the log."""
        if not self._ready.wait(timeout):
            raise TimeoutError("the event listener is not connected")
        with self._lock:
            subscriber = Subscriber(self.capacity)
            self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self.subscribers.discard(subscriber)

    def ring(self) -> None:
        self._doorbell.set()

    def close_all(self) -> None:
        """The worker is stopping: tell every socket to go away (and resume elsewhere)."""
        for subscriber in list(self.subscribers):
            subscriber.going_away = True
            subscriber.wake()

    def _run(self) -> None:
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                self._listen()
            except Exception as error:  # the database went away: reconnect, then catch up
                if time.monotonic() - started > 60:
                    delay = 0.5  # it had been fine for a while: a new outage
                log.warning("event listener: %s; reconnecting in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _listen(self) -> None:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.detach()  # never back to the pool: it is LISTENing
        try:
            if self.postgres:  # named, so that operators can tell it in pg_stat_activity
                connection.exec_driver_sql(f"SET application_name = '{LISTENER_NAME}'")
                connection.exec_driver_sql(f"LISTEN {events.CHANNEL}")
            if not self._ready.is_set():
                self.last_id = events.last_event_id(connection)
                self._ready.set()
            self._catch_up(connection)
            while True:
                if self.postgres:
                    self._hear(connection)
                else:
                    self._doorbell.wait(self.poll_interval)
                    self._doorbell.clear()
                    self._catch_up(connection)
        finally:
            connection.close()  # detached: this really closes it

    def _hear(self, connection: Connection) -> None:
        """Wait for notifications (or the poll interval) and act on each, in order.

        PostgreSQL delivers notifications in commit order, which the ordering lock
        makes id order. A notification whose previous id is our last id proves that
        nothing lies between: its events go out as they are. Anything else (a gap, a
        body too big to carry, silence until the poll interval) reads the table.
        """
        raw: Any = connection.connection.dbapi_connection
        if not select.select([raw], [], [], self.poll_interval)[0]:
            self._catch_up(connection)  # the periodic poll: a lost ring only delays
            return
        raw.poll()
        while raw.notifies:
            payload = raw.notifies.pop(0).payload
            try:
                previous, last, items = events.parse_notification(payload)
            except (ValueError, KeyError, IndexError, TypeError):
                previous, last, items = -1, self.last_id + 1, []
            if last <= self.last_id:
                continue  # the table, or the committing worker, gave us these already
            if not (items and self.publish_after(previous, framed(items))):
                self._catch_up(connection)

    def _catch_up(self, connection: Connection) -> None:
        while True:
            items = events.read_after(connection, self.last_id, PAGE)
            connection.rollback()
            if items:
                self._publish(framed(items))
            if len(items) < PAGE:
                return

    def publish_after(self, previous: int, batch: Batch) -> bool:
        """Publish `batch` if it follows on from the last event published; else False."""
        with self._lock:
            if previous != self.last_id:
                return False
            self._publish(batch)
            return True

    def _publish(self, batch: Batch) -> None:
        """Under the lock, so that two publishers (the listener, a committing request)
        never hand a subscriber batches out of order. Offering never waits."""
        with self._lock:
            self.last_id = max(self.last_id, batch[-1][0])
            for subscriber in self.subscribers:
                subscriber.offer(batch)


def _reader_engine(config: dict[str, Any]) -> Engine:
    """Reads of the log go through an engine of their own: on SQLite it has none of
    the main engine's BEGIN IMMEDIATE, so a reader never takes the write lock."""
    options = engine_options(config)
    if "pool_size" in options:
        options.update(pool_size=3, max_overflow=10)
    return create_engine(config["SQLALCHEMY_DATABASE_URI"], **options)


_buses: dict[int, Bus] = {}
_buses_lock = threading.Lock()


def bus(app: Flask | None = None) -> Bus:
    """This process's bus for `app`, started on first use (after gunicorn forks)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    with _buses_lock:
        if id(app) not in _buses:
            _buses[id(app)] = Bus(app)
        return _buses[id(app)]


def close_all() -> None:
    """For gunicorn's SIGTERM: every socket of this process is told to go away."""
    for running in list(_buses.values()):
        running.close_all()


def _deliver_after_commit(session: Session) -> None:
    """The committing worker hands its own subscribers the events at once, instead of
    waiting for its listener to hear of them; the listener then skips them. Not for a
    session joined to a batch's transaction: its "commit" is only a savepoint's."""
    recorded = session.info.pop(events.RECORDED, None)
    if recorded is None or not has_app_context():
        return
    running = _buses.get(id(current_app._get_current_object()))  # type: ignore[attr-defined]
    bind = session.get_bind()
    if running is None or (isinstance(bind, Connection) and bind.in_transaction()):
        return
    previous, items = recorded
    if not running.publish_after(previous, framed(items)) and not running.postgres:
        running.ring()  # something came between: the listener reads the table


# On the Session class, like events.py's hooks: also the sessions a batch joins.
event.listen(Session, "after_commit", _deliver_after_commit)


def init_app(app: Flask) -> None:
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {"ping_interval": app.config["EVENTS_PING_INTERVAL"], "max_message_size": 65536},
    )
