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
from typing import Any

from flask import Blueprint, Response, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from incident_rpc.access import keys
from incident_rpc.dispatch import group_commit
from incident_rpc.errors import classify
from incident_rpc.http.responses import POST_ONLY
from incident_rpc.models import Source
from incident_rpc.runtime import jsonio
from incident_rpc.schemas.fields import Text, Timestamp

bp = Blueprint("pagerduty", __name__)
MAX_EVENT = 512 * 1024  # bytes: PagerDuty's limit for one event
SEVERITY = {"critical": "critical", "error": "high", "warning": "medium", "info": "low"}
ACTIONS = {"trigger": "create", "acknowledge": "acknowledge", "resolve": "resolve"}
INVALID = "Event object is invalid"
# The payload's fields that become details.labels (what silences match), by label.
LABELS = {"source": "source", "component": "component", "group": "group", "class": "class_"}


class Payload(Schema):
    class Meta:
        unknown = EXCLUDE

    summary = Text(required=True, blank=False, max_length=1024)
    source = Text(required=True, blank=False, max_length=255)
    severity = fields.String(required=True, validate=validate.OneOf(SEVERITY))
    timestamp = Timestamp()
    component = Text(max_length=255)
    group = Text(max_length=255)
    class_ = Text(data_key="class", max_length=255)
    custom_details = fields.Raw()


class EventV2(Schema):
    class Meta:
        unknown = EXCLUDE  # PagerDuty ignores what it does not know

    routing_key = fields.String(required=True)
    event_action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    dedup_key = Text(blank=False, max_length=255)
    payload = fields.Nested(Payload)
    links = fields.List(fields.Dict())
    images = fields.List(fields.Dict())
    client = Text(max_length=255)
    client_url = Text(max_length=1024)


class EventV1(Schema):
    class Meta:
        unknown = EXCLUDE

    service_key = fields.String(required=True)
    event_type = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    incident_key = Text(blank=False, max_length=255)
    description = Text(blank=False, max_length=1024)
    details = fields.Raw()
    client = Text(max_length=255)
    client_url = Text(max_length=1024)


event_v2_in, event_v1_in = EventV2(), EventV1()


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


def _read(schema: Schema) -> dict[str, Any]:
    body = request.get_data(cache=False)
    if len(body) > MAX_EVENT:
        raise Refused(f"Event object is larger than {MAX_EVENT // 1024} KiB")
    try:
        raw = jsonio.parse(body)
    except Exception as error:  # jsonio's InvalidJSON: not JSON, or not text
        raise Refused("Event object is not valid JSON") from error
    if not isinstance(raw, dict):
        raise Refused("Event object must be a JSON object")
    try:
        return schema.load(raw)
    except ValidationError as error:
        raise Refused(*_reasons(error.messages)) from error


def _v2_command(event: dict[str, Any], key: str) -> dict[str, Any]:
    action = ACTIONS[event["event_action"]]
    if action != "create":
        return {"action": action, "dedup_key": key}
    if "payload" not in event:
        raise Refused("'payload' is missing or blank")
    payload = event["payload"]
    details = {
        "labels": {label: payload[name] for label, name in LABELS.items() if name in payload},
        "pagerduty": {
            "custom_details": payload.get("custom_details"),
            **{name: event[name] for name in ("links", "images", "client", "client_url")
               if name in event},
        },
    }  # fmt: skip
    command = {
        "action": "create",
        "dedup_key": key,
        "title": payload["summary"][:200],
        "description": payload["summary"],
        "severity": SEVERITY[payload["severity"]],
        "source": Source.monitoring.value,
        "details": details,
    }
    if "timestamp" in payload:
        command["date"] = payload["timestamp"].isoformat()
    return command


def _v1_command(event: dict[str, Any], key: str) -> dict[str, Any]:
    action = ACTIONS[event["event_type"]]
    if action != "create":
        return {"action": action, "dedup_key": key}
    if "description" not in event:
        raise Refused("'description' is missing or blank")
    details = {"pagerduty": {name: event[name] for name in ("details", "client", "client_url")
                             if name in event}}  # fmt: skip
    return {
        "action": "create",
        "dedup_key": key,
        "title": event["description"][:200],
        "description": event["description"],
        "source": Source.monitoring.value,
        "details": details,
    }


def _run(command: dict[str, Any], routing_key: str) -> int:
    """The command's status, 404 and 409 (nothing open to act on) taken as done."""
    if not keys.is_key(routing_key):
        raise Refused("Invalid routing key")
    outcome = group_commit.submit(command, routing_key)
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
        event = _read(event_v2_in)
        key = event.get("dedup_key") or uuid.uuid4().hex
        _run(_v2_command(event, key), event["routing_key"])
    except Refused as refusal:
        return _refusal(refusal.errors)
    return _answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})


@bp.route("/generic/2010-04-15/create_event.json", **POST_ONLY)
def create_event() -> Response:
    try:
        event = _read(event_v1_in)
        key = event.get("incident_key") or uuid.uuid4().hex
        _run(_v1_command(event, key), event["service_key"])
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
