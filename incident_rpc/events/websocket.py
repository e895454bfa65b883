"""The change-event channel, `/ws` and `/api/v1/ws` (contract section 6).

A connection authenticates (query `token=`, or a first `{"token": ...}` message;
anything wrong gets no events and a 1008 close), joins this process's bus, says
`{"type": "subscribed", "position": N}`, replays the log after N from the database,
then sends live events, skipping ids it has already looked at. N is `since`, or else
the last event final before the handshake's 101 went out: what commits once the
client is connected reaches it, however late its token comes. Joining before
replaying leaves no gap; skipping by id leaves no duplicate. A reporter gets only
the events of incidents it created (access/policy.py), and the token is checked again
every EVENTS_REAUTH_INTERVAL seconds.
A subscriber whose queue overflows is closed with 1013 and told where to resume;
a stopping worker closes with 1001 the same way.

The channel only sends: what a client sends after its first message is read and
thrown away (simple-websocket's reader would keep every message for a `receive`
that never comes, without bound). A client that keeps sending is closed with
1008; the reader then goes on reading (and dropping) for a moment, so that the
client still reads the close frame instead of a connection reset.
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, g, request
from simple_websocket import ConnectionClosed, Server

from incident_rpc.access import policy
from incident_rpc.access.auth import authenticate
from incident_rpc.errors import InvalidJSON, classify
from incident_rpc.events import fanout, journal
from incident_rpc.events.subscriber import Subscriber, text_frame
from incident_rpc.extensions import db, sock
from incident_rpc.runtime import jsonio

log = logging.getLogger("incident_rpc")
bp = Blueprint("events", __name__)
GOING_AWAY, POLICY_VIOLATION, INTERNAL_ERROR, TRY_AGAIN_LATER = 1001, 1008, 1011, 1013
MAX_EVENT_ID = 2**63 - 1
CLOSE_HANDSHAKE_WAIT = 2.0  # seconds for the peer to answer our close frame
# Messages a client may send after the first, as a burst and then per second (a
# client that sends its token again, or a keep-alive of its own, stays well below).
IGNORED_BURST, IGNORED_PER_SECOND = 16, 1.0


class Refusal(Exception):
    """End the connection with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class InputGuard:
    """Stands in for simple-websocket's input buffer once the first message is read:
    drops every message, and calls `on_flood` once when they come faster than
    IGNORED_PER_SECOND after a burst of IGNORED_BURST (a token bucket)."""

    def __init__(self) -> None:
        self.flooded = False
        self.on_flood: Callable[[], None] | None = None
        self._allowance = float(IGNORED_BURST)
        self._counted = time.monotonic()

    def append(self, _message: Any) -> None:  # the reader thread's call
        now = time.monotonic()
        earned = (now - self._counted) * IGNORED_PER_SECOND
        self._allowance = min(float(IGNORED_BURST), self._allowance + earned) - 1
        self._counted = now
        if self._allowance < 0 and not self.flooded:
            self.flooded = True
            if self.on_flood:
                self.on_flood()

    def __bool__(self) -> bool:  # nothing to `receive`
        return False


class SharedSocket:
    """The TCP socket under a WebSocket, shared by our sender and the library's reader.

    simple-websocket writes with a bare `send()` from two threads (ours, and its
    reader's pings and replies); a bare send may write part of a frame. Here every
    write is whole and one at a time, and bounded by a timeout: a peer that takes
    nothing for that long is dead. `on_close` runs when the reader lets go.
    """

    def __init__(self, raw: socket.socket, timeout: float) -> None:
        self._raw = raw
        self._lock = threading.Lock()
        self.on_close: Callable[[], None] | None = None
        self.released = threading.Event()  # the reader thread has let go
        self.linger = 0.0  # seconds to read (and drop) before closing, once we sent a close
        raw.settimeout(timeout)

    def send(self, data: bytes) -> int:
        with self._lock:
            self._raw.sendall(data)
        return len(data)

    def send_nowait(self, data: bytes) -> int:
        """What the kernel takes at once (the bus's listener must never wait on us).
        The descriptor is non-blocking under gevent, and under threads once a timeout
        is set, so a plain write returns at once."""
        if not self._lock.acquire(blocking=False):
            return 0  # a ping or another frame is going out: queue instead
        try:
            return os.write(self._raw.fileno(), data)
        except BlockingIOError:
            return 0
        finally:
            self._lock.release()

    def close(self) -> None:
        """The reader thread's last call. After our close frame, read what the peer still
        sends until it closes too (or `linger` is over): closing with bytes unread would
        reset the connection, and the peer would lose the close frame."""
        if self.linger:
            self._drain(time.monotonic() + self.linger)
        self._raw.close()
        self.released.set()
        if self.on_close:
            self.on_close()

    def _drain(self, deadline: float) -> None:
        try:
            self._raw.shutdown(socket.SHUT_WR)
            while (remaining := deadline - time.monotonic()) > 0:
                self._raw.settimeout(remaining)
                if not self._raw.recv(65536):
                    return
        except OSError:  # reset, timed out, or hung up by `hang_up`
            return

    def hang_up(self) -> None:
        """Wake the reader thread (its recv sees EOF) so that it ends now."""
        try:
            self._raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@bp.before_request
def without_compression() -> None:
    """Refuse permessage-deflate (by not seeing the offer): compressing the same small
    message once per socket costs more CPU than it saves bytes, and without it every
    socket can take the same ready-made frame."""
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


@bp.before_request
def start_position() -> None:
    """Where a socket without `since` starts, taken before flask-sock sends the 101: a
    client may act the moment its handshake returns, before its token has even been
    read, and what commits then must reach it. Taken for every socket (one indexed
    read): a first message may still bring or unset `since`."""
    try:
        with fanout.bus().engine.connect() as connection:
            g.events_start = journal.last_event_id(connection)
    except Exception as error:  # told after the handshake, like any other refusal
        g.events_start = _refusal(error)


