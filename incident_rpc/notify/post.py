"""One HTTP POST to a channel, on a kept connection or a new one, answered as an `Outcome`.

http.client, not a client library: the socket must be the one whose peer address was
checked (connections.py opens every one through `addresses.connect`). It runs in the
sender's process, each attempt on a thread of its own. Errors name what went wrong,
never the URL (a Slack URL or a Telegram bot's path is a secret).
"""

import http.client
import json
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from incident_rpc.models import utcnow
from incident_rpc.notify import addresses, connections

MAX_ANSWER = 64 * 1024  # bytes of an answer read (Telegram's says why it refused)


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no answer (refused, timed out, connection failed)
    error: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After (or Telegram's body)
    answer: Any = None  # the answer's JSON, when it is JSON


# How a reused connection fails when the receiver closed it while it was idle (http.client's
# RemoteDisconnected is a ConnectionResetError): posted again, once, on a new connection.
# Never after a timeout (the receiver may have the request) nor for a new connection
# (the caller's retry schedule is for that).
CLOSED_WHILE_IDLE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool
) -> Outcome:
    """POST `body` as JSON; never raises for the network's or the receiver's failures."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    origin = connections.Origin(parts.scheme, parts.hostname or "", port, allow_private)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", **headers}
    connection, reused = connections.take(origin, timeout)
    response = None
    try:
        try:
            response = _send(connection, path, body, headers)
        except CLOSED_WHILE_IDLE:
            if not reused:
                raise
            connection.close()
            connection = connections.Connection(origin, timeout)
            response = _send(connection, path, body, headers)
        raw = response.read(MAX_ANSWER)
        return Outcome(
            response.status,
            None if response.status < 300 else f"HTTP {response.status}",
            retry_after(response.getheader("Retry-After")),
            _json(raw),
        )
    except addresses.Refused as refusal:
        return Outcome(None, f"refused: {refusal}")
    except TimeoutError:
        return Outcome(None, f"timed out after {timeout:g} s")
    except OSError as error:  # refused, reset, unreachable: the receiver's name stays out
        return Outcome(None, f"{type(error).__name__}: {error.strerror or 'no answer'}")
    except http.client.HTTPException as error:  # not HTTP at all
        return Outcome(None, type(error).__name__)
    finally:
        connections.release(connection, response)


def _send(
    connection: connections.Connection, path: str, body: bytes, headers: dict[str, str]
) -> http.client.HTTPResponse:
    connection.request("POST", path, body, headers)
    return connection.getresponse()


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
