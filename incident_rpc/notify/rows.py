"""The columns of a new delivery row, wherever it is written (outbox, channel_test, renotify).

Its payload is the webhook body, fixed when the row is written, so that every attempt
sends the same bytes under the same webhook-id.
"""

import secrets
from typing import Any

from incident_rpc.notify.models import DeliveryState


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def delivery_row(
    channel_id: int, kind: str, incident_id: int | None, incident: dict[str, Any] | None,
    now: Any, event_id: int | None = None, at: str | None = None, message_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The columns of one pending delivery; its payload is the webhook body."""
    payload = {
        "type": f"incident.{kind}" if incident is not None else kind,
        "event_id": event_id,
        "at": at or now.isoformat(),
        "incident": incident,
        **extra,
    }
    return {
        "channel_id": channel_id,
        "message_id": message_id or new_message_id(),
        "type": kind,
        "event_id": event_id,
        "incident_id": incident_id,
        "severity": (incident or {}).get("severity"),
        "payload": payload,
        "state": DeliveryState.pending,
        "attempts": 0,
        "round_start": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
