"""The stored side of notifications: channels (with their rule) and deliveries (the outbox).

A channel's secret (a webhook's signing key, a Telegram bot token, a Slack incoming-webhook
URL) is stored to be used, and shown once, when it is made; answers carry only its
masked prefix. The schema is owned by migrations 0009_notifications, 0010 and 0011.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from incident_rpc.extensions import db
from incident_rpc.models import BigId, JsonDoc, UTCDateTime, utcnow


class ChannelKind:
    webhook = "webhook"
    telegram = "telegram"
    slack = "slack"
    all = ("webhook", "telegram", "slack")


class DeliveryState:
    pending = "pending"  # due at next_attempt_at, or claimed by a sender until claimed_until
    delivered = "delivered"
    failed = "failed"
    all = ("pending", "delivered", "failed")


class Channel(db.Model):
    __tablename__ = "notify_channels"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(60))
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(Text)  # a webhook's; Slack's is its secret
    secret: Mapped[str] = mapped_column(Text)
    secret_prefix: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str | None] = mapped_column(String(64))  # Telegram
    rule: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Telegram: no message to this chat before this time (one a second; 429 retry_after).
    next_send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delivery(db.Model):
    """One message to one channel: an event's, a re-notification's or a channel test's."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        # Pending rows only, in the claim's order (migration 0011).
        Index(
            "ix_notify_deliveries_pending",
            "next_attempt_at",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index("ix_notify_deliveries_channel", "channel_id", "id"),
        Index("ix_notify_deliveries_incident", "incident_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign key (migration 0010): channel_delete deletes a channel's deliveries.
    channel_id: Mapped[int] = mapped_column(BigInteger)
    # The receiver's idempotency key (webhook-id): the same on every attempt. Unique, so
    # that a re-notification written by two senders at once is written once.
    message_id: Mapped[str] = mapped_column(String(80), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    incident_id: Mapped[int | None] = mapped_column(BigInteger)
    severity: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc)  # the body, fixed at the event
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    round_start: Mapped[int] = mapped_column(Integer, default=0)  # attempts before a retry
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim: Mapped[str | None] = mapped_column(String(32))  # the claiming sender's token
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
