"""Request bodies are read whole, within BODY_TIMEOUT, before a request takes a slot.

Admission (runtime/admission.py) gives a worker's few slots to requests that are ready to
work. A body still on its way is not: a few connections that announce a large body
and send a byte now and then would hold every slot, and every command of the worker
would time out. So the body is read here first, under a deadline for the whole of it
(a slow client: 408), and never past MAX_CONTENT_LENGTH (413, chunked bodies
too). A refused body is read to its end and thrown away first, as long as it is
at most MAX_DRAIN bytes and the deadline allows: a client sends its whole body
before it reads the answer, and closing a socket with bytes still unread makes
the kernel reset the connection, so the client would see "connection reset"
instead of the 413. What passes is handed on in memory, with its true length,
and the app reads it as any other body.

Under gevent the deadline covers the whole body (a gevent timeout); under other
workers it bounds each read from the socket.
"""

import io
import socket
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request

from incident_rpc.errors import BadRequest, PayloadTooLarge, RequestTimeout

MAX_DRAIN = 64 * 1024 * 1024  # bytes of a refused body read (and dropped) before answering
_PIECE = 1024 * 1024  # bytes asked for per read while draining


def _has_body(environ: dict[str, Any]) -> bool:
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or environ.get("CONTENT_LENGTH", "") not in ("", "0")


def _declared_length(environ: dict[str, Any]) -> int | None:
    try:  # gunicorn has refused a malformed one already
        return int(environ["CONTENT_LENGTH"])
    except (KeyError, ValueError):
        return None


def _gevent_timeout() -> Callable[[float], Any] | None:
    """gevent's Timeout when this worker runs on gevent, else None."""
    try:
        from gevent import Timeout, monkey
    except ImportError:  # pragma: no cover  (gevent is in requirements.txt)
        return None
    if not monkey.is_module_patched("socket"):
        return None
    # TimeoutError is an Exception: gunicorn then marks the body as failed and does
    # not read a next request from a connection whose position it no longer knows.
    return lambda seconds: Timeout(seconds, TimeoutError)


class Reader:
    """Reads a body from `source` until `deadline` (time.monotonic()) at the latest."""

    def __init__(self, environ: dict[str, Any], deadline: float) -> None:
        self.source = environ["wsgi.input"]
        self.socket: socket.socket | None = environ.get("gunicorn.socket")
        self.deadline = deadline
        self.timeout = _gevent_timeout()

    def read(self, size: int) -> bytes:
        """Up to `size` bytes (fewer only at the end); TimeoutError past the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError()
        if self.timeout is not None:
            with self.timeout(remaining):
                return self.source.read(size)
        if self.socket is None:  # not gunicorn (a test client): nothing to wait for
            return self.source.read(size)
        before = self.socket.gettimeout()
        self.socket.settimeout(remaining)
        try:
            return self.source.read(size)
        finally:
            self.socket.settimeout(before)

    def drain(self, most: int) -> None:
        """Read and drop the rest of the body, up to `most` bytes and the deadline."""
        dropped = 0
        try:
            while dropped < most:
                piece = self.read(min(_PIECE, most - dropped))
                if not piece:
                    return
                dropped += len(piece)
        except Exception:  # the deadline, the client gone, a malformed chunk: done
            return


def _read_body() -> None:
    environ = request.environ
    if not _has_body(environ):
        return
    config = current_app.config
    limit, seconds = config["MAX_CONTENT_LENGTH"], config["BODY_TIMEOUT"]
    reader = Reader(environ, time.monotonic() + seconds)
    declared = _declared_length(environ)
    if declared is not None and declared > limit:
        if declared <= MAX_DRAIN:
            reader.drain(declared)
        raise PayloadTooLarge()
    try:
        body = reader.read(limit + 1)
    except TimeoutError as error:
        raise RequestTimeout(f"the request body did not arrive within {seconds:g} s") from error
    except OSError as error:  # the client went away in the middle
        raise BadRequest("the request body ended early") from error
    except Exception as error:  # gunicorn's parser: a malformed chunked body
        raise BadRequest("the chunked request body is malformed") from error
    if len(body) > limit:  # chunked: no length was announced
        reader.drain(MAX_DRAIN)
        raise PayloadTooLarge()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def init_app(app: Flask) -> None:
    """Call before admission.init_app: this hook must run before the one taking a slot."""
    app.before_request(_read_body)
