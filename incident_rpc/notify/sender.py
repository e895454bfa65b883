"""The sender: posting the outbox's due deliveries, in a process of its own (notifier.py).

A thread claims due deliveries (claims.py), hands one attempt per claimed row (per
chat, for Telegram) to NOTIFY_CONCURRENCY threads that post, and records each result. It
looks when it is woken (`wanted`: a commit wrote deliveries; again soon after, as a
batch rings before its commit), when the earliest pending delivery is due, and every
NOTIFY_POLL_INTERVAL anyway, so rows written by other instances, or left by a sender
that died, are found.

On SQLite a single sender runs per database: the one holding a file lock beside the
database; when its process ends, the lock goes and another instance's takes over.
Telegram: at most one message per TELEGRAM_CHAT_INTERVAL to a chat (a slot taken in
the database, so across every sender) and TELEGRAM_PER_SECOND from this sender; what
waits for a chat goes out together, as one digest.
"""

import fcntl
import logging
import os
import queue
import secrets
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Row, create_engine, event
from sqlalchemy.engine import Engine

from incident_rpc.models import utcnow
from incident_rpc.notify import claims, renotify, retries, transports
from incident_rpc.notify.models import ChannelKind, DeliveryState
from incident_rpc.notify.post import Outcome
from incident_rpc.runtime.database import engine_options

log = logging.getLogger("incident_rpc")
FIRST_CHASE = 0.005  # seconds: after a ring, look again this soon (doubling) if nothing is due
RECORD_WAIT = 0.05  # seconds a finished attempt may wait for others to be recorded with