def _event_id(value: Any) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_EVENT_ID:
        raise Refusal(POLICY_VIOLATION, "since must be an event id (an integer >= 0)")
    return value


def _credentials(ws: Server) -> tuple[Any, Any]:
    """(token, since) from the query, or else from a first JSON message."""
    token, since = request.args.get("token"), request.args.get("since")
    if token is None:
        first = ws.receive(timeout=current_app.config["EVENTS_AUTH_TIMEOUT"])
        try:  # by the rules of every other body: what gets past them can be used
            hello = jsonio.parse(first) if first is not None else {}
        except InvalidJSON:
            hello = None
        if not isinstance(hello, dict):
            raise Refusal(POLICY_VIOLATION, 'the first message must be {"token": "..."}')
        token, since = hello.get("token"), hello.get("since", since)
    return token, since


def _reader(token: Any) -> str | None:
    """Check the token (again); whose incidents alone it may read (None: every one)."""
    try:
        return policy.confined_to(authenticate(token))
    except Exception as error:
        raise _refusal(error) from error
    finally:
        db.session.remove()  # hold no connection (nor SQLite's write lock) while streaming


def _refusal(error: Exception) -> Refusal:
    failure = classify(error)
    code = POLICY_VIOLATION if failure.status == 401 else TRY_AGAIN_LATER
    return Refusal(code, failure.message)


def _replay(
    ws: Server, shared: SharedSocket, subscriber: Subscriber, position: int, owner: str | None
) -> int:
    """Send the log after `position` until caught up; the position reached."""
    bus = fanout.bus()
    while True:
        with bus.engine.connect() as connection:
            page, _ = journal.read_after(connection, position, fanout.PAGE)
        if not ws.connected:
            raise ConnectionClosed(ws.close_reason, ws.close_message)
        for event_id, creator, text in page:
            if owner is None or creator == owner:
                shared.send(text_frame(text))
            position = event_id
        if subscriber.overflowed:  # the live queue filled meanwhile: the log has it all
            subscriber.restart()
        elif len(page) < fanout.PAGE:
            return position


def _stream(ws: Server, subscriber: Subscriber, guard: InputGuard, token: Any) -> None:
    """Live events until the socket ends; the token is checked again now and then."""
    config = current_app.config
    checked = time.monotonic()
    while ws.connected:
        if guard.flooded:  # (also before it could wake us)
            raise Refusal(POLICY_VIOLATION, "this channel takes no messages; stop sending them")
        wait = checked + config["EVENTS_REAUTH_INTERVAL"] - time.monotonic()
        subscriber.pump(timeout=max(0.0, min(config["EVENTS_PING_INTERVAL"], wait)))
        resume = f"resume with since={subscriber.position}"
        if subscriber.overflowed:
            log.info("subscriber dropped: too slow for its queue, at event %d", subscriber.position)
            raise Refusal(TRY_AGAIN_LATER, f"too slow, events dropped; {resume}")
        if subscriber.going_away:
            raise Refusal(GOING_AWAY, f"server restarting; {resume}")
        if wait <= 0:  # logged out, disabled, revoked or expired since: no more events
            subscriber.owner, checked = _reader(token), time.monotonic()


def _serve(ws: Server, shared: SharedSocket) -> None:
    token, since = _credentials(ws)
    guard = ws.input_buffer = InputGuard()  # from here on, nothing a client sends is kept
    owner = _reader(token)
    since = None if since is None else _event_id(since)
    bus = fanout.bus()
    try:
        subscriber = bus.subscribe(timeout=current_app.config["DB_CONNECT_TIMEOUT"] * 2)
    except TimeoutError as error:
        raise Refusal(TRY_AGAIN_LATER, "the database is unavailable; retry later") from error
    shared.on_close = guard.on_flood = subscriber.wake
    try:
        if since is None:  # live only: from what was committed before the 101
            since = g.events_start
            if isinstance(since, Refusal):
                raise since
        shared.send(text_frame(json.dumps({"type": "subscribed", "position": since})))
        position = _replay(ws, shared, subscriber, since, owner)
        subscriber.go_live(shared, owner, position)
        _stream(ws, subscriber, guard, token)
    finally:
        rest = subscriber.retire()
        bus.unsubscribe(subscriber)
        if rest:  # a frame the listener began: finish it before any close frame
            shared.send(rest)


def serve(ws: Server) -> None:
    """One subscriber, from handshake to close; never lets an exception reach Flask."""
    shared = SharedSocket(ws.sock, current_app.config["EVENTS_SEND_TIMEOUT"])
    ws.sock = shared
    try:
        _serve(ws, shared)
    except Refusal as refusal:
        _close(ws, shared, refusal.code, refusal.reason)
    except (ConnectionClosed, OSError):
        pass  # the peer went away or stopped reading: nothing more to say to it
    except Exception:
        log.exception("event stream failed")
        _close(ws, shared, INTERNAL_ERROR, "internal error")
    finally:
        shared.hang_up()


def _close(ws: Server, shared: SharedSocket, code: int, reason: str) -> None:
    """Send a close frame and give the peer a moment to answer it (a clean handshake)."""
    shared.linger = CLOSE_HANDSHAKE_WAIT
    try:
        ws.close(reason=code, message=reason[:120])
    except (ConnectionClosed, OSError):
        return
    shared.released.wait(CLOSE_HANDSHAKE_WAIT)


sock.route("/ws", bp=bp, endpoint="ws", strict_slashes=False)(serve)
sock.route("/api/v1/ws", bp=bp, endpoint="ws_v1", strict_slashes=False)(serve)
