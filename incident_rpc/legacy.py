"""The legacy dialect: the older service's field names, messages and list.

Contract section 5.1. The messages below are part of the contract word for word;
the dispatcher answers with the first failing field's message, so field order
here is the order in which the older service checked them.
"""

from collections.abc import Iterator
from typing import Any

from flask import Response
from marshmallow import EXCLUDE, Schema, fields
from sqlalchemy import select

from . import access, jsonio
from .extensions import db
from .fields import Text, Timestamp, choice
from .models import Incident, Source, Status
from .rpc import Context, Reply
from .schemas import FlatOut

STATUS_WORDS = ", ".join(s.value for s in Status)
SOURCE_WORDS = ", ".join(s.value for s in Source)


def _all(message: str) -> dict[str, str]:
    """The same sentence for every way a field can be wrong."""
    keys = ("required", "null", "invalid", "invalid_utf8", "blank", "nul", "validator_failed")
    return {key: message for key in keys}


class LegacyParams(Schema):
    class Meta:
        unknown = EXCLUDE  # the older service ignored keys it did not know


class AuthorizationParams(LegacyParams):
    # Missing or malformed credentials are a 401 in this dialect, decided by the handler.
    username = fields.Raw()
    password = fields.Raw()


class CreateParams(LegacyParams):
    description = Text(
        data_key="incident", required=True, blank=False, max_length=10000,
        error_messages=_all("Incident is required"),
    )  # fmt: skip
    source = choice(
        Source, f"Source is required or wrong, use one of: {SOURCE_WORDS}", required=True,
        error_messages=_all(f"Source is required or wrong, use one of: {SOURCE_WORDS}"),
    )  # fmt: skip
    created_at = Timestamp(data_key="date", error_messages=_all("Wrong date format"))


class ListParams(LegacyParams):
    status = choice(Status, f"Status must be one of: {STATUS_WORDS}")


class LegacyId(fields.Field):
    """An id as the older service took it: a JSON integer or a string of digits."""

    default_error_messages = {"required": "ID is required", "invalid": "ID must be numeric"}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        if type(value) is not int:
            raise self.make_error("invalid")
        if value == 0:
            raise self.make_error("required")
        if not 0 < value < 2**63:
            raise self.make_error("invalid")
        return value


class UpdateParams(LegacyParams):
    id = LegacyId(required=True, error_messages={"null": "ID is required"})
    status = choice(
        Status, f"Status is required or wrong, use one of: {STATUS_WORDS}", required=True,
        error_messages=_all(f"Status is required or wrong, use one of: {STATUS_WORDS}"),
    )  # fmt: skip


class IncidentOut(FlatOut):
    id = fields.Integer()
    incident = fields.String(attribute="description")
    status = fields.String()
    source = fields.String()
    created_at = Timestamp()


incident_out = IncidentOut()


def stream_incidents(ctx: Context, params: dict[str, Any]) -> Response | Reply:
    """Every match, oldest first, streamed in chunks so memory stays flat at any size.

    The stream outlives the request's session (Flask tears that down when the view
    returns), so it reads on a connection of its own, closed with the response.
    """
    query = select(
        Incident.id, Incident.description, Incident.status, Incident.source, Incident.created_at
    ).order_by(Incident.created_at, Incident.id)
    query = access.readable(query, ctx.caller)
    if "status" in params:
        query = query.where(Incident.status == params["status"])
    connection = db.engine.connect()
    try:
        streaming = connection.execution_options(yield_per=2000, read_only=True)
        chunks = streaming.execute(query).partitions()
        first = next(chunks, None)
    except BaseException:
        connection.close()
        raise
    if first is None:  # the older service's quirk: an empty list is a successful 404
        connection.close()
        return Reply({"incidents": []}, 404)
    response = Response(_envelope_around(first, chunks), status=200, mimetype="application/json")
    response.call_on_close(connection.close)
    return response


def _envelope_around(first: list[Any], chunks: Iterator[list[Any]]) -> Iterator[bytes]:
    yield b'{"success": true, "error": "", "status": 200, "data": {"incidents": ['
    yield _items(first)
    for chunk in chunks:
        yield b"," + _items(chunk)
    yield b"]}}"


def _items(rows: list[Any]) -> bytes:
    return jsonio.encode(incident_out.dump(rows, many=True))[1:-1]
