"""PagerDuty's events (Events API v2, and the older generic v1), read straight into the
values of the native command each one becomes.

A trigger becomes `create`, an acknowledge or a resolve the action of that name by
`dedup_key` (http/pagerduty.py). One load checks an event as PagerDuty does and as
`create` would (the same lengths, no NUL at any depth), in the event's own field
names, so that an error names what its sender sent, and the native schema does not
read the command again. The severity mapping is in docs/protocol.md, section 16.
"""

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, post_load, validate

from incident_rpc.models import Source
from incident_rpc.schemas.fields import Anything, Document, Text, Timestamp

SEVERITY = {"critical": "critical", "error": "high", "warning": "medium", "info": "low"}
# The payload's fields that become details.labels (what silences match), by label.
LABELS = {"source": "source", "component": "component", "group": "group", "class": "class_"}
TITLE = 200  # characters of the summary that make the title (create's limit)


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
    custom_details = Anything()


class _Event(Schema):
    class Meta:
        unknown = EXCLUDE  # PagerDuty ignores what it does not know

    client = Text(max_length=255)
    client_url = Text(max_length=1024)


class _EventV2(_Event):
    dedup_key = Text(required=True, blank=False, max_length=255)
    payload = fields.Nested(Payload)
    links = fields.List(Document())
    images = fields.List(Document())


class TriggerV2(_EventV2):
    payload = fields.Nested(Payload, required=True)

    @post_load
    def to_create(self, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        payload = event["payload"]
        pagerduty = {"custom_details": payload.get("custom_details")}
        pagerduty.update(_present(event, "links", "images", "client", "client_url"))
        labels = {label: payload[name] for label, name in LABELS.items() if name in payload}
        details = {"labels": labels, "pagerduty": pagerduty}
        values = _create(event["dedup_key"], payload["summary"], details)
        values["severity"] = SEVERITY[payload["severity"]]
        if "timestamp" in payload:
            values["created_at"] = payload["timestamp"]
        return values


class TargetV2(_EventV2):
    @post_load
    def to_target(self, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"dedup_key": event["dedup_key"]}


class _EventV1(_Event):
    incident_key = Text(required=True, blank=False, max_length=255)
    description = Text(blank=False, max_length=1024)
    details = Anything()


class TriggerV1(_EventV1):
    description = Text(required=True, blank=False, max_length=1024)

    @post_load
    def to_create(self, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        pagerduty = _present(event, "details", "client", "client_url")
        return _create(event["incident_key"], event["description"], {"pagerduty": pagerduty})


class TargetV1(_EventV1):
    @post_load
    def to_target(self, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {"dedup_key": event["incident_key"]}


def _present(event: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: event[name] for name in names if name in event}


def _create(dedup_key: str, summary: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"dedup_key": dedup_key, "title": summary[:TITLE], "description": summary,
            "source": Source.monitoring.value, "details": details}  # fmt: skip
