"""Notification channels and their deliveries, for administrators (incident_rpc/notify).

A webhook channel's signing secret is made here and answered once, by channel_create;
a Telegram bot token and a Slack URL are given by the admin and never answered back.
Every answer after that shows a masked prefix only.
"""

from typing import Any

from flask import current_app
from sqlalchemy import delete, select

from incident_rpc.dispatch.registry import Context, action
from incident_rpc.errors import Conflict, InvalidParams, NotFound
from incident_rpc.extensions import db
from incident_rpc.models import Role, utcnow
from incident_rpc.notify import addresses, rows, rules, signing, wakeup
from incident_rpc.notify.models import Channel, ChannelKind, Delivery, DeliveryState
from incident_rpc.notify.schemas import (
    RULE_KEYS,
    ChannelCreateParams,
    ChannelIdParams,
    ChannelUpdateParams,
    DeliveryListParams,
    channel_out,
    channels_out,
    deliveries_out,
    delivery_out,
    new_channel_out,
)
from incident_rpc.schemas.incidents import IdParams


def _check_url(url: str) -> None:
    try:
        addresses.check_url(url, current_app.config["WEBHOOK_ALLOW_PRIVATE"])
    except addresses.Refused as refusal:
        raise InvalidParams({"url": [str(refusal)]}) from refusal


def _rule(params: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
    given = {key: params[key] for key in RULE_KEYS if key in params}
    return rules.with_defaults({**(current or {}), **given})


def _set_secret(channel: Channel, params: dict[str, Any]) -> None:
    if channel.kind == ChannelKind.telegram and "bot_token" in params:
        channel.secret = params["bot_token"]
        channel.secret_prefix = signing.mask(params["bot_token"])
    elif channel.kind == ChannelKind.slack and "url" in params:
        _check_url(params["url"])
        channel.secret = params["url"]
        channel.secret_prefix = signing.mask_url(params["url"])
    elif channel.kind == ChannelKind.webhook and "url" in params:
        _check_url(params["url"])
        channel.url = params["url"]


@action(
    "channel_create", params=ChannelCreateParams(), role=Role.admin, output=new_channel_out,
    status=201, changes=True,
)  # fmt: skip
def channel_create(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A new channel; a webhook's signing secret is in this answer and nowhere else."""
    channel = Channel(
        name=params["name"], kind=params["kind"], rule=_rule(params),
        enabled=params.get("enabled", True), chat_id=params.get("chat_id"),
        created_by=ctx.actor, created_at=utcnow(),
    )  # fmt: skip
    secret = None
    if channel.kind == ChannelKind.webhook:
        secret = signing.new_secret()
        channel.secret, channel.secret_prefix = secret, signing.mask(secret)
    _set_secret(channel, params)
    db.session.add(channel)
    db.session.flush()
    return {**{name: getattr(channel, name) for name in channel_out.fields}, "secret": secret}


@action("channel_list", params=IdParams(partial=True), role=Role.admin, output=channels_out,
        reads_only=True)  # fmt: skip
def channel_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    query = select(Channel).order_by(Channel.id)
    if "id" in params:
        query = query.where(Channel.id == params["id"])
    return {"channels": list(db.session.scalars(query))}


def _channel(channel_id: int) -> Channel:
    channel = db.session.get(Channel, channel_id)
    if channel is None:
        raise NotFound(f"no channel with id {channel_id}")
    return channel


@action("channel_update", params=ChannelUpdateParams(), role=Role.admin, output=channel_out,
        changes=True)  # fmt: skip
def channel_update(ctx: Context, params: dict[str, Any]) -> Channel:
    """Change the name, the destination, the rule, or switch it on or off."""
    channel = _channel(params["id"])
    if "bot_token" in params and channel.kind != ChannelKind.telegram:
        raise InvalidParams({"bot_token": ["Only a telegram channel has a bot_token."]})
    if "chat_id" in params and channel.kind != ChannelKind.telegram:
        raise InvalidParams({"chat_id": ["Only a telegram channel has a chat_id."]})
    if "url" in params and channel.kind == ChannelKind.telegram:
        raise InvalidParams({"url": ["A telegram channel has no url."]})
    _set_secret(channel, params)
    channel.name = params.get("name", channel.name)
    channel.chat_id = params.get("chat_id", channel.chat_id)
    channel.rule = _rule(params, channel.rule)
    if "enabled" in params:
        channel.enabled = params["enabled"]
        if channel.enabled:
            channel.disabled_reason = None
    return channel


@action("channel_delete", params=ChannelIdParams(), role=Role.admin, changes=True)
def channel_delete(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """The channel and its deliveries; what was still pending is not sent."""
    channel = _channel(params["id"])
    # Locked in id order first, as the sender updates them: the two never deadlock.
    mine = select(Delivery.id).where(Delivery.channel_id == channel.id).order_by(Delivery.id)
    db.session.execute(mine.with_for_update())
    db.session.execute(delete(Delivery).where(Delivery.channel_id == channel.id))
    db.session.delete(channel)
    return {"id": params["id"], "deleted": True}


@action("channel_test", params=ChannelIdParams(), role=Role.admin, output=delivery_out,
        status=201, changes=True)  # fmt: skip
def channel_test(ctx: Context, params: dict[str, Any]) -> Delivery:
    """Queue a test message to the channel; delivery_list shows how it went."""
    channel = _channel(params["id"])
    if not channel.enabled:
        raise Conflict(f"channel {channel.id} is disabled; enable it with channel_update")
    row = rows.delivery_row(channel.id, "channel.test", None, None, utcnow(), actor=ctx.actor)
    delivery = Delivery(**row)
    db.session.add(delivery)
    db.session.flush()
    wakeup.wake_sender()
    return delivery


@action("delivery_list", params=DeliveryListParams(), role=Role.admin, output=deliveries_out,
        reads_only=True)  # fmt: skip
def delivery_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Deliveries, newest first, by channel, state or incident."""
    query = select(Delivery).order_by(Delivery.id.desc()).limit(params["limit"])
    for name in ("channel_id", "state", "incident_id"):
        if name in params:
            query = query.where(getattr(Delivery, name) == params[name])
    if "before_id" in params:
        query = query.where(Delivery.id < params["before_id"])
    return {"deliveries": list(db.session.scalars(query))}


@action("delivery_retry", params=IdParams(), role=Role.admin, output=delivery_out,
        changes=True)  # fmt: skip
def delivery_retry(ctx: Context, params: dict[str, Any]) -> Delivery:
    """Send a failed delivery again, with a whole new round of attempts."""
    delivery = db.session.get(Delivery, params["id"], with_for_update=True)
    if delivery is None:
        raise NotFound(f"no delivery with id {params['id']}")
    if delivery.state != DeliveryState.failed:
        raise Conflict(f"delivery {delivery.id} is {delivery.state}, not failed")
    if not _channel(delivery.channel_id).enabled:
        raise Conflict(f"channel {delivery.channel_id} is disabled; enable it with channel_update")
    delivery.state, delivery.round_start = DeliveryState.pending, delivery.attempts
    delivery.next_attempt_at, delivery.claim, delivery.claimed_until = utcnow(), None, None
    wakeup.wake_sender()
    return delivery
