"""Schemas of the channel and delivery actions: what an admin sends, what comes back.

Out, a channel shows its secret only masked (`secret_prefix`); a Slack channel's URL
is its secret, so only its host is shown. `channel_create` alone answers the webhook
signing secret, once.
"""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from incident_rpc.notify.models import ChannelKind, DeliveryState
from incident_rpc.notify.rules import EVENT_TYPES, SEVERITIES
from incident_rpc.schemas.fields import Text, Timestamp, identifier, strict_boolean
from incident_rpc.schemas.incidents import Params

NAME = validate.Length(1, 60)
SOURCES = ("operator", "monitoring", "partner", "unknown")


def _one_of(values: tuple[str, ...], **kwargs: Any) -> Text:
    message = f"Must be one of: {', '.join(values)}."
    return Text(validate=[validate.OneOf(values, error=message)], **kwargs)


class RuleFields(Params):
    events = fields.List(_one_of(EVENT_TYPES), validate=validate.Length(1, len(EVENT_TYPES)))
    min_severity = _one_of(SEVERITIES)
    sources = fields.List(_one_of(SOURCES), allow_none=True, validate=validate.Length(1, 4))
    include_silenced = strict_boolean()
    renotify_every = fields.Integer(strict=True, allow_none=True, validate=validate.Range(1, 10080))
    renotify_max = fields.Integer(strict=True, validate=validate.Range(1, 100))
    renotify_min_severity = _one_of(SEVERITIES)


RULE_KEYS = tuple(RuleFields._declared_fields)


class ChannelCreateParams(RuleFields):
    name = Text(required=True, blank=False, validate=[NAME])
    kind = _one_of(ChannelKind.all, required=True)
    url = Text(blank=False, max_length=2000)  # webhook and slack
    bot_token = Text(blank=False, max_length=200)  # telegram
    chat_id = Text(blank=False, max_length=64)  # telegram
    enabled = strict_boolean()

    @validates_schema
    def what_the_kind_needs(self, data: dict[str, Any], **kwargs: Any) -> None:
        needs = {"webhook": ("url",), "slack": ("url",), "telegram": ("bot_token", "chat_id")}
        for field in needs.get(data.get("kind", ""), ()):
            if field not in data:
                raise ValidationError(f"A {data['kind']} channel needs {field}.", field)
        extra = {"url", "bot_token", "chat_id"} - set(needs.get(data.get("kind", ""), ()))
        for field in sorted(extra & set(data)):
            raise ValidationError(f"A {data['kind']} channel takes no {field}.", field)


class ChannelUpdateParams(RuleFields):
    id = identifier(required=True)
    name = Text(blank=False, validate=[NAME])
    url = Text(blank=False, max_length=2000)
    bot_token = Text(blank=False, max_length=200)
    chat_id = Text(blank=False, max_length=64)
    enabled = strict_boolean()


class ChannelIdParams(Params):
    id = identifier(required=True)


class DeliveryListParams(Params):
    channel_id = identifier()
    state = _one_of(DeliveryState.all)
    incident_id = identifier()
    before_id = identifier()  # the next page: ids below the last one seen
    limit = fields.Integer(strict=True, load_default=100, validate=validate.Range(1, 1000))


class ChannelOut(Schema):
    id = fields.Integer()
    name = fields.String()
    kind = fields.String()
    url = fields.String()  # a webhook's; a Slack URL is a secret (secret_prefix)
    chat_id = fields.String()
    secret_prefix = fields.String()
    rule = fields.Dict()
    enabled = fields.Boolean()
    disabled_reason = fields.String()
    created_by = fields.String()
    created_at = Timestamp()


class NewChannelOut(ChannelOut):
    secret = fields.String()  # a webhook's signing secret: this answer only


class ChannelsOut(Schema):
    channels = fields.List(fields.Nested(ChannelOut()))


class DeliveryOut(Schema):
    id = fields.Integer()
    channel_id = fields.Integer()
    webhook_id = fields.String(attribute="message_id")
    type = fields.String()
    event_id = fields.Integer()
    incident_id = fields.Integer()
    state = fields.String()
    attempts = fields.Integer()
    last_status = fields.Integer()
    last_error = fields.String()
    next_attempt_at = fields.Method("_next_attempt_at")
    created_at = Timestamp()
    delivered_at = Timestamp()

    def _next_attempt_at(self, delivery: Any) -> str | None:
        if delivery.state != DeliveryState.pending:
            return None
        return Timestamp()._serialize(delivery.next_attempt_at, "next_attempt_at", delivery)


class DeliveriesOut(Schema):
    deliveries = fields.List(fields.Nested(DeliveryOut()))


channel_out, new_channel_out, channels_out = ChannelOut(), NewChannelOut(), ChannelsOut()
delivery_out, deliveries_out = DeliveryOut(), DeliveriesOut()
