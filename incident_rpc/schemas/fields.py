"""Marshmallow fields that hold the line against hostile input.

Every string refuses NUL characters, in free-form documents too (PostgreSQL can
store them neither in text nor in jsonb; SQLite could, but a request must not
succeed or fail by the database behind it), every id fits a signed 64-bit column,
every timestamp is aware UTC. Both the native and the legacy schemas build on
these. (What no field can take, such as lone surrogates, jsonio.parse refuses.)
"""

import base64
import binascii
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from marshmallow import fields, validate

from incident_rpc.errors import InvalidJSON
from incident_rpc.runtime.jsonio import Raw, parse, strings

MAX_ID = 2**63 - 1


NUL = "\x00"
NUL_MESSAGE = "Must not contain NUL characters (\\u0000)."
REPLACEMENT = "\ufffd"  # U+FFFD, what a decoder puts where a character could not be


class Text(fields.String):
    """A string without NUL characters; `blank=False` also refuses whitespace-only.

    `replace_nul=True` keeps the string with each NUL replaced by U+FFFD instead, for
    a sender that would resend what we refuse (http/alertmanager.py)."""

    default_error_messages = {"blank": "Must not be empty.", "nul": NUL_MESSAGE}

    def __init__(
        self,
        *,
        max_length: int | None = None,
        blank: bool = True,
        replace_nul: bool = False,
        **kwargs: Any,
    ):
        validators = list(kwargs.pop("validate", []))
        if max_length:
            validators.append(validate.Length(max=max_length))
        super().__init__(validate=validators, **kwargs)
        self.blank, self.replace_nul = blank, replace_nul

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if NUL in text:
            if not self.replace_nul:
                raise self.make_error("nul")
            text = text.replace(NUL, REPLACEMENT)
        if not self.blank and not text.strip():
            raise self.make_error("blank")
        return text


def choice(enum: type[StrEnum], message: str | None = None, **kwargs: Any) -> Text:
    """A string that must be one of the enum's values."""
    values = [member.value for member in enum]
    message = message or f"Must be one of: {', '.join(values)}."
    kwargs.setdefault("error_messages", {}).setdefault("invalid", message)
    return Text(validate=[validate.OneOf(values, error=message)], **kwargs)


class StrictBoolean(fields.Boolean):
    """JSON true or false, nothing that merely looks like one: not "true", and not 1 or
    0 either, which Python's sets of truthy values take (1 == True)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid", input=value)
        return value


def strict_boolean(**kwargs: Any) -> fields.Boolean:
    return StrictBoolean(**kwargs)


def identifier(**kwargs: Any) -> fields.Integer:
    """A row id: a JSON integer (not a float, bool or string) in 1..2**63-1."""
    return fields.Integer(strict=True, validate=validate.Range(1, MAX_ID), **kwargs)


class Timestamp(fields.Field):
    """ISO 8601 in and out; a time without an offset is taken as UTC."""

    default_error_messages = {"invalid": "Not a valid ISO 8601 date and time."}

    def _serialize(self, value: datetime | None, attr: Any, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        return (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat()

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or "\x00" in value:
            raise self.make_error("invalid")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as error:
            raise self.make_error("invalid") from error
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError as error:  # e.g. 0001-01-01T00:00-01:00
            raise self.make_error("invalid") from error


class Anything(fields.Raw):
    """Any JSON value, with no NUL in any key or string at any depth."""

    default_error_messages = {"nul": NUL_MESSAGE}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        return _without_nul(self, value)


class Document(fields.Dict):
    """A free-form JSON object (`details`), with no NUL in any key or value at any depth.

    Out, one that the database hands over as text (`get_all` reads it so) goes into
    the answer as it is (`jsonio.Raw`), never parsed and encoded again."""

    default_error_messages = {"nul": NUL_MESSAGE}

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return Raw(value)
        return super()._serialize(value, attr, obj, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict:
        return _without_nul(self, super()._deserialize(value, attr, data, **kwargs))


def _without_nul(field: fields.Field, value: Any) -> Any:
    """`value`, unless a NUL is in one of its strings (keys included), at any depth."""
    if any(NUL in text for text in strings(value)):
        raise field.make_error("nul")
    return value


class Cursor(fields.Field):
    """The opaque keyset position (created_at, id) of the last row of a page."""

    default_error_messages = {"invalid": "Not a cursor this service issued."}

    def _serialize(self, value: tuple[datetime, int] | None, attr: Any, obj: Any, **kw: Any):
        if value is None:
            return None
        raw = json.dumps([value[0].isoformat(), value[1]], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any):
        try:  # a forged cursor is hostile input like any other: parsed by the same rules
            padded = value + "=" * (-len(value) % 4)
            created, row_id = parse(base64.urlsafe_b64decode(padded))
            moment = datetime.fromisoformat(created)
            moment = moment.astimezone(UTC) if moment.tzinfo else None
        # OverflowError: a time such as 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        except (TypeError, ValueError, OverflowError, binascii.Error, InvalidJSON) as error:
            raise self.make_error("invalid") from error
        if moment is None or type(row_id) is not int or not 0 < row_id <= MAX_ID:
            raise self.make_error("invalid")
        return moment, row_id
