"""One HTTP POST to a channel, through `addresses.connect`, answered as an `Outcome`.

http.client, not a client library: the socket must be the one whose peer address was
checked. gevent patches it in the workers, so a slow receiver holds a greenlet, not
the worker. Errors name what went wrong, never the URL (a Slack URL or a Telegram
bot's path is a secret).
"""

import http.client
import json
import ssl
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from incident_rpc.models import utcnow
from incident_rpc.notify import addresses

MAX_ANSWER = 64 * 1024  # bytes of an answer read (Telegram's says why it refused)


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no answer (refused, timed out, connection failed)
    error: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After (or Telegram's body)
    answer: Any = None  # the answer's JSON, when it is JSON


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, allow_private: bool) -> None:
        super().__init__(host, port, timeout=timeout)
        self.allow_private = allow_private

    def connect(self) -> None:
        self.sock = addresses.connect(self.host, self.port, self.timeout, self.allow_private)


class _TlsConnection(_Connection):
    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool):
    """POST `body` as JSON; never raises for the network's or the receiver's failures."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    kind = _TlsConnection if tls else _Connection
    connection = kind(
        parts.hostname or "", parts.port or (443 if tls else 80), timeout, allow_private
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json", **headers})
        response = connection.getresponse()
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
        connection.close()


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
