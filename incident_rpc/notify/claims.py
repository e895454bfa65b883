"""The sender's statements on the outbox: claim due deliveries, record attempts.

Every statement runs on its own (autocommit). A claim is one UPDATE of the due rows
picked by a sub-select with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so that senders of
any number of workers and instances never claim the same row; on SQLite only one
sender runs (sender.py). A claim sets a lease (`claimed_until`) and the sender's token
(`claim`): a row whose lease ran out, because its sender died, is due again, and an
attempt's result is recorded only while the row is still its sender's.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, case, func, or_, select, update

from incident_rpc.notify.models import Channel, ChannelKind, Delivery, DeliveryState
from incident_rpc.notify.post import Outcome
from incident_rpc.notify.retries import Verdict

MAX_ERROR = 500  # characters of an attempt's error kept


def _due(now: datetime) -> Any:
    return (
        Delivery.state == DeliveryState.pending,
        Delivery.next_attempt_at <= now,
        or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
    )


def claim(
    connection: Connection, now: datetime, lease: float, token: str, limit: int,
    channel_id: int | None = None,
) -> list[Row]:  # fmt: skip
    """Claim up to `limit` due deliveries: of one channel, or of any webhook or Slack one."""
    picked = select(Delivery.id).join(Channel, Channel.id == Delivery.channel_id)
    picked = picked.where(*_due(now), Channel.enabled.is_(True))
    if channel_id is None:
        picked = picked.where(Channel.kind != ChannelKind.telegram)
    else:
        picked = picked.where(Delivery.channel_id == channel_id)
    picked = picked.order_by(Delivery.next_attempt_at, Delivery.id).limit(limit)
    picked = picked.with_for_update(skip_locked=True, of=Delivery)
    claimed = (
        update(Delivery)
        .where(Delivery.id.in_(picked.scalar_subquery()))
        .values(
            claimed_until=now + timedelta(seconds=lease),
            claim=token,
            attempts=Delivery.attempts + 1,
        )  # fmt: skip
        .returning(
            Delivery.id,
            Delivery.channel_id,
            Delivery.message_id,
            Delivery.type,
            Delivery.payload,
            Delivery.attempts,
            Delivery.round_start,
        )  # fmt: skip
    )
    return sorted(connection.execute(claimed).all(), key=lambda row: row.id)


def channels(connection: Connection, ids: set[int]) -> dict[int, Row]:
    query = select(Channel.id, Channel.kind, Channel.url, Channel.secret, Channel.chat_id)
    return {row.id: row for row in connection.execute(query.where(Channel.id.in_(ids)))}


def finish(
    connection: Connection, row: Row, verdict: Verdict, outcome: Outcome, token: str,
    now: datetime,
) -> bool:  # fmt: skip
    """Record an attempt; False if the row was no longer this sender's (taken over)."""
    values: dict[str, Any] = {
        "claim": None, "claimed_until": None, "last_status": outcome.status,
        "last_error": (outcome.error or "")[:MAX_ERROR] or None, "state": verdict.state,
    }  # fmt: skip
    if verdict.state == DeliveryState.delivered:
        values["delivered_at"] = now
    elif verdict.state == DeliveryState.pending:
        values["next_attempt_at"] = now + timedelta(seconds=verdict.delay)
    statement = update(Delivery).where(Delivery.id == row.id, Delivery.claim == token)
    return connection.execute(statement.values(**values)).rowcount == 1


def finish_delivered(
    connection: Connection, ids: list[int], status: int, token: str, now: datetime
) -> None:
    """Record many successful attempts in one statement (those still this sender's)."""
    statement = update(Delivery).where(Delivery.id.in_(ids), Delivery.claim == token)
    connection.execute(statement.values(
        claim=None, claimed_until=None, last_status=status, last_error=None,
        state=DeliveryState.delivered, delivered_at=now,
    ))  # fmt: skip


def disable(connection: Connection, channel_id: int, reason: str) -> None:
    """The receiver wants no more: the channel stops, and what still waits for it fails."""
    connection.execute(
        update(Channel)
        .where(Channel.id == channel_id)
        .values(enabled=False, disabled_reason=reason)
    )
    connection.execute(
        update(Delivery)
        .where(Delivery.channel_id == channel_id, Delivery.state == DeliveryState.pending)
        .values(state=DeliveryState.failed, last_error=f"channel disabled: {reason}")
    )


def telegram_due(connection: Connection, now: datetime) -> list[int]:
    """Telegram channels with a due delivery whose chat may get a message now."""
    query = (
        select(Delivery.channel_id)
        .join(Channel, Channel.id == Delivery.channel_id)
        .where(*_due(now), Channel.enabled.is_(True), Channel.kind == ChannelKind.telegram)
        .where(or_(Channel.next_send_at.is_(None), Channel.next_send_at <= now))
        .distinct()
    )
    return list(connection.scalars(query))


def take_chat_slot(connection: Connection, channel_id: int, now: datetime, interval: float) -> bool:
    """This sender's turn to message the chat: no other sender's for `interval` seconds."""
    statement = (
        update(Channel)
        .where(Channel.id == channel_id)
        .where(or_(Channel.next_send_at.is_(None), Channel.next_send_at <= now))
        .values(next_send_at=now + timedelta(seconds=interval))
    )
    return connection.execute(statement).rowcount == 1


def push_chat_slot(connection: Connection, channel_id: int, now: datetime, interval: float) -> None:
    """A message to the chat is going out now: the next may not go before `interval`
    from now (the slot was taken at the claim, which may have been a while ago)."""
    later = now + timedelta(seconds=interval)
    statement = (
        update(Channel)
        .where(Channel.id == channel_id)
        .where(or_(Channel.next_send_at.is_(None), Channel.next_send_at < later))
        .values(next_send_at=later)
    )
    connection.execute(statement)


def hold_chat(connection: Connection, channel_id: int, until: datetime) -> None:
    """Telegram said to wait (429 retry_after): no message to the chat before `until`."""
    connection.execute(update(Channel).where(Channel.id == channel_id).values(next_send_at=until))


def next_due(connection: Connection) -> datetime | None:
    """When the earliest pending delivery (or an unfinished claim's lease) is due."""
    due_at = case(
        (Delivery.claimed_until > Delivery.next_attempt_at, Delivery.claimed_until),
        else_=Delivery.next_attempt_at,
    )
    row_due = func.max(due_at, func.coalesce(Channel.next_send_at, due_at))
    if connection.dialect.name == "postgresql":
        row_due = func.greatest(due_at, func.coalesce(Channel.next_send_at, due_at))
    query = (
        select(func.min(row_due))
        .select_from(Delivery)
        .join(Channel, Channel.id == Delivery.channel_id)
        .where(Delivery.state == DeliveryState.pending, Channel.enabled.is_(True))
    )
    value = connection.execute(query).scalar()
    if isinstance(value, str):  # SQLite's max() of two timestamps loses their type
        value = datetime.fromisoformat(value)
    return value


def release(connection: Connection, ids: list[int], token: str) -> None:
    """Give back claims whose attempt never started: due again at once, the try uncounted."""
    statement = update(Delivery).where(Delivery.id.in_(ids), Delivery.claim == token)
    connection.execute(
        statement.values(claim=None, claimed_until=None, attempts=Delivery.attempts - 1)
    )
