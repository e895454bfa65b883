"""`post` on kept connections, in this process against loopback receivers: reused while
the receiver keeps them open, posted again once when it closed one while idle, never
again after a timeout or a new connection's failure, never across `allow_private`.
"""

import socket
import threading
from collections.abc import Iterator

import pytest
from receivers import Answer, Receiver

from incident_rpc.notify import connections
from incident_rpc.notify.post import post


def send(receiver: Receiver, timeout: float = 1, allow_private: bool = True):
    return post(f"{receiver.url}/hook", b"{}", {}, timeout, allow_private)


def peers(receiver: Receiver) -> list[tuple[str, int]]:
    return [request.peer for request in receiver.wait_for(lambda r: True)]


@pytest.fixture
def keeping() -> Iterator[Receiver]:
    with Receiver(keep_alive=True) as receiver:
        yield receiver


def test_posts_to_one_receiver_share_a_connection(keeping: Receiver) -> None:
    assert [send(keeping).status for _ in range(5)] == [200] * 5
    assert len(set(peers(keeping))) == 1


def test_a_connection_closed_while_idle_is_posted_on_again_once() -> None:
    with Receiver(keep_alive=True, idle_timeout=0.2) as receiver:
        assert send(receiver).status == 200
        (first,) = peers(receiver)
        receiver.wait_closed(first)
        assert send(receiver).status == 200  # on the closed one, then once on a new one
        assert len(peers(receiver)) == 2 and peers(receiver)[1] != first


def test_connection_close_is_honoured(keeping: Receiver) -> None:
    keeping.answer = lambda receiver, request: Answer(200, headers={"Connection": "close"})
    assert send(keeping).status == send(keeping).status == 200
    assert len(set(peers(keeping))) == 2


def test_a_connection_idle_too_long_is_not_reused(keeping: Receiver, monkeypatch) -> None:
    monkeypatch.setattr(connections, "MAX_IDLE_SECONDS", 0.0)
    assert send(keeping).status == send(keeping).status == 200
    first, second = peers(keeping)
    assert first != second
    keeping.wait_closed(first)  # closed by the pool, not left open


def test_a_timeout_is_not_posted_again(keeping: Receiver) -> None:
    assert send(keeping).status == 200
    keeping.answer = lambda receiver, request: Answer(200, delay=2)
    outcome = send(keeping, timeout=0.3)
    assert outcome.status is None and outcome.error == "timed out after 0.3 s"
    assert len(peers(keeping)) == 2


def test_a_new_connections_failure_is_not_posted_again() -> None:
    """A listener that reads the request and hangs up without answering."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            accepted, _ = listener.accept()
            accepted.recv(65536)
            accepted.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        outcome = post(f"http://127.0.0.1:{port}/secret-path", b"{}", {}, 1, True)
        thread.join()
        assert outcome.status is None and outcome.error == "RemoteDisconnected: no answer"
        listener.setblocking(False)  # post has returned: a second try would be queued here
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_a_kept_connection_never_serves_a_stricter_post(keeping: Receiver) -> None:
    assert send(keeping, allow_private=True).status == 200
    outcome = send(keeping, allow_private=False)
    assert outcome.status is None and outcome.error.startswith("refused: 127.0.0.1")
    assert len(peers(keeping)) == 1


def test_idle_connections_are_bounded_per_origin(keeping: Receiver, monkeypatch) -> None:
    monkeypatch.setattr(connections, "MAX_IDLE_PER_ORIGIN", 2)
    release = threading.Event()
    keeping.answer = lambda receiver, request: Answer(200, hold=release)
    outcomes: list[int | None] = []
    threads = [threading.Thread(target=lambda: outcomes.append(send(keeping).status))
               for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    keeping.wait_for(lambda received: len(received) == 4)  # four connections at once
    release.set()
    for thread in threads:
        thread.join()
    assert outcomes == [200] * 4 and len(set(peers(keeping))) == 4
    kept = connections._idle[connections.Origin("http", "127.0.0.1", keeping.port, True)]
    kept_peers = {connection.sock.getsockname() for _, connection in kept}
    surplus = set(peers(keeping)) - kept_peers
    assert len(kept_peers) == len(surplus) == 2
    for peer in surplus:
        keeping.wait_closed(peer)  # closed by the pool
