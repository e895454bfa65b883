"""The legacy dialect: the older service's field names, messages and list.

Contract section 5.1. The messages below are part of the contract word for word;
the dispatcher answers with the first failing field's message, so field order
here is the order in which the older service checked them.
"""

from typing import Any

from marshmallow import EXCLUDE, Schema, fields

from incident_rpc.models import Source, Status
from incident_rpc.schemas.fields import Text, Timestamp, choice
from incident_rpc.schemas.incidents import FlatOut

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
