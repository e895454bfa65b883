"""Deliveries survive what servers go through: a restart in the middle, SIGKILL with
deliveries pending, a sender killed while it holds claims, two instances on one
database, a storm of 2,000 incidents. Real gunicorn, a real loopback receiver.

Delivery is at least once: after a crash a receiver may see a webhook-id again, never
an event under two webhook-ids, and never an event missing.
"""

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from receivers import Answer, Received, Receiver, eventually
from sqlalchemy import create_engine, text
from support import ROOT, Server, free_port

SETTINGS = {
    "NOTIFY_SENDER": "1",
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "NOTIFY_TIMEOUT": "1",
    # Claims of a killed worker are taken over soon. The storm and the two instances run
    # with the defaults (a 10-s timeout, a 60-s lease): a slow receiver on a busy machine
    # would otherwise time out, and the retry is a legitimate repeat of a webhook-id.
    "NOTIFY_LEASE": "3",
    "NOTIFY_POLL_INTERVAL": "0.3",
    "NOTIFY_RETRY_SCHEDULE": ",".join(["0.3"] * 40),
}


def start(database: str, instance: Path, **env: str) -> Server:
    return Server(database, instance, **{**SETTINGS, **env}).start()


def webhook(server: Server, token: str, url: str) -> dict[str, Any]:
    return server.rpc("channel_create", token, 201, name="hook", kind="webhook", url=url)["data"]


