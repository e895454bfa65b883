"""Re-notification: an incident nobody has taken on is announced again, a few times.

A channel whose rule sets `renotify_every` (minutes) gets an `incident.renotified`
delivery for every open, unacknowledged incident of at least `renotify_min_severity`
(of its sources, not silenced unless it includes them) whose last notification to that
channel is that old, at most `renotify_max` times. The sender scans now and then
(`scan`); each re-notification's webhook-id names the channel, incident and round, and
is unique, so two senders scanning at once write it once.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from incident_rpc.models import Incident, Status
from incident_rpc.notify import rows, rules
from incident_rpc.notify.models import Channel, Delivery
from incident_rpc.schemas.incidents import incident_out

PAGE = 500  # incidents looked at per channel and scan
OPEN = (Status.new, Status.processing, Status.unknown)


def scan(connection: Connection, now: datetime, minute: float) -> int:
    """Write the re-notifications that are due; how many. `minute`: its seconds."""
    query = select(Channel.id, Channel.rule).where(Channel.enabled.is_(True))
    written = 0
    for channel_id, stored in connection.execute(query).all():
        rule = rules.with_defaults(stored)
        if rule["renotify_every"]:
            every = timedelta(seconds=rule["renotify_every"] * minute)
            written += _channel(connection, channel_id, rule, now, every)
    return written


def _channel(
    connection: Connection, channel_id: int, rule: dict[str, Any], now: datetime,
    every: timedelta,
) -> int:  # fmt: skip
    severities = rules.SEVERITIES[rules.rank(rule["renotify_min_severity"]) :]
    query = (
        select(Incident)
        .where(Incident.acknowledged_at.is_(None), Incident.status.in_(OPEN))
        .where(Incident.severity.in_(severities), Incident.created_at <= now - every)
        .order_by(Incident.id)
        .limit(PAGE)
    )
    if rule["sources"]:
        query = query.where(Incident.source.in_(rule["sources"]))
    with Session(connection) as session:  # the mapped incidents, for incident_out
        incidents = [
            incident for incident in session.scalars(query)
            if rule["include_silenced"] or getattr(incident, "silenced_by", None) is None
        ]  # fmt: skip
    if not incidents:
        return 0
    history = (
        select(
            Delivery.incident_id,
            func.max(Delivery.created_at),
            func.count().filter(Delivery.type == "renotified"),
        )  # fmt: skip
        .where(Delivery.channel_id == channel_id)
        .where(Delivery.incident_id.in_([incident.id for incident in incidents]))
        .group_by(Delivery.incident_id)
    )
    last = {incident_id: (at, count) for incident_id, at, count in connection.execute(history)}
    due = []
    for incident in incidents:
        at, count = last.get(incident.id, (incident.created_at, 0))
        if count >= rule["renotify_max"] or _aware(at) > now - every:
            continue
        message_id = f"renotify_{channel_id}_{incident.id}_{count + 1}"
        due.append(rows.delivery_row(
            channel_id, "renotified", incident.id, incident_out.dump(incident), now,
            message_id=message_id, renotify=count + 1,
        ))  # fmt: skip
    if due:
        insert = postgres_insert if connection.dialect.name == "postgresql" else sqlite_insert
        statement = insert(Delivery).on_conflict_do_nothing(index_elements=["message_id"])
        connection.execute(statement, due)
    return len(due)


def _aware(at: Any) -> datetime:
    if isinstance(at, str):  # SQLite's max() of a timestamp column comes back as text
        at = datetime.fromisoformat(at)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
