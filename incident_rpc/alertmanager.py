"""Prometheus Alertmanager's webhook (payload version 4) as a source of incidents.

Each alert in a notification becomes one ordinary command through `rpc.execute`:
a firing alert is a `create` with dedup_key "alertmanager:<fingerprint>" (so a
repeat counts an occurrence of the open incident), a resolved alert a
`resolve_many` of the open incident with that key. The caller needs the agent
role, since it resolves. Alertmanager retries a notification that got a 5xx, so
the answer is a 5xx when any alert could not be stored, else 200 with each
alert's own envelope.
"""

from typing import Any

from flask import Blueprint, Response
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from .auth import authenticate
from .errors import Forbidden, InvalidParams, envelope
from .fields import Text, Timestamp
from .models import Severity, Source, Status
from .rpc import POST_ONLY, Batch, bearer_token, execute, read_json, respond

bp = Blueprint("alertmanager", __name__)
OPEN = [Status.new.value, Status.processing.value, Status.unknown.value]
SEVERITIES = {severity.value for severity in Severity}


def _labels() -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class Alert(Schema):
    class Meta:
        unknown = EXCLUDE  # Alertmanager adds fields over time; we read what we know

    status = fields.String(required=True, validate=validate.OneOf(["firing", "resolved"]))
    labels = _labels()
    annotations = _labels()
    starts_at = Timestamp(data_key="startsAt")
    ends_at = Timestamp(data_key="endsAt")
    generator_url = fields.String(data_key="generatorURL", load_default="")
    fingerprint = Text(required=True, blank=False, max_length=200)


class Notification(Schema):
    class Meta:
        unknown = EXCLUDE

    version = fields.String(required=True, validate=validate.Equal("4"))
    receiver = fields.String(load_default="")
    external_url = fields.String(data_key="externalURL", load_default="")
    alerts = fields.List(fields.Nested(Alert), required=True, validate=validate.Length(max=1000))


notification_in = Notification()


def _command(alert: dict[str, Any], notification: dict[str, Any]) -> dict[str, Any]:
    key = f"alertmanager:{alert['fingerprint']}"
    if alert["status"] == "resolved":
        return {
            "action": "resolve_many",
            "filter": {"dedup_key": key, "status": OPEN},
            "resolution": "resolved in Alertmanager",
        }
    labels, annotations = alert["labels"], alert["annotations"]
    name = labels.get("alertname") or f"alert {alert['fingerprint']}"
    summary = annotations.get("summary", "").strip()
    command = {
        "action": "create",
        "dedup_key": key,
        "title": (summary or name)[:200],
        "description": (annotations.get("description", "").strip() or summary or name)[:10000],
        "source": Source.monitoring.value,
        "details": {
            "labels": labels,
            "annotations": annotations,
            "fingerprint": alert["fingerprint"],
            "generatorURL": alert["generator_url"],
            "receiver": notification["receiver"],
            "externalURL": notification["external_url"],
        },
    }
    if labels.get("severity") in SEVERITIES:
        command["severity"] = labels["severity"]
    if "starts_at" in alert:
        command["date"] = alert["starts_at"].isoformat()
    return command


@bp.route("/integrations/alertmanager", **POST_ONLY)
def webhook() -> Response:
    token = bearer_token()
    caller = authenticate(token)
    if not caller.has_role("agent"):
        raise Forbidden("the Alertmanager integration needs the agent role: it resolves")
    try:
        notification = notification_in.load(read_json())
    except ValidationError as error:
        raise InvalidParams(error.messages) from error  # type: ignore[arg-type]
    batch = Batch(callers={token: caller} if token else {})  # one transaction per alert
    results = []
    for alert in notification["alerts"]:
        outcome = execute(_command(alert, notification), None, token, batch)
        results.append({"fingerprint": alert["fingerprint"], "result": outcome})
    failed = [r["result"]["status"] for r in results if r["result"]["status"] >= 500]
    if failed:
        return respond(envelope(False, max(failed), {"alerts": results}, "retry: not all stored"))
    return respond(envelope(True, 200, {"alerts": results}))
