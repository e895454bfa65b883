"""PagerDuty's Events API (v2, and the older generic v1) as a source of incidents.

Tools that page through PagerDuty (Grafana, Zabbix, Datadog, Prometheus's
PagerDuty receiver, PagerDuty's client libraries) can send to us unchanged:
`routing_key` (v1: `service_key`) is one of our API keys, and each event becomes
one ordinary command, dispatched as a single command posted to /rpc is
(`group_commit.submit`: a trigger is a `create`, so triggers that arrive together
share a commit, as creates do):

- trigger: `create` with the event's `dedup_key` (one is made when it has none),
  so that a repeat counts an occurrence of the open incident;
- acknowledge, resolve: `acknowledge` or `resolve` by that `dedup_key`.

Answers are PagerDuty's, word for word where PagerDuty documents them: 202
"Event processed" with the dedup_key (v1: 200 with `incident_key`), also when an
acknowledge or resolve finds no open incident to act on (PagerDuty accepts and
drops those); 400 "invalid event" with the reasons for a malformed event or a key
that is not one of ours; 429 and 5xx (which its clients retry) as they come.
The severity mapping is in docs/protocol.md, section 16.
"""

import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import Blueprint, Response, request
from marshmallow import Schema

from incident_rpc.access import keys
from incident_rpc.dispatch import group_commit
from incident_rpc.dispatch.dialects import Dialect
from incident_rpc.errors import classify
from incident_rpc.http.responses import POST_ONLY
from incident_rpc.runtime import jsonio
from incident_rpc.schemas import pagerduty as schemas

bp = Blueprint("pagerduty", __name__)
MAX_EVENT = 512 * 1024  # bytes: PagerDuty's limit for one event
ACTIONS = {"trigger": "create", "acknowledge": "acknowledge", "resolve": "resolve"}
INVALID = "Event object is invalid"


@dataclass(frozen=True)
class Version:
    """One version of the events API: its field names and its dialect, whose schemas
    read an event straight into its command's values (schemas/pagerduty.py)."""

    dialect: Dialect
    key: str  # the field that holds the routing key (one of our API keys)
    action: str  # the field that says trigger, acknowledge or resolve
    dedup: str  # the field that holds the dedup key


def _dialect(name: str, trigger: Schema, target: Schema) -> Dialect:
    return Dialect(name, schemas={"create": trigger, "acknowledge": target, "resolve": target})


V2 = Version(_dialect("pagerduty", schemas.TriggerV2(), schemas.TargetV2()),
             key="routing_key", action="event_action", dedup="dedup_key")  # fmt: skip
V1 = Version(_dialect("pagerduty-v1", schemas.TriggerV1(), schemas.TargetV1()),
             key="service_key", action="event_type", dedup="incident_key")  # fmt: skip


class Refused(Exception):
    """An event PagerDuty would refuse: 400 "invalid event" with these reasons."""

    def __init__(self, *errors: str) -> None:
        super().__init__(errors[0])
        self.errors = list(errors)


def _reasons(messages: Any, path: str = "") -> list[str]:
    """marshmallow's error tree in PagerDuty's words: "'payload.summary' is missing"."""
    if isinstance(messages, dict):
        return [r for key, value in messages.items()
                for r in _reasons(value, f"{path}.{key}" if path else str(key))]  # fmt: skip
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        missing = any("Missing data" in m or "empty" in m for m in messages)
        return [
            f"'{path}' is missing or blank" if missing else f"'{path}' is invalid: {messages[0]}"
        ]
    return [r for item in messages for r in _reasons(item, path)]


def _read() -> dict[str, Any]:
    body = request.get_data(cache=False)
    if len(body) > MAX_EVENT:
        raise Refused(f"Event object is larger than {MAX_EVENT // 1024} KiB")
    try:
        event = jsonio.parse(body)
    except Exception as error:  # jsonio's InvalidJSON: not JSON, or not text
        raise Refused("Event object is not valid JSON") from error
    if not isinstance(event, dict):
        raise Refused("Event object must be a JSON object")
    return event


def _dispatch(version: Version) -> str:
    """Run the posted event as its command; its dedup key (made when it has none)."""
    event = _read()
    for name in (version.key, version.action):
        if event.get(name) in (None, ""):
            raise Refused(f"'{name}' is missing or blank")
    action = event[version.action]
    if not isinstance(action, str) or action not in ACTIONS:
        raise Refused(f"'{version.action}' is invalid: Must be one of: {', '.join(ACTIONS)}.")
    schema = version.dialect.schemas[ACTIONS[action]]
    # Only the fields its schema reads: no `token`, `action` or `request_id` of ours.
    command = {key: event[key] for key in _keys(schema) if key in event}
    command.setdefault(version.dedup, uuid.uuid4().hex)
    command["action"] = ACTIONS[action]
    _run(command, event[version.key], version.dialect)
    return command[version.dedup]


@cache  # the dialects' few schemas, made at import: read once, not per event
def _keys(schema: Schema) -> list[str]:
    return [field.data_key or name for name, field in schema.load_fields.items()]


def _run(command: dict[str, Any], routing_key: Any, dialect: Dialect) -> int:
    """The command's status, 404 and 409 (nothing open to act on) taken as done."""
    if not isinstance(routing_key, str) or not keys.is_key(routing_key):
        raise Refused("Invalid routing key")
    outcome = group_commit.submit(command, routing_key, dialect)
    status = outcome["status"]
    if status < 400 or status in (404, 409):
        return status
    if status == 401:
        raise Refused("Invalid routing key")
    if status == 403:
        raise Refused(f"this routing key may not {command['action']} (it needs a monitor key)")
    if status in (400, 413):
        raise Refused(*_reasons(outcome["data"].get("errors") or outcome["error"]))
    raise _Failed(status, outcome["error"])


class _Failed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _answer(status: int, body: dict[str, Any]) -> Response:
    return Response(jsonio.encode(body), status=status, mimetype="application/json")


def _refusal(errors: list[str]) -> Response:
    return _answer(400, {"status": "invalid event", "message": INVALID, "errors": errors})


@bp.route("/v2/enqueue", **POST_ONLY)
def enqueue() -> Response:
    try:
        key = _dispatch(V2)
    except Refused as refusal:
        return _refusal(refusal.errors)
    return _answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})


@bp.route("/generic/2010-04-15/create_event.json", **POST_ONLY)
def create_event() -> Response:
    try:
        key = _dispatch(V1)
    except Refused as refusal:
        return _refusal(refusal.errors)
    return _answer(200, {"status": "success", "message": "Event processed", "incident_key": key})


@bp.errorhandler(_Failed)
def failed(error: _Failed) -> Response:
    if error.status == 429:
        sentence = "Requests for this service are arriving too quickly. Please retry later."
        return _answer(429, {"status": "throttle event", "message": sentence})
    return _answer(error.status, {"status": "error", "message": str(error)})


@bp.errorhandler(Exception)
def before_the_event(exc: Exception) -> Response:
    """Failures before an event is read (a body too large or too slow, a wrong
    method), in PagerDuty's shape: a 4xx is the event's fault, a 5xx is retried."""
    error = classify(exc)
    if error.status < 500:
        return _refusal([error.message])
    return _answer(error.status, {"status": "error", "message": error.message})
