"""Loopback HTTP receivers for the notification tests: a webhook endpoint, a fake Bot API.

Each is a small threaded http.server on 127.0.0.1 that records every request (with
when it came) and answers what the test's `answer` function says, so a test can fail
the first tries, time out, answer 429 or 410, or hold a request until it says so.
By default each connection carries one request (HTTP/1.0); with `keep_alive` it stays
open for more (HTTP/1.1), until `idle_timeout` seconds pass without one. Each request
records its peer (the client's address and port: one per connection), and `closed`
the peers whose connections the receiver has closed.
"""

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    peer: tuple[str, int] = ("", 0)  # the client's address and port: its connection

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0  # seconds before answering (longer than the sender's timeout: a timeout)
    hold: threading.Event | None = None  # answer only once this is set


Answering = Callable[["Receiver", Received], Answer]


def ok(receiver: "Receiver", request: Received) -> Answer:
    return Answer(200, body={"ok": True})


class Receiver:
    """A loopback HTTP server that records POSTs and answers with `answer(self, request)`."""

    def __init__(
        self,
        answer: Answering = ok,
        port: int = 0,
        *,
        keep_alive: bool = False,
        idle_timeout: float | None = None,
    ) -> None:
        self.answer = answer
        self.keep_alive = keep_alive
        self.received: list[Received] = []
        self.closed: list[tuple[str, int]] = []  # peers, as the receiver closed them
        self._open: dict[socket.socket, tuple[str, int]] = {}
        self.lock = threading.Condition()
        self.released = threading.Event()  # set at stop: every held request is answered
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            timeout = idle_timeout  # the socket's: waiting longer for a request ends it

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length), time.monotonic(), self.client_address[:2],
                )  # fmt: skip
                with receiver.lock:
                    receiver.received.append(request)
                    receiver.lock.notify_all()
                reply = receiver.answer(receiver, request)
                if reply.hold is not None:
                    while not (reply.hold.wait(0.1) or receiver.released.is_set()):
                        pass
                if reply.delay:
                    receiver.released.wait(reply.delay)
                body = json.dumps(reply.body if reply.body is not None else {}).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the sender gave up (timed out, or its worker was killed)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 drops connections that come at once
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                with receiver.lock:
                    receiver._open[request] = client_address[:2]
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                with receiver.lock:
                    receiver.closed.append(receiver._open.pop(request))
                    receiver.lock.notify_all()

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        if self.keep_alive:  # connections waiting for a next request end now
            with self.lock:
                waiting = list(self._open)
            for connection in waiting:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed
        self.server.server_close()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 30) -> list:
        """The requests so far, once `done(requests)` holds; AssertionError after `timeout`."""
        with self.lock:
            if not self.lock.wait_for(lambda: done(self.received), timeout):
                got = len(self.received)
                raise AssertionError(f"not done after {timeout} s: {got} received")
            return list(self.received)

    def wait_closed(self, peer: tuple[str, int], timeout: float = 30) -> None:
        """Once the receiver has closed the connection from `peer`."""
        with self.lock:
            if not self.lock.wait_for(lambda: peer in self.closed, timeout):
                raise AssertionError(f"{peer} still open after {timeout} s")

    def count(self, path_part: str = "") -> int:
        with self.lock:
            return sum(1 for r in self.received if path_part in r.path)


def eventually(check: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """The first truthy result of `check()`, polled; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result!r} after {timeout} s")
        time.sleep(interval)