class Sender:
    def __init__(self, app: Flask) -> None:
        self.config = app.config
        self.engine = _engine(app.config)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.token = f"{os.getpid()}.{secrets.token_hex(6)}"  # whose claim: the pid
        self.wanted = threading.Event()
        self.free = app.config["NOTIFY_CONCURRENCY"]  # attempts that may start now
        # Claimed ahead of the attempts, so that a claim and a record serve many rows.
        self.capacity = 4 * self.free
        self._claimed: deque[tuple[Row, list[Row]]] = deque()
        self._results: list[tuple[Row, list[Row], Outcome]] = []
        self._first_result = 0.0  # time.monotonic() when the oldest unrecorded one came
        self._lock = threading.Lock()  # the slots and the results
        self._pacer = _Pacer(1 / app.config["TELEGRAM_PER_SECOND"])
        self._lock_file: Any = None
        self._next_scan = 0.0  # time.monotonic() of the next re-notification scan
        self._stopping = threading.Event()
        # Posting threads, started once rather than one per attempt: a thread's start
        # costs CPU that every delivery paid (docs/benchmarks.md, session 8).
        self._attempts: queue.SimpleQueue[tuple[Row, list[Row]]] = queue.SimpleQueue()
        for n in range(self.config["NOTIFY_CONCURRENCY"]):
            threading.Thread(target=self._post, name=f"incident-post-{n}", daemon=True).start()
        self._thread = threading.Thread(target=self._run, name="incident-notify", daemon=True)
        self._thread.start()

    @property
    def _in_flight(self) -> int:
        return self.config["NOTIFY_CONCURRENCY"] - self.free

    def stop(self, timeout: float) -> None:
        """Claim nothing more, give back what is claimed but not started (another sender
        may take it at once, not after the lease), let the attempts under way finish
        for up to `timeout` seconds, and record them."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self.wanted.set()
        self._thread.join(timeout)
        unstarted = [row.id for _, rows in self._claimed for row in rows]
        self._claimed.clear()
        if unstarted:
            with self.engine.begin() as connection:
                claims.release(connection, unstarted, self.token)
        while self._in_flight and time.monotonic() < deadline:
            self.wanted.wait(0.05)
            self.wanted.clear()
        self._record(at_once=True)

    def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._serve()
            except Exception as error:  # the database went away: try again, then catch up
                log.warning("notification sender: %s; again in %.1f s", type(error).__name__, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def _serve(self) -> None:
        poll = self.config["NOTIFY_POLL_INTERVAL"]
        chase = 0.0
        while not self._stopping.is_set():
            if not self._may_send():
                self._stopping.wait(poll)
                continue
            if self.wanted.is_set():
                self.wanted.clear()
                chase = FIRST_CHASE
            self._record()
            self._renotify()
            claimed = self._claim()
            self._start()
            if claimed:
                chase = FIRST_CHASE
                continue
            busy = self._claimed or self._in_flight
            wait = poll if busy else self._until_due(poll)
            if self._results:
                wait = min(wait, RECORD_WAIT)
            if chase:
                wait, chase = min(wait, chase), (chase * 2 if chase * 2 < poll else 0.0)
            self.wanted.wait(wait)

    def _may_send(self) -> bool:
        """PostgreSQL: always. SQLite: while this process holds the sender's file lock."""
        if self.postgres or self._lock_file is not None:
            return True
        path = Path(self.engine.url.database or "instance/memory").with_suffix(".sender.lock")
        handle = open(path, "w")  # noqa: SIM115 (held for the life of the process)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def _claim(self) -> int:
        """Claim what is due, up to the room left; how many attempts that makes. While
        work is queued or under way, only once half the room is free: a claim per
        finished attempt cost the database more than the deliveries' own rows."""
        room = self.capacity - len(self._claimed) - self._in_flight
        if room <= 0 or (room < self.capacity // 2 and (self._claimed or self._in_flight)):
            return 0
        now, lease = utcnow(), self.config["NOTIFY_LEASE"]
        with self.engine.begin() as connection:
            work = [[row] for row in claims.claim(connection, now, lease, self.token, room)]
        for channel_id in self._due_chats(now):
            if len(work) >= room:
                break
            with self.engine.begin() as connection:
                interval = self.config["TELEGRAM_CHAT_INTERVAL"]
                if not claims.take_chat_slot(connection, channel_id, now, interval):
                    continue
                limit = self.config["TELEGRAM_DIGEST_MAX"]
                rows = claims.claim(connection, now, lease, self.token, limit, channel_id)
            if rows:
                work.append(rows)
        if not work:
            return 0
        with self.engine.begin() as connection:
            found = claims.channels(connection, {rows[0].channel_id for rows in work})
        self._claimed.extend((found[rows[0].channel_id], rows) for rows in work)
        return len(work)

    def _renotify(self) -> None:
        """Write the re-notifications that are due, at most once a poll interval."""
        if time.monotonic() < self._next_scan:
            return
        self._next_scan = time.monotonic() + self.config["NOTIFY_POLL_INTERVAL"]
        try:
            with self.engine.begin() as connection:
                renotify.scan(connection, utcnow(), self.config["NOTIFY_RENOTIFY_UNIT"])
        except Exception as error:  # never in the way of the deliveries themselves
            log.warning("re-notification scan: %s", type(error).__name__)

    def _due_chats(self, now: datetime) -> list[int]:
        with self.engine.begin() as connection:
            return claims.telegram_due(connection, now)

    def _start(self) -> None:
        while self._claimed and self.free:
            channel, rows = self._claimed.popleft()
            with self._lock:
                self.free -= 1
            self._attempts.put((channel, rows))

    def _post(self) -> None:
        while True:
            self._attempt(*self._attempts.get())

    def _attempt(self, channel: Row, rows: list[Row]) -> None:
        try:
            telegram = channel.kind == ChannelKind.telegram
            if telegram:
                self._pacer.wait()
                self._hold_chat_from_now(channel.id)  # the slot was taken at the claim
            outcome = transports.send(channel, rows, self.config)
            if telegram:  # the chat's next message is a second after this one's answer
                self._hold_chat_from_now(channel.id)
        except Exception as error:  # a bug: the lease runs out and another attempt follows
            log.warning("notification attempt: %s", type(error).__name__)
            outcome = None
        with self._lock:
            self.free += 1
            if outcome is not None:
                if not self._results:
                    self._first_result = time.monotonic()
                self._results.append((channel, rows, outcome))
        self.wanted.set()

    def _hold_chat_from_now(self, channel_id: int) -> None:
        with self.engine.begin() as connection:
            interval = self.config["TELEGRAM_CHAT_INTERVAL"]
            claims.push_chat_slot(connection, channel_id, utcnow(), interval)

    def _record(self, at_once: bool = False) -> None:
        """Every finished attempt's result, in one transaction. Rows are updated in id
        order, as channel_delete locks them, so that the two never deadlock."""
        with self._lock:
            waited = time.monotonic() - self._first_result
            few = len(self._results) < self.capacity // 4
            if few and self._in_flight and waited < RECORD_WAIT and not at_once:
                return  # a few more first: one transaction for many
            results, self._results = self._results, []
        if not results:
            return
        now = utcnow()
        schedule = self.config["NOTIFY_RETRY_SCHEDULE"]
        attempts = sorted(
            ((row, channel, outcome) for channel, rows, outcome in results for row in rows),
            key=lambda attempt: attempt[0].id,
        )
        disabled: set[int] = set()
        delivered: dict[int, list[int]] = {}  # HTTP status -> ids: one UPDATE each
        with self.engine.begin() as connection:
            for row, channel, outcome in attempts:
                verdict = retries.decide(outcome, row.attempts - row.round_start, schedule)
                if verdict.state == DeliveryState.delivered:
                    delivered.setdefault(outcome.status or 200, []).append(row.id)
                    continue
                if not claims.finish(connection, row, verdict, outcome, self.token, now):
                    continue  # taken over after its lease: the other sender records it
                if verdict.disable:
                    disabled.add(channel.id)
                if verdict.state == DeliveryState.failed:
                    log.warning(
                        "notification %s to channel %s failed: %s",
                        row.id, channel.id, outcome.error,
                    )  # fmt: skip
            for status, ids in delivered.items():
                claims.finish_delivered(connection, ids, status, self.token, now)
            for channel, _, outcome in results:
                if channel.kind == ChannelKind.telegram and outcome.retry_after is not None:
                    until = datetime.fromtimestamp(time.time() + outcome.retry_after, UTC)
                    claims.hold_chat(connection, channel.id, until)
            for channel_id in sorted(disabled):
                claims.disable(connection, channel_id, "the receiver answered 410 Gone")

    def _until_due(self, poll: float) -> float:
        with self.engine.begin() as connection:
            due = claims.next_due(connection)
        if due is None:
            return poll
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        return min(poll, max((due - utcnow()).total_seconds(), 0.01))


class _Pacer:
    """At most one call per `interval` through `wait`, in this process."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def _engine(config: dict[str, Any]) -> Engine:
    """The sender's own engine: one connection at a time is all it uses. On SQLite each
    transaction takes the write lock up front (every one of them writes)."""
    options = engine_options(config)
    if "pool_size" in options:
        options.update(pool_size=1, max_overflow=2)
    engine = create_engine(config["SQLALCHEMY_DATABASE_URI"], **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(
            engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE")
        )
    return engine


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.isolation_level = None  # BEGIN IMMEDIATE, above, instead of sqlite3's own
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
