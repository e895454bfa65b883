"""Fan-out: one listener per worker process pushes new events to its subscribers.

The event table is the truth. The listener reads the final events after its
last id (`journal.read_after`) when a notification does not fit, and every
`EVENTS_POLL_INTERVAL` seconds anyway, so a lost notification delays an event
but never loses it. When a read finds events held back behind an older
transaction that is still running, it reads again soon (from 2 ms, doubling),
as that transaction's end rings no bell unless it wrote events itself.

After every commit that wrote events, `pass_on` hands its `journal.Chunk`s to
this worker's subscribers at once (when they follow on from the last event
published) and rings the doorbell: on PostgreSQL a NOTIFY carrying the chunks,
LISTENed to by every worker of every instance, whose listener publishes them the
same way or reads the log; on SQLite an in-process event (other workers of the
same file find events by polling, which is cheap there). The NOTIFY is sent
outside the writing transaction on purpose, by `Doorbell`: PostgreSQL holds a
global lock from a notifying transaction's commit until its fsync is done, which
would put every write in one queue.

The listener never waits for a socket: it writes to idle ones without waiting
and queues the rest (events/subscriber.py), so a slow socket never stalls it or the
other subscribers.
"""

import json
import logging
import select
import threading
import time
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Connection, Engine, create_engine

from incident_rpc.events import journal
from incident_rpc.events.subscriber import Batch, Subscriber, framed
from incident_rpc.runtime import jsonio
from incident_rpc.runtime.database import engine_is_postgres, engine_options
from incident_rpc.telemetry import metrics

