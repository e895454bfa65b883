"""Telegram channels against a fake Bot API on loopback (TELEGRAM_API_URL).

Messages are HTML with every field escaped and at most 4,096 characters; a 429's
retry_after is honoured; a storm of 2,000 incidents in under 10 s reaches the chat at
most once a second, in digests that account for every incident.
"""

import html
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from receivers import Answer, Received, Receiver, eventually
from support import Server

BOT_TOKEN = "123456:ABC-secret-bot-token"


class BotApi:
    """What the fake Bot API answers: ok, or a 429 with retry_after for chats told so."""

    def __init__(self) -> None:
        self.flood: dict[str, int] = {}  # chat_id -> 429s still to answer

    def __call__(self, receiver: Receiver, request: Received) -> Answer:
        chat = str(request.json().get("chat_id"))
        if self.flood.get(chat):
            self.flood[chat] -= 1
            parameters = {"retry_after": 2}
            body = {"ok": False, "error_code": 429, "description": "Too Many Requests",
                    "parameters": parameters}  # fmt: skip
            return Answer(429, body=body)
        return Answer(200, body={"ok": True, "result": {"message_id": 1}})


@pytest.fixture(scope="module")
def bot() -> Iterator[tuple[Receiver, BotApi]]:
    api = BotApi()
    with Receiver(api) as receiver:
        yield receiver, api


@pytest.fixture(scope="module")
def server(new_database_url, tmp_path_factory, bot) -> Iterator[Server]:
    receiver, _ = bot
    running = Server(
        new_database_url(), tmp_path_factory.mktemp("instance"), TELEGRAM_API_URL=receiver.url,
        NOTIFY_RETRY_SCHEDULE="0.2,0.2,0.2", NOTIFY_POLL_INTERVAL="0.3", NOTIFY_SENDER="1",
    ).start()  # fmt: skip
    yield running
    running.stop()  # it has a sender: no posts after its receivers have gone


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return server.login()


@pytest.fixture
def chat(server: Server, token: str) -> Iterator[Any]:
    made: list[int] = []

    def make(**rule: Any) -> tuple[str, dict[str, Any]]:
        chat_id = str(-secrets.randbelow(10**9))
        data = server.rpc("channel_create", token, 201, name="ops", kind="telegram",
                          bot_token=BOT_TOKEN, chat_id=chat_id, **rule)["data"]  # fmt: skip
        made.append(data["id"])
        return chat_id, data

    yield make
    for channel_id in made:
        server.rpc("channel_delete", token, 200, id=channel_id)


def to_chat(receiver: Receiver, chat_id: str) -> list[Received]:
    return [r for r in receiver.received if str(r.json()["chat_id"]) == chat_id]


def named(message: str) -> set[int]:
    """The incident ids a message accounts for: its own, or a digest's whole list."""
    ids = {int(n) for n in re.findall(r"Incident #(\d+)", message)}
    for listed in re.findall(r"Incidents: ([\d, ]+)", message):
        ids |= {int(n) for n in listed.split(",")}
    return ids


def test_a_message_is_escaped_html_and_fits(server: Server, token: str, bot, chat) -> None:
    receiver, _ = bot
    chat_id, channel = chat()
    assert BOT_TOKEN not in str(channel) and channel["secret_prefix"] == "1234..."
    title = "<b>x</b> & <script>"
    description = "a<b>&" * 2000  # 10,000 characters; escaped, 30,000
    incident = server.rpc("create", token, 201, title=title, description=description,
                          severity="critical")["data"]  # fmt: skip
    (request,) = eventually(lambda: to_chat(receiver, chat_id))
    assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
    sent = request.json()
    assert sent["parse_mode"] == "HTML" and len(sent["text"]) <= 4096
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in sent["text"]
    assert "<script>" not in sent["text"] and "<b>x" not in sent["text"]
    shown = html.unescape(re.sub(r"</?b>", "", sent["text"]))
    assert title in shown and f"Incident #{incident['id']}" in shown
    assert "[CRITICAL]" in shown and "Source: unknown" in shown and "Status: new" in shown
    assert "By: admin" in shown
    listed = server.rpc("channel_list", token, 200, id=channel["id"])["data"]["channels"]
    assert BOT_TOKEN not in str(listed)


def test_429_retry_after_is_honoured(server: Server, token: str, bot, chat) -> None:
    receiver, api = bot
    chat_id, channel = chat()
    api.flood[chat_id] = 1
    incident = server.rpc("create", token, 201, description="flooded")["data"]
    first, second = eventually(lambda: to_chat(receiver, chat_id)[:2] if len(
        to_chat(receiver, chat_id)) >= 2 else None)  # fmt: skip
    assert second.at - first.at >= 2.0
    assert named(second.json()["text"]) == {incident["id"]}
    delivered = eventually(
        lambda: server.rpc("delivery_list", token, 200, channel_id=channel["id"],
                           state="delivered")["data"]["deliveries"]
    )  # fmt: skip
    assert delivered[0]["attempts"] == 2


def test_a_storm_reaches_the_chat_once_a_second(server: Server, token: str, bot, chat) -> None:
    receiver, _ = bot
    chat_id, channel = chat()
    ids: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        client = Server(server.database_url, Path(server.env["INSTANCE_PATH"]))
        client.port, client.url = server.port, server.url
        for _ in range(10):
            severities = ["critical" if n % 7 == 0 else "high" for n in range(50)]
            batch = [{"action": "create", "token": token, "description": "storm",
                      "severity": severity} for severity in severities]  # fmt: skip
            answers = client.post("/rpc", batch).json()
            with lock:
                ids.extend(a["data"]["id"] for a in answers if a["status"] == 201)
        client.session.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 2000

    def accounted() -> set[int]:
        return set().union(*(named(r.json()["text"]) for r in to_chat(receiver, chat_id)))

    eventually(lambda: accounted() >= set(ids), timeout=60)
    messages = to_chat(receiver, chat_id)
    gaps = [later.at - earlier.at for earlier, later in zip(messages, messages[1:], strict=False)]
    assert min(gaps) >= 0.9, gaps
    assert len(messages) < 60  # digests, not 2,000 messages draining for half an hour
    assert any("notifications (" in r.json()["text"] for r in messages)
    assert all(len(r.json()["text"]) <= 4096 for r in messages)
    assert accounted() == set(ids)
    failed = server.rpc("delivery_list", token, 200, channel_id=channel["id"], state="failed")
    assert failed["data"]["deliveries"] == []
