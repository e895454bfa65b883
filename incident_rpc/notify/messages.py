"""The words of a notification: Slack text, Telegram HTML (one incident, or a digest).

Telegram's HTML mode reads `<`, `>` and `&` as markup, so every field is escaped; a
message is at most 4,096 characters, which the description gives way to. A digest
names the first few notifications and lists every incident id, so nothing is lost.
"""

from html import escape
from typing import Any

TELEGRAM_LIMIT = 4096
DIGEST_LISTED = 10  # notifications described one by one in a digest


def _title(incident: dict[str, Any]) -> str:
    return incident.get("title") or (incident.get("description") or "")[:80]


def slack_text(payload: dict[str, Any]) -> str:
    incident = payload.get("incident")
    if incident is None:
        return "incident_rpc: a test message from this channel"
    return (
        f"[{str(incident.get('severity', '')).upper()}] {_title(incident)} "
        f"(incident {incident.get('id')}, {payload['type']}, status {incident.get('status')})"
    )


def _who(payload: dict[str, Any], incident: dict[str, Any]) -> str:
    return str(payload.get("actor") or incident.get("resolved_by")
               or incident.get("acknowledged_by") or incident.get("created_by") or "")  # fmt: skip


def telegram_text(payload: dict[str, Any]) -> str:
    """One notification: severity, title, description, source, status, who, the id."""
    incident = payload.get("incident")
    if incident is None:
        return "<b>incident_rpc</b>: a test message from this channel"
    what = payload["type"].removeprefix("incident.")
    head = (
        f"<b>[{escape(str(incident.get('severity', '')).upper())}] "
        f"{escape(incident.get('title') or 'untitled')}</b>\n"
    )
    tail = (
        f"\n\nSource: {escape(str(incident.get('source')))} | "
        f"Status: {escape(str(incident.get('status')))} | "
        f"By: {escape(_who(payload, incident))}\n"
        f"Incident #{incident.get('id')} ({escape(what)})"
    )
    return (
        head
        + _fit(incident.get("description") or "", TELEGRAM_LIMIT - len(head) - len(tail))
        + tail
    )


def _fit(text: str, budget: int) -> str:
    """`text` escaped, cut (with an ellipsis) so that the escaped form fits `budget`."""
    escaped = escape(text)
    if len(escaped) <= budget:
        return escaped
    keep = max(budget - 1, 0)
    while keep and len(escape(text[:keep])) > budget - 1:
        keep -= max(1, (len(escape(text[:keep])) - budget + 1) // 5)
    return escape(text[:keep]) + "\u2026"


def digest_text(payloads: list[dict[str, Any]]) -> str:
    """Several notifications for one chat at once: counts, the first few, every id."""
    incidents = [p.get("incident") or {} for p in payloads]
    kinds: dict[str, int] = {}
    for payload in payloads:
        kind = payload["type"].removeprefix("incident.")
        kinds[kind] = kinds.get(kind, 0) + 1
    critical = sum(1 for incident in incidents if incident.get("severity") == "critical")
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    head = f"<b>{len(payloads)} notifications ({escape(counts)}), {critical} critical:</b>"
    ids = "Incidents: " + ", ".join(str(incident.get("id")) for incident in incidents)
    budget = TELEGRAM_LIMIT - len(head) - len(ids) - 64  # the "... and N more." line
    listed: list[str] = []
    for payload, incident in list(zip(payloads, incidents, strict=True))[:DIGEST_LISTED]:
        kind = payload["type"].removeprefix("incident.")
        line = (
            f"\u2022 [{escape(str(incident.get('severity', '')))}] #{incident.get('id')} "
            f"{escape(_title(incident)[:80])} ({escape(kind)})"
        )
        if len(line) + 1 > budget:
            break
        budget -= len(line) + 1
        listed.append(line)
    more = (
        [f"\u2026 and {len(payloads) - len(listed)} more."] if len(listed) < len(payloads) else []
    )
    return "\n".join([head, *listed, *more, ids])
