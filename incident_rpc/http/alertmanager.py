"""Prometheus Alertmanager's webhook (payload version 4) as a source of incidents.

Each alert in a notification becomes one ordinary command through `dispatcher.execute`:
a firing alert is a `create` with dedup_key "alertmanager:<fingerprint>" (so a
repeat counts an occurrence of the open incident), a resolved alert a
`resolve_many` of the open incident with that key. The caller needs the agent
role, since it resolves.

Alertmanager resends a notification that got a 5xx, and never one that got a
4xx, so one poison alert must neither hold the others back nor come back
forever. A NUL in any of an alert's strings (a label value may hold one; the
database cannot) becomes U+FFFD, so the alert is stored. An alert that is
otherwise invalid is refused alone: the others are stored, each alert's own
envelope is in `data.alerts`, and the answer is a 400, which Alertmanager logs
and counts as failed, and does not resend. The answer is a 5xx (resend) when any
alert could not be stored for a reason that may pass, else 200.
"""

import logging
from typing import Any

from flask import Blueprint, Response
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from incident_rpc.access.auth import authenticate
from incident_rpc.dispatch.batch import Batch
from incident_rpc.dispatch.dispatcher import execute
from incident_rpc.errors import Forbidden, InvalidParams, envelope, to_envelope
from incident_rpc.http.responses import POST_ONLY, bearer_token, read_json, respond
from incident_rpc.models import Severity, Source, Status
from incident_rpc.schemas.fields import Text, Timestamp

log = logging.getLogger("incident_rpc")
bp = Blueprint("alertmanager", __name__)
OPEN = [Status.new.value, Status.processing.value, Status.unknown.value]
SEVERITIES = {severity.value for severity in Severity}


def _text(**kwargs: Any) -> Text:
    return Text(replace_nul=True, **kwargs)


def _labels() -> fields.Dict:
    return fields.Dict(keys=_text(), values=_text(), load_default=dict)


class Alert(Schema):
    class Meta:
        unknown = EXCLUDE  # Alertmanager adds fields over time; we read what we know

    status = fields.String(required=True, validate=validate.OneOf(["firing", "resolved"]))
    labels = _labels()
    annotations = _labels()
    starts_at = Timestamp(data_key="startsAt")
    ends_at = Timestamp(data_key="endsAt")
    generator_url = _text(data_key="generatorURL", load_default="")
    fingerprint = _text(required=True, blank=False, max_length=200)


class Notification(Schema):
    class Meta:
        unknown = EXCLUDE

    version = fields.String(required=True, validate=validate.Equal("4"))
    receiver = _text(load_default="")
    external_url = _text(data_key="externalURL", load_default="")
    # Each alert is read on its own (`_store`), so that one bad alert costs only itself.
    alerts = fields.List(fields.Raw(), required=True, validate=validate.Length(max=1000))


notification_in = Notification()
alert_in = Alert()


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
    results = [_store(alert, notification, token, batch) for alert in notification["alerts"]]
    failed = [r["result"]["status"] for r in results if r["result"]["status"] >= 500]
    if failed:
        return respond(envelope(False, max(failed), {"alerts": results}, "retry: not all stored"))
    refused = sum(r["result"]["status"] == InvalidParams.status for r in results)
    if refused:
        sentence = f"{refused} of {len(results)} alerts refused as invalid; the others stored"
        return respond(envelope(False, InvalidParams.status, {"alerts": results}, sentence))
    return respond(envelope(True, 200, {"alerts": results}))


def _store(raw: Any, notification: dict[str, Any], token: str | None, batch: Batch) -> dict:
    """One alert's entry of the answer: its fingerprint and its own envelope."""
    try:
        alert = alert_in.load(raw)
    except ValidationError as error:
        fingerprint = raw.get("fingerprint") if isinstance(raw, dict) else None
        # Alertmanager drops our answer; only this line says which alert was lost.
        log.warning("alertmanager alert %.80r refused: %s", fingerprint, sorted(error.messages))
        refusal = to_envelope(InvalidParams(error.messages))  # type: ignore[arg-type]
        return {"fingerprint": fingerprint, "result": refusal}
    outcome = execute(_command(alert, notification), token, batch)
    return {"fingerprint": alert["fingerprint"], "result": outcome}
