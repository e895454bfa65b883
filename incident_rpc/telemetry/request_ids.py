"""Every request's id, and what the log lines and metrics about it say.

The id is the caller's `X-Request-Id` when it is sane (1 to 64 characters of
letters, digits and `-_.:`; anything else could forge log lines or fill them), else
one made here. It lives in a `RequestRecord` on `flask.g` with what the layers learn
as the request runs: its dialect and action (the route adapters), its actor (the
dispatcher, after authentication), its status and duration (at the end). The log
filter (logs.py) and the request counter (metrics.py) read it from there.

Under group commit a command may run in another request's greenlet (dispatch/group_commit.py):
`note` keeps the first value it is given, so a request names its own action and
actor, never a neighbour's.
"""

import re
import time
import uuid
from dataclasses import dataclass, field

from flask import g, has_request_context, request

HEADER = "X-Request-Id"
SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# The blueprint that served a request -> its dialect (the others: "other").
DIALECTS = {"endpoint": "native", "legacy": "legacy", "alertmanager": "alertmanager",
            "pagerduty": "pagerduty", "events": "websocket"}  # fmt: skip


@dataclass
class RequestRecord:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    dialect: str | None = None
    action: str | None = None
    actor: str | None = None
    status: int | None = None
    duration: float | None = None


def take_or_make(sent: str | None) -> str:
    """The caller's id if it is sane, else a new one."""
    if sent is not None and SANE.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def open_record(sent: str | None) -> RequestRecord:
    g.telemetry = RequestRecord(take_or_make(sent))
    return g.telemetry


def current() -> RequestRecord | None:
    """This request's record; None outside a request (start-up, the listener thread)."""
    if not has_request_context():
        return None
    return g.get("telemetry")


def current_id() -> str | None:
    record = current()
    return record.request_id if record else None


def note(
    *, dialect: str | None = None, action: str | None = None, actor: str | None = None
) -> None:
    """What a layer learnt about this request; the first value of each stands."""
    record = current()
    if record is None:
        return
    record.dialect = record.dialect or dialect
    record.action = record.action or action
    record.actor = record.actor or actor


def route_of(record: RequestRecord) -> tuple[str, str]:
    """(dialect, action) for the metrics' labels: from what was noted, else the route.

    The legacy dialect names its action in the URL (/incidents/<name>/)."""
    dialect = record.dialect or DIALECTS.get(request.blueprint or "", "other")
    action = record.action
    if action is None and dialect == "legacy":
        action = (request.view_args or {}).get("name")
    if action is None and dialect == "websocket":
        action = "events"  # a socket's whole life: kept apart from the probes' "none"
    return dialect, action or "none"
