"""Schemas of the maintenance-window actions: silence_create, silence_list, silence_expire.

A window must match something less than everything: an empty set of matchers, or
one that only says "at most critical" or "any dedup_key", is refused. It lasts at
most a year and must end after it starts and after now.
"""

from datetime import datetime, timedelta
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from incident_rpc.models import Severity, Source, utcnow
from incident_rpc.schemas.fields import Text, Timestamp, choice, identifier
from incident_rpc.schemas.incidents import Params

LONGEST = timedelta(days=365)
STATES = ("active", "pending", "expired")


class Matchers(Params):
    source = choice(Source)
    severity = choice(Severity)  # matches this severity and every lower one
    dedup_key = Text(blank=False, max_length=255)  # a prefix, or a glob with * ? [
    text = Text(blank=False, max_length=1000)
    labels = fields.Dict(
        keys=Text(blank=False, max_length=100), values=Text(max_length=1000),
        validate=validate.Length(min=1, max=20),
    )  # fmt: skip

    @validates_schema
    def matches_less_than_everything(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one matcher.", "_schema")
        trivial = {"severity": Severity.critical.value}
        if all(trivial.get(name) == value or _any_key(name, value) for name, value in data.items()):
            raise ValidationError("These matchers match every incident; narrow them.", "_schema")


def _any_key(name: str, value: Any) -> bool:
    return name == "dedup_key" and not value.strip("*")


class SilenceCreateParams(Params):
    matchers = fields.Nested(Matchers, required=True)
    starts_at = Timestamp()
    ends_at = Timestamp()
    duration = fields.Integer(strict=True, validate=validate.Range(1, int(LONGEST.total_seconds())))
    comment = Text(allow_none=True, max_length=1000)

    @validates_schema
    def sensible_times(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("ends_at" in data) == ("duration" in data):
            raise ValidationError("Give either ends_at or duration.", "_schema")
        starts_at: datetime = data.get("starts_at") or utcnow()
        ends_at = data.get("ends_at") or starts_at + timedelta(seconds=data["duration"])
        if ends_at <= starts_at:
            raise ValidationError("A silence must end after it starts.", "ends_at")
        if ends_at - starts_at > LONGEST:
            raise ValidationError("A silence lasts at most 365 days.", "ends_at")
        if ends_at <= utcnow():
            raise ValidationError("This silence would have ended already.", "ends_at")


class SilenceListParams(Params):
    state = Text(validate=[validate.OneOf(STATES, error=f"Must be one of: {', '.join(STATES)}.")])
    limit = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1000))


class SilenceIdParams(Params):
    id = identifier(required=True)


def state(silence: Any, now: datetime | None = None) -> str:
    now = now or utcnow()
    if silence.ends_at <= now:
        return "expired"
    return "pending" if silence.starts_at > now else "active"


class SilenceOut(Schema):
    id = fields.Integer()
    matchers = fields.Dict()
    starts_at = Timestamp()
    ends_at = Timestamp()
    comment = fields.String()
    created_by = fields.String()
    created_at = Timestamp()
    state = fields.Function(state)


class SilencesOut(Schema):
    silences = fields.List(fields.Nested(SilenceOut))


silence_out, silences_out = SilenceOut(), SilencesOut()
