"""How each kind of channel is sent one message: webhook (signed), Slack, Telegram.

A webhook gets the delivery's payload as it was written at the event, signed afresh
on each attempt (Standard Webhooks: the id stays, the timestamp is the attempt's).
Slack gets a line of text. Telegram gets `sendMessage` in HTML, one notification or
a digest of several; its 429 says in the body how long to wait (`retry_after`).
"""

import time
from typing import Any

from sqlalchemy import Row

from incident_rpc.notify import messages, signing
from incident_rpc.notify.models import ChannelKind
from incident_rpc.notify.post import Outcome, post
from incident_rpc.runtime import jsonio


def send(channel: Row, rows: list[Row], config: dict[str, Any]) -> Outcome:
    """One attempt at `rows` (one row, or for Telegram possibly several: a digest)."""
    timeout = config["NOTIFY_TIMEOUT"]
    if channel.kind == ChannelKind.telegram:
        return _telegram(channel, rows, config)
    (row,) = rows
    if channel.kind == ChannelKind.slack:
        body = jsonio.encode({"text": messages.slack_text(row.payload)})
        return post(channel.secret, body, {}, timeout, config["WEBHOOK_ALLOW_PRIVATE"])
    body = jsonio.encode(row.payload)
    headers = signing.headers(channel.secret, row.message_id, int(time.time()), body)
    return post(channel.url, body, headers, timeout, config["WEBHOOK_ALLOW_PRIVATE"])


def _telegram(channel: Row, rows: list[Row], config: dict[str, Any]) -> Outcome:
    if len(rows) == 1:
        text = messages.telegram_text(rows[0].payload)
    else:
        text = messages.digest_text([row.payload for row in rows])
    body = jsonio.encode(
        {"chat_id": channel.chat_id, "text": text, "parse_mode": "HTML",
         "disable_web_page_preview": True}
    )  # fmt: skip
    url = f"{config['TELEGRAM_API_URL'].rstrip('/')}/bot{channel.secret}/sendMessage"
    # The Bot API's address is the operator's setting, not a channel's: no address check.
    outcome = post(url, body, {}, config["NOTIFY_TIMEOUT"], allow_private=True)
    answer = outcome.answer if isinstance(outcome.answer, dict) else {}
    parameters = answer.get("parameters") or {}
    if outcome.status == 429 and isinstance(parameters.get("retry_after"), int | float):
        outcome = Outcome(
            429, "HTTP 429 (Telegram flood control)", float(parameters["retry_after"])
        )
    elif outcome.status is not None and outcome.status >= 300 and answer.get("description"):
        outcome = Outcome(outcome.status, f"HTTP {outcome.status}: {answer['description']}"[:300],
                          outcome.retry_after)  # fmt: skip
    return outcome
