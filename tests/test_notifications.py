"""Webhook notifications end to end: real gunicorn, real loopback receivers.

Signed with Standard Webhooks (verified with the specification's own library), retried
on 500, timeouts and 429 with the same webhook-id, 410 disabling the channel, other 4xx
failing at once, a failed delivery sent again, rules filtering, nothing for a command
that rolled back, and posts on kept connections. The crash, takeover and storm cases:
test_delivery_crashes.py.
"""

import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from receivers import Answer, Received, Receiver, eventually
from standardwebhooks.webhooks import Webhook
from support import Server

from incident_rpc.notify import rules

SETTINGS = {
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "NOTIFY_SENDER": "1",
    "NOTIFY_TIMEOUT": "1",
    "NOTIFY_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2",
    "NOTIFY_POLL_INTERVAL": "0.5",
    "MAX_BATCH_ANSWER": "3000",
    "NOTIFY_RENOTIFY_UNIT": "1",
}


@pytest.fixture(scope="module")
def server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    running = Server(new_database_url(), tmp_path_factory.mktemp("instance"), **SETTINGS).start()
    yield running
    running.stop()  # it has a sender: no posts after its receivers have gone


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    return server.login()


@pytest.fixture
def channels(server: Server, token: str) -> Iterator[Any]:
    """Makes webhook channels; deletes them after the test, so that no other test's
    incidents go to a receiver that is gone."""
    made: list[int] = []

    def make(url: str, **rule: Any) -> dict[str, Any]:
        name = f"hook-{secrets.token_hex(3)}"
        data = server.rpc("channel_create", token, 201, name=name, kind="webhook", url=url, **rule)
        made.append(data["data"]["id"])
        return data["data"]

    yield make
    for channel_id in made:
        server.rpc("channel_delete", token, 200, id=channel_id)


