"""At most HTTP_CONCURRENCY requests per worker process run at once; the rest wait.

gevent workers accept thousands of connections (they must, for WebSockets) and
would start every request at once. CPU-bound requests then slow each other down
and hold their pooled connections (then also an event-ordering lock) longer and
longer; past the pool's timeout some answer 503 (figures: docs/design/worker-model.md).
So the surplus waits its turn, first come first served, before it touches the
database, as it does for a gthread worker's fixed threads.
WebSocket subscribers (they hold their socket for hours and no database
connection) and the health probes do not count, and a command queued for a group
commit gives its slot up while it waits (`step_aside`): it does no work until its
answer comes back, and the bigger the group, the cheaper each of its commands.

A request takes its slot only once its body is in (http/request_body.py): a slow sender
cannot hold one. The health probe asks `stalled_for` whether the worker is
saturated: every slot taken, and none has changed hands for that long, i.e. even
the youngest request at work has been at it that long."""

import threading
import time
from collections import deque

from flask import Flask, current_app, g, request

_SLOTS = "incident_rpc.admission"
# The live channel (events/websocket.py), and the probes: they must answer even under load.
_UNCOUNTED = {"events.ws", "events.ws_v1", "health.healthz", "health.readyz"}


class Slots:
    """A first-come, first-served semaphore: a freed slot goes to the longest waiter.
    (gevent's own lets a newcomer take a slot before the woken waiter runs, and under
    load some requests then wait for seconds.)"""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: deque[threading.Event] = deque()
        self._lock = threading.Lock()
        self._handed_over = time.monotonic()  # when a slot was last taken or freed

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                self._handed_over = time.monotonic()
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()

    def release(self) -> None:
        with self._lock:
            self._handed_over = time.monotonic()
            if self._waiting:
                self._waiting.popleft().set()  # the slot passes on without being freed
            else:
                self._free += 1

    def stalled_for(self) -> float:
        """Seconds every slot has been taken without any changing hands; 0 while one is free."""
        with self._lock:
            return 0.0 if self._free else time.monotonic() - self._handed_over


def stalled_for() -> float:
    """This worker's `Slots.stalled_for` (0 without admission control)."""
    slots = current_app.extensions.get(_SLOTS)
    return slots.stalled_for() if slots is not None else 0.0


def _admit() -> None:
    if request.endpoint in _UNCOUNTED:
        return
    current_app.extensions[_SLOTS].acquire()
    g.admitted = True


def _leave(_exc: BaseException | None) -> None:
    if g.pop("admitted", False):
        current_app.extensions[_SLOTS].release()


def step_aside() -> None:
    """This request now waits for another to do its work (dispatch/group_commit.py): its
    slot goes to the next request meanwhile, and it takes none back for what remains."""
    _leave(None)


def init_app(app: Flask) -> None:
    limit = app.config["HTTP_CONCURRENCY"]
    if limit <= 0:  # off
        return
    app.extensions[_SLOTS] = Slots(limit)
    app.before_request(_admit)
    app.teardown_request(_leave)
