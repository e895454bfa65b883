"""Input schemas, one per action, and the output schemas of the native dialect.

Unknown parameters are refused by name (a typo such as `stauts` must not pass
silently); server-owned fields are dump-only. The legacy dialect's schemas live
in `schemas/legacy.py`.
"""

from datetime import UTC
from enum import StrEnum
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates_schema

from incident_rpc.models import Severity, Source, Status
from incident_rpc.schemas.fields import (
    Cursor,
    Document,
    Text,
    Timestamp,
    choice,
    identifier,
    strict_boolean,
)


class Params(Schema):
    class Meta:
        unknown = RAISE


class AuthorizationParams(Params):
    username = Text(required=True, blank=False, max_length=64)
    password = Text(required=True, blank=False, max_length=256)


class IncidentFields(Params):
    """The fields a caller may set on an incident, on create and on update."""

    title = Text(allow_none=True, max_length=200)
    description = Text(blank=False, max_length=10000)
    severity = choice(Severity)
    source = choice(Source)
    details = Document(keys=fields.String(), allow_none=True)

    @pre_load
    def accept_incident_alias(self, data: Any, **kwargs: Any) -> Any:
        """`incident` is the older name of `description`."""
        if isinstance(data, dict) and "incident" in data:
            if "description" in data:
                raise ValidationError("Give description or incident, not both.", "incident")
            data = dict(data)
            data["description"] = data.pop("incident")
        return data


class CreateParams(IncidentFields):
    description = Text(required=True, blank=False, max_length=10000)
    created_at = Timestamp(data_key="date")
    dedup_key = Text(blank=False, max_length=255)


class ListParams(Params):
    status = choice(Status)
    source = choice(Source)
    severity = choice(Severity)
    assignee = Text(allow_none=True, max_length=64)  # null: the unassigned ones
    created_by = Text(max_length=64)
    acknowledged = strict_boolean()
    limit = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1000))
    cursor = Cursor()
    silenced = strict_boolean()  # after the older ones: JSON-RPC's positions keep their places
    text = Text(blank=False, max_length=200)  # contained in the title or the description


class IdParams(Params):
    id = identifier(required=True)


def open_dedup_key() -> Text:
    """`dedup_key` in place of `id` (TargetParams). Each schema declares it after its
    other fields: JSON-RPC takes parameters by position, in declaration order, and
    the older ones keep their places."""
    return Text(blank=False, max_length=255)