def create(server: Server, token: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("description", "Pump 7 is down")
    return server.rpc("create", token, 201, **fields)["data"]


def deliveries(server: Server, token: str, **filters: Any) -> list[dict[str, Any]]:
    return server.rpc("delivery_list", token, 200, **filters)["data"]["deliveries"]


def verified(secret: str, request: Received) -> dict[str, Any]:
    """The body, once the standardwebhooks library has checked its signature."""
    return Webhook(secret).verify(request.body, request.headers)


def test_a_webhook_is_signed_and_retried_with_one_id(server: Server, token: str, channels):
    tries: list[float] = []

    def flaky(receiver: Receiver, request: Received) -> Answer:
        tries.append(request.at)
        return [
            Answer(500),
            Answer(200, delay=3),  # past NOTIFY_TIMEOUT: a timeout
            Answer(429, headers={"Retry-After": "1"}),
        ][len(tries) - 1] if len(tries) <= 3 else Answer(200)  # fmt: skip

    with Receiver(flaky) as receiver:
        channel = channels(receiver.url)
        assert channel["secret"].startswith("whsec_")
        incident = create(server, token, title="Pump 7", severity="high")
        got = receiver.wait_for(lambda r: len(r) >= 4)
    assert {request.headers["webhook-id"] for request in got} == {got[0].headers["webhook-id"]}
    for request in got:
        body = verified(channel["secret"], request)
        assert body["type"] == "incident.added"
        assert body["incident"]["id"] == incident["id"]
        assert set(body) >= {"type", "event_id", "at", "incident"}
    assert got[3].at - got[2].at >= 1.0  # Retry-After: 1, over a 0.2 s schedule
    (delivery,) = eventually(
        lambda: [d for d in deliveries(server, token, channel_id=channel["id"])
                 if d["state"] == "delivered"]
    )  # fmt: skip
    assert delivery["attempts"] == 4 and delivery["last_status"] == 200
    assert delivery["webhook_id"] == got[0].headers["webhook-id"]
    assert delivery["incident_id"] == incident["id"] and delivery["next_attempt_at"] is None


def test_the_secret_is_shown_once(server: Server, token: str, channels):
    channel = channels("http://127.0.0.1:9/hook")
    listed = server.rpc("channel_list", token, 200)["data"]["channels"]
    mine = next(c for c in listed if c["id"] == channel["id"])
    assert "secret" not in mine
    assert mine["secret_prefix"] == channel["secret"][:10] + "..."
    assert channel["secret"] not in json.dumps(listed)
    updated = server.rpc("channel_update", token, 200, id=channel["id"], min_severity="high")
    assert "secret" not in updated["data"] and updated["data"]["rule"]["min_severity"] == "high"


def test_410_disables_the_channel(server: Server, token: str, channels):
    with Receiver(lambda receiver, request: Answer(410)) as receiver:
        channel = channels(receiver.url)
        create(server, token)
        receiver.wait_for(lambda r: len(r) >= 1)
        listed = eventually(
            lambda: [c for c in server.rpc("channel_list", token, 200, id=channel["id"])["data"][
                "channels"] if not c["enabled"]]
        )  # fmt: skip
        assert "410" in listed[0]["disabled_reason"]
        (delivery,) = deliveries(server, token, channel_id=channel["id"])
        assert delivery["state"] == "failed" and delivery["last_status"] == 410
        create(server, token)  # a disabled channel gets nothing more
        assert len(deliveries(server, token, channel_id=channel["id"])) == 1
        server.rpc("delivery_retry", token, 409, id=delivery["id"])


def test_other_4xx_fail_at_once_and_can_be_retried(server: Server, token: str, channels):
    answers = iter([Answer(400)])

    with Receiver(lambda receiver, request: next(answers, Answer(200))) as receiver:
        channel = channels(receiver.url)
        create(server, token)
        receiver.wait_for(lambda r: len(r) >= 1)
        (failed,) = eventually(
            lambda: deliveries(server, token, channel_id=channel["id"], state="failed")
        )
        assert failed["attempts"] == 1 and failed["last_status"] == 400
        assert failed["last_error"] == "HTTP 400"
        server.rpc("delivery_retry", token, 200, id=failed["id"])
        got = receiver.wait_for(lambda r: len(r) >= 2)
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        eventually(lambda: deliveries(server, token, channel_id=channel["id"], state="delivered"))
        server.rpc("delivery_retry", token, 409, id=failed["id"])  # delivered: nothing to retry


def test_after_the_last_try_a_delivery_fails(server: Server, token: str, channels):
    with Receiver(lambda receiver, request: Answer(503)) as receiver:
        channel = channels(receiver.url)
        create(server, token)
        (failed,) = eventually(
            lambda: deliveries(server, token, channel_id=channel["id"], state="failed")
        )
        assert failed["attempts"] == 5 and failed["last_status"] == 503  # 1 + the schedule's 4
        assert receiver.count() == 5


def test_rules_pick_events_severities_and_sources(server: Server, token: str, channels):
    with Receiver() as receiver:
        channel = channels(
            receiver.url, events=["added"], min_severity="high", sources=["monitoring"]
        )
        create(server, token, severity="low", source="monitoring")
        create(server, token, severity="critical", source="operator")
        wanted = create(server, token, severity="high", source="monitoring")
        server.rpc("resolve", token, 200, id=wanted["id"])
        sentinel = create(server, token, severity="critical", source="monitoring")
        got = receiver.wait_for(lambda r: len(r) >= 2)
        mine = deliveries(server, token, channel_id=channel["id"])
    # Sorted: the sender posts claimed deliveries side by side (NOTIFY_CONCURRENCY), so
    # under load the two may arrive either way round; no order is promised.
    assert sorted(verified(channel["secret"], r)["incident"]["id"] for r in got) == [
        wanted["id"], sentinel["id"],
    ]  # fmt: skip
    assert len(mine) == 2


def test_default_rule_is_added_and_resolved(server: Server, token: str, channels):
    with Receiver() as receiver:
        channel = channels(receiver.url)
        assert channel["rule"]["events"] == ["added", "resolved"]
        assert channel["rule"]["include_silenced"] is False
        incident = create(server, token)
        server.rpc("acknowledge", token, 200, id=incident["id"])
        server.rpc("comment", token, 201, id=incident["id"], text="on it")
        server.rpc("resolve", token, 200, id=incident["id"])
        got = receiver.wait_for(lambda r: len(r) >= 2)
    # Sorted: as above, the two deliveries may arrive either way round.
    assert sorted(verified(channel["secret"], r)["type"] for r in got) == [
        "incident.added", "incident.resolved",
    ]  # fmt: skip


def test_a_rolled_back_command_notifies_nothing(server: Server, token: str, channels):
    """MAX_BATCH_ANSWER (3,000 bytes here) undoes the create whose answer passes it,
    after its event was recorded: its delivery must go with it."""
    with Receiver() as receiver:
        channel = channels(receiver.url)
        big = "x" * 1200
        batch = [{"action": "create", "token": token, "description": big} for _ in range(4)]
        answers = server.post("/rpc", batch).json()
        made = [a["data"]["id"] for a in answers if a["status"] == 201]
        assert 0 < len(made) < 4, [a["status"] for a in answers]
        sentinel = create(server, token)
        got = receiver.wait_for(lambda r: len(r) >= len(made) + 1)
        rows = deliveries(server, token, channel_id=channel["id"])
    received = sorted(verified(channel["secret"], r)["incident"]["id"] for r in got)
    assert received == sorted([*made, sentinel["id"]])
    assert sorted(row["incident_id"] for row in rows) == received


def test_channel_test_and_bad_channels(server: Server, token: str, channels):
    with Receiver() as receiver:
        channel = channels(receiver.url)
        queued = server.rpc("channel_test", token, 201, id=channel["id"])["data"]
        (request,) = receiver.wait_for(lambda r: len(r) >= 1)
    assert verified(channel["secret"], request)["type"] == "channel.test"
    assert request.headers["webhook-id"] == queued["webhook_id"]
    server.rpc("channel_create", token, 400, name="x", kind="webhook")  # no url
    server.rpc("channel_create", token, 400, name="x", kind="telegram", bot_token="1:a")
    server.rpc("channel_create", token, 400, name="x", kind="webhook", url="ftp://127.0.0.1/")
    server.rpc("channel_create", token, 400, name="x", kind="pager", url="http://127.0.0.1/")
    server.rpc("channel_create", token, 400, name="x", kind="webhook", url="http://127.0.0.1/",
               events=["exploded"])  # fmt: skip
    server.rpc("channel_test", token, 404, id=10**9)
    server.rpc("delivery_list", token, 400, state="lost")


def test_only_admins_manage_channels(server: Server, token: str):
    name = f"agent-{secrets.token_hex(3)}"
    server.rpc("user_create", token, 201, username=name, password="correct horse", role="agent")
    agent = server.login(name, "correct horse")
    server.rpc("channel_list", agent, 403)
    server.rpc("delivery_list", agent, 403)
    server.rpc("channel_create", agent, 403, name="x", kind="webhook", url="http://127.0.0.1/")


def test_concurrent_creates_are_each_delivered_once(server: Server, token: str, channels):
    """Group commit puts many creates in one transaction: each still gets one delivery."""
    with Receiver() as receiver:
        channel = channels(receiver.url)
        ids: list[int] = []

        def post_some() -> None:
            client = Server(server.database_url, server.env["INSTANCE_PATH"])
            client.port, client.url = server.port, server.url
            for _ in range(25):
                ids.append(client.rpc("create", token, 201, description="load")["data"]["id"])
            client.session.close()

        threads = [threading.Thread(target=post_some) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        got = receiver.wait_for(lambda r: len(r) >= len(ids))
    webhook_ids = [r.headers["webhook-id"] for r in got]
    assert len(webhook_ids) == len(set(webhook_ids)) == 200
    assert sorted(verified(channel["secret"], r)["incident"]["id"] for r in got) == sorted(ids)


def delivered(server: Server, token: str, channel_id: int, count: int) -> list[dict[str, Any]]:
    """The channel's deliveries once `count` are recorded delivered: their attempts are
    over, so their connections are back in the sender's pool."""

    def done() -> list[dict[str, Any]] | None:
        rows = deliveries(server, token, channel_id=channel_id, state="delivered")
        return rows if len(rows) >= count else None

    return eventually(done)


def test_deliveries_to_one_receiver_share_connections(server: Server, token: str, channels):
    """One after another, six deliveries come over at most one connection per sender (on
    PostgreSQL each of the two workers runs one), not one each."""
    with Receiver(keep_alive=True) as receiver:
        channel = channels(receiver.url)
        for count in range(1, 7):
            create(server, token)
            rows = delivered(server, token, channel["id"], count)
        got = receiver.wait_for(lambda r: len(r) >= 6)
    assert len({r.headers["webhook-id"] for r in got}) == len(got) == 6
    assert [row["attempts"] for row in rows] == [1] * 6
    assert len({r.peer for r in got}) <= server.worker_count < 6


def test_a_receiver_closing_idle_connections_gets_each_delivery(server: Server, token, channels):
    """The receiver closes a connection idle for 0.3 s, well inside the pool's 4 s: the
    next post on it fails at once and goes again on a new connection, in the same
    attempt. Of three deliveries, at least one finds its sender's closed connection
    (two senders at most), each after the receiver has closed it."""
    with Receiver(keep_alive=True, idle_timeout=0.3) as receiver:
        channel = channels(receiver.url)
        for count in range(1, 4):
            create(server, token)
            got = receiver.wait_for(lambda r, count=count: len(r) >= count)
            rows = delivered(server, token, channel["id"], count)
            receiver.wait_closed(got[-1].peer)
        got = receiver.wait_for(lambda r: True)
    assert len({r.headers["webhook-id"] for r in got}) == len(got) == 3
    assert [row["attempts"] for row in rows] == [1] * 3  # not the retry schedule's second


def test_an_unacknowledged_incident_is_renotified_a_few_times(server: Server, token: str, channels):
    """renotify_every is in minutes; NOTIFY_RENOTIFY_UNIT makes a minute 1 s here."""
    with Receiver() as receiver:
        channel = channels(receiver.url, renotify_every=1, renotify_max=2,
                           renotify_min_severity="high")  # fmt: skip

        def renotified(incident_id: int) -> list[Received]:
            return [r for r in receiver.received if r.json()["type"] == "incident.renotified"
                    and r.json()["incident"]["id"] == incident_id]  # fmt: skip

        waiting = create(server, token, severity="critical")
        taken = create(server, token, severity="critical")
        server.rpc("acknowledge", token, 200, id=taken["id"])
        low = create(server, token, severity="medium")
        eventually(lambda: len(renotified(waiting["id"])) >= 2)
        later = create(server, token, severity="high")
        eventually(lambda: len(renotified(later["id"])) >= 2)  # the first had time for a 3rd
        first = renotified(waiting["id"])
    assert len(first) == 2
    assert [verified(channel["secret"], r)["renotify"] for r in first] == [1, 2]
    assert len({r.headers["webhook-id"] for r in first}) == 2
    assert first[1].at - first[0].at >= 0.5  # a minute (here 1 s) apart, give or take sending
    assert renotified(taken["id"]) == [] and renotified(low["id"]) == []


def test_a_slack_channel_gets_text_and_hides_its_url(server: Server, token: str):
    with Receiver() as receiver:
        url = f"{receiver.url}/services/T000/B000/secret-part"
        made = server.rpc("channel_create", token, 201, name="slack", kind="slack", url=url)
        channel = made["data"]
        try:
            assert channel["secret"] is None and channel["url"] is None
            assert channel["secret_prefix"] == f"http://127.0.0.1:{receiver.port}/..."
            listed = server.rpc("channel_list", token, 200, id=channel["id"])["data"]
            assert "secret-part" not in json.dumps(listed)
            incident = create(server, token, title="Disk full", severity="high")
            (request,) = receiver.wait_for(lambda r: len(r) >= 1)
        finally:
            server.rpc("channel_delete", token, 200, id=channel["id"])
    assert request.path == "/services/T000/B000/secret-part"
    assert request.json() == {
        "text": f"[HIGH] Disk full (incident {incident['id']}, incident.added, status new)"
    }


@pytest.mark.parametrize(
    ("rule", "kind", "incident", "silenced", "sent"),
    [
        ({}, "added", {"severity": "low"}, False, True),
        ({}, "added", {"severity": "low"}, True, False),  # silenced: nothing by default
        ({"include_silenced": True}, "added", {"severity": "low"}, True, True),
        ({}, "updated", {"severity": "low"}, False, False),
        ({"min_severity": "high"}, "added", {"severity": "medium"}, False, False),
        ({"min_severity": "high"}, "added", {"severity": "critical"}, False, True),
        ({"sources": ["partner"]}, "added", {"source": "monitoring"}, False, False),
        ({"sources": ["partner"]}, "added", {"source": "partner"}, False, True),
    ],
)
def test_rule_table(rule, kind, incident, silenced, sent) -> None:
    assert rules.matches(rules.with_defaults(rule), kind, incident, silenced) is sent


def test_silenced_incidents_notify_nothing_unless_the_rule_says(server: Server, token, channels):
    marker = f"silence-{secrets.token_hex(4)}"
    with Receiver() as receiver:
        quiet = channels(receiver.url)
        loud = channels(receiver.url, include_silenced=True)
        made = server.rpc("silence_create", token, 201, matchers={"dedup_key": marker},
                          duration=600)["data"]  # fmt: skip
        silenced = create(server, token, dedup_key=f"{marker}-1")
        assert silenced["silenced_by"] == made["id"]
        sentinel = create(server, token)
        got = receiver.wait_for(lambda r: len(r) >= 3)  # silenced to `loud`, sentinel to both
        server.rpc("silence_expire", token, 200, id=made["id"])
    pairs = sorted(
        (secret, verified(secret, r)["incident"]["id"])
        for r in got
        for secret in (quiet["secret"], loud["secret"])
        if _signed_by(secret, r)
    )
    assert pairs == sorted([(quiet["secret"], sentinel["id"]), (loud["secret"], silenced["id"]),
                            (loud["secret"], sentinel["id"])])  # fmt: skip
    assert deliveries(server, token, channel_id=quiet["id"], incident_id=silenced["id"]) == []


def _signed_by(secret: str, request: Received) -> bool:
    try:
        verified(secret, request)
    except Exception:
        return False
    return True