def create_many(server: Server, token: str, count: int, clients: int = 4) -> list[int]:
    """`count` incidents, in batches of 25 from `clients` threads at once."""
    ids: list[int] = []
    lock = threading.Lock()

    def post(share: int) -> None:
        client = Server(server.database_url, Path(server.env["INSTANCE_PATH"]))
        client.port, client.url = server.port, server.url
        for start in range(0, share, 25):
            batch = [{"action": "create", "token": token, "description": "storm"}] * min(
                25, share - start
            )
            answers = client.post("/rpc", batch).json()
            assert all(a["status"] == 201 for a in answers), answers[:1]
            with lock:
                ids.extend(a["data"]["id"] for a in answers)
        client.session.close()

    shares = [count // clients + (n < count % clients) for n in range(clients)]
    threads = [threading.Thread(target=post, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == count
    return ids


def by_event(received: list[Received]) -> dict[int, set[str]]:
    """Event id -> the webhook-ids it arrived under."""
    seen: dict[int, set[str]] = {}
    for request in received:
        seen.setdefault(request.json()["event_id"], set()).add(request.headers["webhook-id"])
    return seen


def all_arrived(count: int) -> Callable[[list[Received]], bool]:
    return lambda received: len(by_event(received)) >= count


def assert_once_each(received: list[Received], ids: list[int]) -> None:
    incidents = {request.json()["incident"]["id"] for request in received}
    assert incidents == set(ids)
    assert all(len(webhook_ids) == 1 for webhook_ids in by_event(received).values())


def kill_everything(server: Server) -> None:
    """SIGKILL the master, its workers and its sender: nothing gets to finish anything."""
    assert server.process is not None
    for pid in [server.process.pid, *server.children()]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait()


@pytest.fixture
def database(new_database_url) -> str:
    return new_database_url()


def test_a_restart_in_the_middle_of_deliveries(database: str, tmp_path: Path) -> None:
    with Receiver(lambda receiver, request: Answer(200, delay=0.25)) as receiver:
        server = start(database, tmp_path)
        token = server.login()
        webhook(server, token, receiver.url)
        ids = create_many(server, token, 200, clients=1)
        receiver.wait_for(lambda received: len(received) >= 10)
        server.stop()
        assert len(by_event(receiver.received)) < 200
        server = start(database, tmp_path)
        try:
            received = receiver.wait_for(all_arrived(200), timeout=60)
        finally:
            server.stop()
    assert_once_each(received, ids)


def test_sigkill_with_deliveries_pending(database: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: every attempt fails and is retried
    server = start(database, tmp_path)
    token = server.login()
    webhook(server, token, f"http://127.0.0.1:{port}/hook")
    ids = create_many(server, token, 50, clients=1)
    kill_everything(server)
    with Receiver(port=port) as receiver:
        server = start(database, tmp_path)
        try:
            received = receiver.wait_for(all_arrived(50), timeout=60)
        finally:
            server.stop()
    assert_once_each(received, ids)


def test_a_dead_senders_claims_are_taken_over(database: str, tmp_path: Path) -> None:
    held = threading.Event()  # the first attempt never gets its answer

    def first_hangs(receiver: Receiver, request: Received) -> Answer:
        return Answer(200, hold=held) if len(receiver.received) == 1 else Answer(200)

    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg2://"))
    with Receiver(first_hangs) as receiver:
        server = start(database, tmp_path, NOTIFY_TIMEOUT="30")
        try:
            token = server.login()
            channel = webhook(server, token, receiver.url)
            server.rpc("create", token, 201, description="held")
            (first,) = receiver.wait_for(lambda received: len(received) >= 1)
            with engine.connect() as connection:
                claim = connection.execute(
                    text("SELECT claim FROM notify_deliveries WHERE channel_id = :c"),
                    {"c": channel["id"]},
                ).scalar_one()
            sender = int(claim.split(".")[0])
            assert server.senders() == [sender]
            os.kill(sender, signal.SIGKILL)
            second = receiver.wait_for(lambda received: len(received) >= 2, timeout=30)[1]
            (delivery,) = eventually(
                lambda: server.rpc("delivery_list", token, 200, channel_id=channel["id"],
                                   state="delivered")["data"]["deliveries"]
            )  # fmt: skip
        finally:
            server.stop()
            engine.dispose()
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.at - first.at >= 2.5  # not before the lease (3 s) ran out
    assert delivery["attempts"] == 2


def test_the_sender_is_started_again_and_goes_with_its_master(
    database: str, tmp_path: Path
) -> None:
    with Receiver() as receiver:
        server = start(database, tmp_path)
        token = server.login()
        webhook(server, token, receiver.url)
        (first,) = eventually(server.senders)
        os.kill(first, signal.SIGKILL)
        (second,) = eventually(lambda: [pid for pid in server.senders() if pid != first])
        server.rpc("create", token, 201, description="after the restart")
        (request,) = receiver.wait_for(lambda received: len(received) >= 1)
        assert request.json()["incident"]["description"] == "after the restart"
        kill_everything_but(server, second)
        eventually(lambda: not Path(f"/proc/{second}").exists() or _zombie(second), timeout=10)


def kill_everything_but(server: Server, spared: int) -> None:
    assert server.process is not None
    for pid in [server.process.pid, *server.workers()]:
        os.kill(pid, signal.SIGKILL)
    server.process.wait()
    assert Path(f"/proc/{spared}").exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def sender_alone(tmp_path: Path, master: int, wake_fd: int) -> subprocess.Popen[bytes]:
    """`python -m incident_rpc.notifier` as gunicorn's master starts it, but by this test."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/alone.sqlite3",
           "INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "test-secret-key",
           "NOTIFY_WAKE_FD": str(wake_fd), "NOTIFY_MASTER_PID": str(master)}  # fmt: skip
    command = [sys.executable, "-m", "incident_rpc.notifier"]
    return subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=(wake_fd,))


def test_a_sender_whose_doorbell_has_no_writer_left_exits(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    sender = sender_alone(tmp_path, os.getpid(), read_end)  # its master "lives": this test
    os.close(read_end)
    try:
        os.write(write_end, b".")  # a commit's ring: it goes on
        eventually(lambda: (tmp_path / "alone.sender.lock").exists())  # it runs, and sends
        assert sender.poll() is None
        os.close(write_end)  # the master and every worker are gone: it must not spin
        assert sender.wait(timeout=30) == 0
    finally:
        sender.kill()
        sender.wait()


def test_a_sender_started_after_its_master_died_exits(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    sender = sender_alone(tmp_path, 1, read_end)  # not its parent: its master is gone
    try:
        assert sender.wait(timeout=30) == 0  # though its doorbell still has a writer
    finally:
        sender.kill()
        sender.wait()
        os.close(read_end)
        os.close(write_end)


def test_two_instances_send_each_delivery_once(database: str, tmp_path: Path) -> None:
    with Receiver() as receiver:
        one = start(database, tmp_path / "one", NOTIFY_LEASE="60", NOTIFY_TIMEOUT="10")
        two = start(database, tmp_path / "two", NOTIFY_LEASE="60", NOTIFY_TIMEOUT="10")
        try:
            token = one.login()
            webhook(one, token, receiver.url)
            ids = create_many(one, token, 150, clients=2) + create_many(two, token, 150, clients=2)
            received = receiver.wait_for(all_arrived(300), timeout=60)
        finally:
            one.stop()
            two.stop()
    assert_once_each(received, ids)
    assert len(received) == 300  # no crash: not even a repeat of one webhook-id


def test_a_storm_of_2000_incidents(database: str, tmp_path: Path) -> None:
    with Receiver() as receiver:
        server = start(database, tmp_path, NOTIFY_LEASE="60", NOTIFY_TIMEOUT="10")
        try:
            token = server.login()
            webhook(server, token, receiver.url)
            ids = create_many(server, token, 2000, clients=8)
            received = receiver.wait_for(all_arrived(2000), timeout=90)
        finally:
            server.stop()
    assert_once_each(received, ids)
    assert len(received) == 2000
