"""One socket's delivery: ready-made frames, a bounded queue, and who may write when.

The bus's listener hands every subscriber each batch of events. When the socket is
live (its replay is done), idle and has nothing queued, the listener writes the
frames itself, without waiting: an idle socket's kernel buffer takes them at once,
and the socket's own greenlet (or thread) is not even woken. Whatever cannot go
out at once is queued for that greenlet, which writes it with bounded blocking
sends. The queue is bounded: when it would overflow, the subscriber is marked
`overflowed` and gets nothing more, so a slow socket never stalls the listener.
Exactly one party writes at a time: whoever set `_busy`.
"""

import threading
import time
from collections import deque
from typing import Protocol

from incident_rpc.events.journal import Item

Framed = tuple[int, str | None, bytes]  # (event id, the incident's creator, WebSocket frame)
Batch = list[Framed]  # in id order


class Sink(Protocol):
    def send(self, data: bytes) -> int: ...  # all of it, waiting (with a bound) if need be
    def send_nowait(self, data: bytes) -> int: ...  # what went out at once; may be 0


def text_frame(text: str) -> bytes:
    """A final, unmasked, uncompressed text frame (RFC 6455 section 5.2). Valid on any of
    our sockets: events/websocket.py turns compression off, so none has per-socket frame state."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def framed(items: list[Item]) -> Batch:
    """Each message as the frame every socket gets: built once, not once per socket."""
    return [(event_id, creator, text_frame(text)) for event_id, creator, text in items]


class Subscriber:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.owner: str | None = None  # a reporter's name: only its incidents' events
        self.position = 0  # the last event id looked at (sent, or not for this reader)
        self.overflowed = False
        self.going_away = False
        self._sink: Sink | None = None  # set once live: the listener may write directly
        self._queue: deque[Framed] = deque()
        self._partial = b""  # the rest of a frame the listener could only half write
        self._busy = False
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def _wanted(self, event_id: int, creator: str | None) -> bool:
        return event_id > self.position and (self.owner is None or creator == self.owner)

    def offer(self, batch: Batch) -> None:
        """The listener's call: write at once if the socket is idle, else queue."""
        with self._lock:
            if self.overflowed:
                return
            sink = self._sink if not (self._busy or self._queue or self._partial) else None
            if sink is not None:
                self._busy = True
            elif len(self._queue) + len(batch) > self.capacity:
                self.overflowed = True
            else:
                self._queue.extend(batch)
        if sink is None or not self._write_nowait(sink, batch):
            self._ready.set()

    def _write_nowait(self, sink: Sink, batch: Batch) -> bool:
        """Write without waiting; queue what does not fit. True when all went out."""
        for number, (event_id, creator, frame) in enumerate(batch):
            if self._wanted(event_id, creator):
                try:
                    written = sink.send_nowait(frame)
                except OSError:  # a dead socket: its own greenlet will find out and end
                    written = 0
                if written < len(frame):
                    with self._lock:
                        if written:  # the frame is begun: its rest goes out first
                            self._partial, self.position = frame[written:], event_id
                            number += 1
                        self._queue.extend(batch[number:])
                        self._busy = False
                    return False
            self.position = max(self.position, event_id)
        with self._lock:
            self._busy = False
        return True

    def go_live(self, sink: Sink, owner: str | None, position: int) -> None:
        """Replay is done: from here the listener may write to `sink` itself."""
        with self._lock:
            self._sink, self.owner, self.position = sink, owner, position

    def pump(self, timeout: float) -> None:
        """The socket's own greenlet: write what was queued, waiting up to `timeout` for it."""
        self._ready.wait(timeout)
        with self._lock:
            self._ready.clear()
            if self._busy or self._sink is None:
                return  # the listener is writing: it rings again if it leaves anything
            batch, partial = list(self._queue), self._partial
            self._queue.clear()
            self._partial, self._busy = b"", bool(batch or partial)
            sink = self._sink
        try:
            if partial:
                sink.send(partial)
            for event_id, creator, frame in batch:
                if self._wanted(event_id, creator):
                    sink.send(frame)
                self.position = max(self.position, event_id)
        finally:
            with self._lock:
                self._busy = False

    def restart(self) -> None:
        """While replaying: forget the queue and the overflow; the log has it all."""
        with self._lock:
            self._queue.clear()
            self.overflowed = False

    def retire(self) -> bytes:
        """No more writes from the listener; the rest of a half-written frame, if any,
        which must go out before a close frame."""
        while True:
            with self._lock:
                self._sink = None
                if not self._busy:
                    partial, self._partial = self._partial, b""
                    return partial
            time.sleep(0.001)  # the listener is mid-write; it never blocks for long

    def wake(self) -> None:
        self._ready.set()