log = logging.getLogger("incident_rpc")
PAGE = 500  # events per read
SQLITE_POLL_INTERVAL = 0.2  # seconds; a local B-tree lookup
HELD_BACK_RETRY = 0.002  # seconds; doubled on each read that still finds events held back
LISTENER_NAME = "incident_rpc events listener"  # its application_name in PostgreSQL
DOORBELL_NAME = "incident_rpc events doorbell"  # the same, for the Doorbell's connection


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
        self._retry = HELD_BACK_RETRY
        self._lost = False  # the last connection failed: say so when the next one holds
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
        metrics.subscribed(+1)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self.subscribers:
                self.subscribers.discard(subscriber)
                metrics.subscribed(-1)

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
                self._lost = True
                log.warning("event listener: %s; reconnecting in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _listen(self) -> None:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.detach()  # never back to the pool: it is LISTENing
        try:
            if self.postgres:  # named, so that operators can tell it in pg_stat_activity
                connection.exec_driver_sql(f"SET application_name = '{LISTENER_NAME}'")
                connection.exec_driver_sql(f"LISTEN {journal.CHANNEL}")
            if not self._ready.is_set():
                self.last_id = journal.last_event_id(connection)
                self._ready.set()
            elif self._lost:
                log.info("event listener: the database is back; catching up")
            self._lost = False
            wait = self._catch_up(connection)
            while True:
                if self.postgres:
                    notified = _wait_for_notifications(connection, wait)
                    if notified and wait == self.poll_interval and all(map(self._take, notified)):
                        continue  # each carried events that followed on: nothing to read
                else:
                    self._doorbell.wait(wait)
                    self._doorbell.clear()
                wait = self._catch_up(connection)
        finally:
            connection.close()  # detached: this really closes it

    def _catch_up(self, connection: Connection) -> float:
        """Publish every final event after the last one; how long to wait before the
        next read if no bell rings: soon while an older transaction holds events back."""
        while True:
            items, held_back = journal.read_after(connection, self.last_id, PAGE)
            connection.rollback()
            if items:
                self._publish(framed(items))
            if len(items) < PAGE:
                break
        self._retry = min(self._retry * 2, self.poll_interval) if held_back else HELD_BACK_RETRY
        return self._retry if held_back else self.poll_interval

    def _take(self, payload: str) -> bool:
        """Publish the chunks a notification carries; False if the log must be read
        (a chunk that does not follow on, or none carried)."""
        try:
            chunks = parse_notification(payload)
        except (ValueError, TypeError, IndexError):
            return False
        return bool(chunks) and all(map(self.publish_after, chunks))

    def publish_after(self, chunk: journal.Chunk) -> bool:
        """Publish a commit's events if they follow on from the last one published and
        nothing can still commit below them; True if they are (or were) published."""
        with self._lock:
            if chunk.items[-1][0] <= self.last_id:
                return True  # the committing worker, or the log, was first
            if not chunk.final or chunk.previous != self.last_id:
                return False
            self._publish(framed(chunk.items))
            return True

    def _publish(self, batch: Batch) -> None:
        """Offer every subscriber the batch; offering never waits."""
        with self._lock:
            self.last_id = max(self.last_id, batch[-1][0])
            for subscriber in self.subscribers:
                subscriber.offer(batch)
            metrics.offered(len(batch) * len(self.subscribers))


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


def _wait_for_notifications(connection: Connection, timeout: float) -> list[str]:
    """The payloads of the notifications that arrive within `timeout`, all at once."""
    raw: Any = connection.connection.dbapi_connection
    if not select.select([raw], [], [], timeout)[0]:
        return []
    raw.poll()
    payloads = [notice.payload for notice in raw.notifies]
    raw.notifies.clear()
    return payloads


_NOTIFY_LIMIT = 7900  # PostgreSQL refuses payloads of 8,000 bytes and more


def notification(chunks: list[journal.Chunk]) -> str:
    """The chunks as a NOTIFY payload, or "" (read the log) when they do not fit."""
    payload = jsonio.encode([[c.previous, c.final, c.items] for c in chunks])
    return payload.decode() if len(payload) < _NOTIFY_LIMIT else ""


def parse_notification(payload: str) -> list[journal.Chunk]:
    return [
        journal.Chunk(int(previous), final is True, [(int(i), c, str(m)) for i, c, m in items])
        for previous, final, items in json.loads(payload or "[]")
    ]


class Doorbell:
    """Sends the NOTIFY that rings every listener, from a connection of its own.

    Its own transaction, with synchronous_commit off: it carries nothing that must
    survive a crash (the listeners poll anyway), so it never waits for an fsync
    and holds PostgreSQL's notify lock only for a moment. It carries the events
    (`notification`), so that a listener that is caught up can pass them on
    without reading the log. Rings that come while one is being sent go out
    together in the next one: under load one NOTIFY serves many commits.
    """

    def __init__(self, app: Flask) -> None:
        self.engine = _reader_engine(app.config)
        self._chunks: list[journal.Chunk] = []
        self._chunks_lock = threading.Lock()
        self._wanted = threading.Event()
        thread = threading.Thread(target=self._run, name="incident-doorbell", daemon=True)
        thread.start()

    def ring(self, chunks: list[journal.Chunk]) -> None:
        with self._chunks_lock:
            self._chunks.extend(chunks)
        self._wanted.set()

    def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                with self.engine.connect() as connection:
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                    connection.exec_driver_sql("SET synchronous_commit = off")
                    connection.exec_driver_sql(f"SET application_name = '{DOORBELL_NAME}'")
                    delay = 0.5
                    while True:
                        self._wanted.wait()
                        self._wanted.clear()
                        with self._chunks_lock:
                            chunks, self._chunks = self._chunks, []
                        connection.exec_driver_sql(_NOTIFY, (journal.CHANNEL, notification(chunks)))
            except Exception as error:  # the database went away: ring again once back
                self._wanted.set()
                log.warning("event doorbell: %s; reconnecting in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


_NOTIFY = "SELECT pg_notify(%s, %s)"  # for the driver: nothing to compile
_doorbells: dict[int, Doorbell | None] = {}


def _doorbell(app: Flask) -> Doorbell | None:
    """This process's doorbell for `app`, started on first use; None on SQLite."""
    if id(app) not in _doorbells:  # decided once, not on every commit
        with _buses_lock:
            if id(app) not in _doorbells:
                _doorbells[id(app)] = Doorbell(app) if engine_is_postgres(app.config) else None
    return _doorbells[id(app)]


def pass_on(chunks: list[journal.Chunk], app: Flask | None = None) -> None:
    """Events were committed: this worker's subscribers get them at once if they follow
    on; every listener (on PostgreSQL also those of other processes) is rung."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    metrics.observe_events(event for chunk in chunks for event in chunk.events)
    running = _buses.get(id(app))
    doorbell = _doorbell(app)
    if doorbell is not None:
        doorbell.ring(chunks)
        time.sleep(0)  # let the doorbell send now, while this worker's sockets are written
    published = running is not None and all(map(running.publish_after, chunks))
    if running is not None and not published and not running.postgres:
        running.ring()  # something came between: the listener reads the log


def init_app(app: Flask) -> None:
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {"ping_interval": app.config["EVENTS_PING_INTERVAL"], "max_message_size": 65536},
    )