class TargetParams(Params):
    """One incident: by `id`, or the one open incident with a `dedup_key` (its sender
    may not know the id), exactly one of the two."""

    id = identifier()

    @validates_schema
    def id_or_dedup_key(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("id" in data) == ("dedup_key" in data):
            raise ValidationError("Give either id or dedup_key.", "_schema")


class UpdateParams(TargetParams, IncidentFields):
    id = identifier()
    status = choice(Status)
    assignee = Text(allow_none=True, max_length=64)
    version = fields.Integer(strict=True, validate=validate.Range(1, 2**31 - 1))
    dedup_key = open_dedup_key()

    @validates_schema
    def something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not set(data) - {"id", "dedup_key", "version"}:
            raise ValidationError("Give at least one field to change.", "_schema")


class ResolveParams(TargetParams):
    resolution = Text(allow_none=True, max_length=10000)
    dedup_key = open_dedup_key()


class AcknowledgeParams(TargetParams):
    dedup_key = open_dedup_key()


class OneOrMany(fields.Field):
    """One enum value or a non-empty list of them; loads as a list."""

    def __init__(self, enum: type[StrEnum], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.one = choice(enum)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[str]:
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > 10:
            raise ValidationError("Give one value or a list of 1 to 10 values.")
        return [self.one.deserialize(item) for item in values]


class BulkFilter(Params):
    """Which incidents a bulk action touches; every criterion must hold."""

    status = OneOrMany(Status)
    source = OneOrMany(Source)
    severity = OneOrMany(Severity)
    dedup_key = Text(blank=False, max_length=255)
    dedup_key_prefix = Text(blank=False, max_length=255)
    created_before = Timestamp()
    created_after = Timestamp()

    @validates_schema
    def some_criterion(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one criterion.", "_schema")


class BulkTarget(Params):
    """Exactly one of: an explicit list of ids, or a filter (both bounded by MAX_BULK)."""

    ids = fields.List(identifier(), validate=validate.Length(min=1))
    filter = fields.Nested(BulkFilter)

    @validates_schema
    def ids_or_filter(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("ids" in data) == ("filter" in data):
            raise ValidationError("Give either ids or filter.", "_schema")


class ResolveManyParams(BulkTarget):
    resolution = Text(allow_none=True, max_length=10000)


class UpdateManyParams(BulkTarget, IncidentFields):
    status = choice(Status)
    assignee = Text(allow_none=True, max_length=64)

    @validates_schema
    def something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not set(data) - {"ids", "filter"}:
            raise ValidationError("Give at least one field to change.", "_schema")


class SkippedOut(Schema):
    id = fields.Integer()
    reason = fields.String()


class BulkOut(Schema):
    changed = fields.Integer()
    ids = fields.List(fields.Integer())
    skipped = fields.List(fields.Nested(SkippedOut))


bulk_out = BulkOut()


class FlatOut(Schema):
    """An output schema for flat objects (incidents), dumped by the thousand.

    The declared fields stay the contract; only marshmallow's generic plumbing
    around them (accessor look-ups, defaults, dotted paths: most of the cost of
    a dump) is skipped. Each value is read with `getattr` and handed to the
    field's own conversion, except that None stays None and a plain String or
    Integer field passes a str or int through untouched, as their conversions
    would. A dict of a database row's columns (as `create` and `get_all` read
    them) holds only str and int in such columns, so only the other fields
    (times, documents) are converted. The result equals marshmallow's for any
    object or row with every declared attribute (test_serialization.py). Hooks
    still run: `dump` calls `_serialize`.

    With `times_as_is`, for what only `jsonio.encode` writes out (pages of
    incidents), Timestamp fields leave aware UTC datetimes as they are: orjson
    writes them exactly as `Timestamp` would (`isoformat()`, tested), ten times
    faster; the encoded answer is the same.
    """

    _AS_IS = {fields.String: str, fields.Integer: int}

    def __init__(self, *args: Any, times_as_is: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plan = [
            (field.data_key or name, field.attribute or name, name, field._serialize,
             self._AS_IS.get(type(field)) if not getattr(field, "as_string", False) else None,
             times_as_is and isinstance(field, Timestamp))
            for name, field in self.dump_fields.items()
        ]  # fmt: skip
        self._row_keys = [(key, attribute) for key, attribute, *_ in self._plan]
        self._row_conversions = [(key, name, convert, utc_as_is)
                                 for key, _, name, convert, as_is, utc_as_is in self._plan
                                 if as_is is None]  # fmt: skip
        # A row holding exactly the declared attributes, each under its own output key
        # (get_all's), is copied whole: one C call instead of a lookup per field.
        renamed = any(key != attribute for key, attribute in self._row_keys)
        self._copyable = None if renamed else {key for key, _ in self._row_keys}

    def _serialize(self, obj: Any, *, many: bool = False) -> Any:
        if many and obj is not None:
            return [self._serialize(item) for item in obj]
        if isinstance(obj, dict):
            return self._serialize_row(obj)
        out = {}
        for key, attribute, name, convert, as_is, utc_as_is in self._plan:
            value = getattr(obj, attribute)
            if value is not None and type(value) is not as_is:
                if not (utc_as_is and value.tzinfo is UTC):
                    value = convert(value, name, obj)
            out[key] = value
        return out

    def _serialize_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.keys() == self._copyable:
            out = row.copy()
        else:
            out = {key: row[attribute] for key, attribute in self._row_keys}
        for key, name, convert, utc_as_is in self._row_conversions:
            value = out[key]
            if value is not None and not (utc_as_is and value.tzinfo is UTC):
                out[key] = convert(value, name, row)
        return out


class IncidentOut(FlatOut):
    id = fields.Integer()
    title = fields.String()
    description = fields.String()
    status = fields.String()
    severity = fields.String()
    source = fields.String()
    details = Document()
    created_by = fields.String()
    created_at = Timestamp()
    updated_at = Timestamp()
    resolved_at = Timestamp()
    resolved_by = fields.String()
    resolution = fields.String()
    acknowledged_at = Timestamp()
    acknowledged_by = fields.String()
    silenced_by = fields.Integer()
    assignee = fields.String()
    version = fields.Integer()
    dedup_key = fields.String()
    occurrences = fields.Integer()
    last_seen_at = Timestamp()


class TokenOut(Schema):
    token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    expires_at = Timestamp()


incident_out = IncidentOut()
token_out = TokenOut()


class IncidentPageOut(Schema):
    incidents = fields.Nested(IncidentOut(many=True, times_as_is=True))  # one call, not one a row
    next_cursor = Cursor()


incident_page_out = IncidentPageOut()
