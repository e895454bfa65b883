"""Idle HTTP connections to receivers, kept for the next post to the same origin.

Many deliveries to one receiver should not each pay a TCP (and TLS) handshake, nor
make the receiver accept a connection each. `take` hands out the newest idle
connection of an origin, or a new one; `release` keeps a connection whose answer was
read whole and not marked `Connection: close`, and closes any other. Every connection
is opened through `addresses.connect`, so a reused one had its peer checked when it
was opened; `allow_private` is part of the origin, so a connection opened under the
relaxed rule never serves a post under the strict one. Thread-safe: the sender's
attempts run side by side, and a connection is only ever in one attempt's hands.
"""

import http.client
import socket
import ssl
import threading
import time
from typing import NamedTuple

from incident_rpc.notify import addresses

# Idle connections kept per origin: the sender's attempts at once (NOTIFY_CONCURRENCY,
# 8 by default) with room to spare; more are closed rather than kept open for nothing.
MAX_IDLE_PER_ORIGIN = 16
# Receivers commonly close a connection idle for 5 s (Node's keepAliveTimeout): one idle
# this long is closed rather than reused, so that a post seldom races the receiver's
# close (post.py retries a reused connection once when it does).
MAX_IDLE_SECONDS = 4.0


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int
    allow_private: bool


class Connection(http.client.HTTPConnection):
    """An HTTP(S) connection whose socket is `addresses.connect`'s checked one."""

    def __init__(self, origin: Origin, timeout: float) -> None:
        super().__init__(origin.host, origin.port, timeout=timeout)
        self.origin = origin

    def connect(self) -> None:
        sock = addresses.connect(self.host, self.port, self.timeout, self.origin.allow_private)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client's own
        if self.origin.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


_idle: dict[Origin, list[tuple[float, Connection]]] = {}  # oldest first: (since, connection)
_lock = threading.Lock()
_next_sweep = 0.0  # time.monotonic() after which `release` closes every origin's stale ones


def take(origin: Origin, timeout: float) -> tuple[Connection, bool]:
    """The newest idle connection to `origin` and True, or a new (unconnected) one and
    False. When the newest is stale, so are the older ones: all are closed."""
    now = time.monotonic()
    stale: list[tuple[float, Connection]] = []
    with _lock:
        idle = _idle.get(origin, [])
        newest = idle.pop() if idle else None
        if newest is not None and now - newest[0] >= MAX_IDLE_SECONDS:
            stale, newest = [newest, *idle], None
            idle.clear()
        if not idle:
            _idle.pop(origin, None)
    _close(stale)
    if newest is None:
        return Connection(origin, timeout), False
    connection = newest[1]
    connection.timeout = timeout
    if connection.sock is not None:
        connection.sock.settimeout(timeout)
    return connection, True


def release(connection: Connection, response: http.client.HTTPResponse | None) -> None:
    """Keep `connection` if `response` was read whole and the receiver keeps it open."""
    global _next_sweep
    if response is None or response.will_close or not response.isclosed():
        connection.close()
        return
    now = time.monotonic()
    with _lock:
        idle = _idle.setdefault(connection.origin, [])
        idle.append((now, connection))
        surplus = idle[:-MAX_IDLE_PER_ORIGIN]
        del idle[:-MAX_IDLE_PER_ORIGIN]
        if now >= _next_sweep:  # origins posted to no more would keep theirs for ever
            _next_sweep = now + MAX_IDLE_SECONDS
            surplus += _stale(now)
    _close(surplus)


def _stale(now: float) -> list[tuple[float, Connection]]:
    """Take every origin's connections idle too long out of the pool (under _lock)."""
    found: list[tuple[float, Connection]] = []
    for origin, idle in list(_idle.items()):
        fresh = [entry for entry in idle if now - entry[0] < MAX_IDLE_SECONDS]
        found += idle[: len(idle) - len(fresh)]
        if fresh:
            _idle[origin] = fresh
        else:
            del _idle[origin]
    return found


def _close(entries: list[tuple[float, Connection]]) -> None:
    for _, connection in entries:
        connection.close()
