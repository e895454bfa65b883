"""The stored objects: users, API keys, incidents, comments, the event log, login failures.

Typed SQLAlchemy 2.0 models. The schema itself is owned by the migrations in
`migrations/versions`; these classes must match them.
"""

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from incident_rpc.extensions import db

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc = JSON().with_variant(JSONB(), "postgresql")
# A document that may be absent: None is SQL NULL, whether the column was left out of an
# INSERT or given as None (every row of a multi-row INSERT names it), never JSON `null`.
OptionalJsonDoc = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        # PostgreSQL sessions run with TimeZone=UTC (database.engine_options): its values
        # are aware UTC already, and a page of 50 incidents has 200 of them to convert.
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Role(enum.StrEnum):
    admin = "admin"
    agent = "agent"
    reporter = "reporter"


class KeyRole(enum.StrEnum):
    """The roles of an API key: a user's, or `monitor` (a reporter that may also
    acknowledge and resolve the incidents it raised; access/policy.py)."""

    admin = "admin"
    agent = "agent"
    reporter = "reporter"
    monitor = "monitor"


class Status(enum.StrEnum):
    new = "new"
    processing = "processing"
    completed = "completed"
    fake = "fake"
    unknown = "unknown"


class Severity(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Source(enum.StrEnum):
    operator = "operator"
    monitoring = "monitoring"
    partner = "partner"
    unknown = "unknown"


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.reporter)
    disabled: Mapped[bool] = mapped_column(default=False)
    # Bumped by logout, password change and disabling: tokens signed with an
    # older value stop working, with no list of tokens to keep.
    session_epoch: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Usernames are unique ignoring case: the database decides between concurrent creates.
Index("uq_users_username_lower", func.lower(User.username), unique=True)

# What `stats` reads of each incident in its window (ix_incidents_created includes them).
STATS_COLUMNS = ["status", "severity", "source", "assignee", "acknowledged_at", "resolved_at"]
# The predicate of the partial unique index; `actions/dedup.py` names it again in ON CONFLICT.
OPEN_DEDUP_KEY = "dedup_key IS NOT NULL AND status NOT IN ('completed', 'fake')"


class Incident(db.Model):
    __tablename__ = "incidents"
    __table_args__ = (
        # Keyset pages, newest first, with or without one filter.
        # On PostgreSQL it also carries what `stats` reads of a window (migration 0008):
        # its counts and durations come from an index-only scan, not from the rows.
        Index("ix_incidents_created", "created_at", "id", postgresql_include=STATS_COLUMNS),
        Index("ix_incidents_status_created", "status", "created_at", "id"),
        Index("ix_incidents_source_created", "source", "created_at", "id"),
        Index("ix_incidents_severity_created", "severity", "created_at", "id"),
        # The `assignee` and `created_by` filters; the second also serves a reporter's
        # every list, which is always confined to its own incidents.
        Index("ix_incidents_assignee_created", "assignee", "created_at", "id"),
        Index("ix_incidents_created_by_created", "created_by", "created_at", "id"),
        # At most one open incident per dedup_key: the database, not a check-then-insert,
        # decides between concurrent senders of the same alert.
        Index(
            "uq_incidents_open_dedup_key",
            "dedup_key",
            unique=True,
            postgresql_where=text(OPEN_DEDUP_KEY),
            sqlite_where=text(OPEN_DEDUP_KEY),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=Status.new)
    severity: Mapped[str] = mapped_column(String(16), default=Severity.medium)
    source: Mapped[str] = mapped_column(String(16), default=Source.unknown)
    details: Mapped[dict[str, Any] | None] = mapped_column(OptionalJsonDoc)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolution: Mapped[str | None] = mapped_column(Text)
    # Set once, by the first `acknowledge` (or update to processing); cleared when the
    # incident goes back to `new`, so that it waits for someone again.
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    # The silence (maintenance window) that was active and matched when it arrived.
    silenced_by: Mapped[int | None] = mapped_column(BigInteger)
    assignee: Mapped[str | None] = mapped_column(String(64))  # an agent's username
    # Every UPDATE says "WHERE version = <the one read>": two writers that read the
    # same version cannot both win (StaleDataError becomes a 409).
    version: Mapped[int] = mapped_column(Integer, default=1)
    dedup_key: Mapped[str | None] = mapped_column(String(255))
    occurrences: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    last_seen_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    __mapper_args__ = {"version_id_col": version}


# `stats` and the open-incidents gauge: only the open incidents, and only the resolved.
OPEN_INCIDENT = "status NOT IN ('completed', 'fake')"
Index("ix_incidents_open", Incident.severity, Incident.status, Incident.created_at,
      Incident.acknowledged_at,
      postgresql_where=text(OPEN_INCIDENT), sqlite_where=text(OPEN_INCIDENT))  # fmt: skip
RESOLVED = "resolved_at IS NOT NULL"
Index("ix_incidents_resolved", Incident.resolved_at,
      postgresql_where=text(RESOLVED), sqlite_where=text(RESOLVED))  # fmt: skip


class Silence(db.Model):
    """A maintenance window: incidents matching `matchers` that arrive between
    `starts_at` and `ends_at` are stored marked `silenced_by` (actions/silencing.py)."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    matchers: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # expiring sets it to now
    comment: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(db.Model):
    """One committed change to an incident, in the order subscribers must see it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    incident_id: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    changes: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)


class RequestReplay(db.Model):
    """The first answer to a changing command sent with a `request_id` (see dispatch/replay.py)."""

    __tablename__ = "request_replays"
    __table_args__ = (UniqueConstraint("caller", "request_id", name="uq_request_replays_caller"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    caller: Mapped[str] = mapped_column(String(80))
    request_id: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # action and parameters, hashed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    answer: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)


class ApiKey(db.Model):
    """A long-lived credential for a monitoring agent; only a hash of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(60))
    role: Mapped[str] = mapped_column(String(16), default=Role.reporter)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, hex
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Comment(db.Model):
    """A note on an incident; the `commented` event records it in the log as well."""

    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_incident", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    incident_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("incidents.id"))
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginFailure(db.Model):
    """Failed sign-ins counted per scope (an address, or a username at an address).

    In the database, not in a process, so that every worker and instance sees the
    same counts. `scope` is a keyed hash: what people type as a username (sometimes
    their password) is never stored.
    """

    __tablename__ = "login_failures"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    failures: Mapped[int] = mapped_column(Integer)
