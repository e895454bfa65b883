"""Schemas of the team actions: users, sessions, API keys, assignment, comments, history.

Usernames come from a safe alphabet (no ':' — API keys act as "key:<name>", so
no user can pass for a key); passwords are 8..256 characters of anything but NUL.
"""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from incident_rpc.models import KeyRole, Role
from incident_rpc.schemas.fields import Text, Timestamp, choice, strict_boolean
from incident_rpc.schemas.incidents import IdParams, Params

USERNAME = validate.Regexp(
    r"\A[A-Za-z0-9][A-Za-z0-9._@-]{2,63}\Z",
    error="3 to 64 characters: letters, digits and . _ @ - (not first).",
)
PASSWORD = validate.Length(8, 256, error="Between 8 and 256 characters.")
KEY_NAME = validate.Regexp(
    r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,59}\Z",
    error="1 to 60 characters: letters, digits and . _ @ - (not first).",
)


class NoParams(Params):
    pass


class RegisterParams(Params):
    username = Text(required=True, validate=[USERNAME])
    password = Text(required=True, validate=[PASSWORD])


class UserCreateParams(RegisterParams):
    role = choice(Role, load_default=Role.reporter.value)


class UserUpdateParams(Params):
    username = Text(required=True, blank=False, max_length=64)
    role = choice(Role)
    disabled = strict_boolean()
    password = Text(validate=[PASSWORD])

    @validates_schema
    def something_to_change(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not set(data) - {"username"}:
            raise ValidationError("Give role, disabled or password.", "_schema")


class PasswordChangeParams(Params):
    old_password = Text(required=True, blank=False, max_length=256)
    new_password = Text(required=True, validate=[PASSWORD])


class KeyCreateParams(Params):
    name = Text(required=True, validate=[KEY_NAME])
    role = choice(KeyRole, load_default=Role.reporter.value)  # users cannot be monitors


class AssignParams(IdParams):
    assignee = Text(required=True, allow_none=True, max_length=64)


class CommentParams(IdParams):
    text = Text(required=True, blank=False, max_length=10000)


class UserOut(Schema):
    username = fields.String()
    role = fields.String()
    disabled = fields.Boolean()
    created_at = Timestamp()


class UsersOut(Schema):
    users = fields.List(fields.Nested(UserOut))


class KeyFields(Schema):
    """What every answer about a key shows."""

    id = fields.Integer()
    name = fields.String()
    role = fields.String()
    prefix = fields.String()


class NewKeyOut(KeyFields):
    key = fields.String()  # the only time it is ever shown


class KeyOut(KeyFields):
    created_by = fields.String()
    created_at = Timestamp()
    last_used_at = Timestamp()  # to the minute
    revoked = fields.Function(lambda key: key.revoked_at is not None)
    revoked_at = Timestamp()


class KeysOut(Schema):
    keys = fields.List(fields.Nested(KeyOut))


class CommentOut(Schema):
    id = fields.Integer()
    incident_id = fields.Integer()
    author = fields.String()
    text = fields.String()
    created_at = Timestamp()


class CommentsOut(Schema):
    comments = fields.List(fields.Nested(CommentOut))


# What an `added` event reports as changed: each field the creator gave a value.
# What a new incident's and a new silence's first event shows as changed, [null, value].
MADE_WITH = {
    "added": ("title", "description", "status", "severity", "source", "details", "assignee"),
    "silence_created": ("matchers", "starts_at", "ends_at", "comment"),
}


class EventOut(Schema):
    id = fields.Integer()
    type = fields.String()
    actor = fields.String()
    at = Timestamp()
    changes = fields.Method("what_changed")

    def what_changed(self, event: Any) -> dict[str, Any]:
        """field -> [old, new]; `commented`: comment -> {id, text}; `added` and
        `silence_created`: [null, value] of what it was made with."""
        made_with = MADE_WITH.get(event.type)
        if made_with is None:
            return event.changes
        initial = {name: event.data.get(name) for name in made_with}
        return {name: [None, value] for name, value in initial.items() if value is not None}


class HistoryOut(Schema):
    events = fields.List(fields.Nested(EventOut))


class WhoamiOut(Schema):
    username = fields.String()
    role = fields.String()


user_out, users_out, whoami_out = UserOut(), UsersOut(), WhoamiOut()
new_key_out, key_out, keys_out = NewKeyOut(), KeyOut(), KeysOut()
comment_out, comments_out, history_out = CommentOut(), CommentsOut(), HistoryOut()
