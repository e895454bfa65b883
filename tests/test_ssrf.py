"""No request forgery through webhook URLs: the address classifier and the refusals.

The classifier is a pure function, tested over literal addresses that are never
connected to. Refusals are tested with loopback URLs only (127.0.0.1, localhost,
[::1]): at channel_create, and at send time, where the address actually connected
to is what counts. No test here sends a packet anywhere but loopback.
"""

import ipaddress
import socket
from collections.abc import Iterator

import pytest
from receivers import Receiver, eventually
from support import Server

from incident_rpc.notify import addresses

NOT_PUBLIC = [
    "127.0.0.1", "127.8.9.10", "0.0.0.0", "10.0.0.1", "10.255.255.255", "172.16.0.1",
    "172.31.255.254", "192.168.1.1", "169.254.169.254", "100.64.0.1", "192.0.2.1",
    "198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "2002:7f00:1::1",
    "2002:a00:1::1", "64:ff9b::a00:1", "64:ff9b::7f00:1", "2001::1",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.4.4",
          "2002:808:808::1", "64:ff9b::808:808"]  # fmt: skip


@pytest.mark.parametrize("text", NOT_PUBLIC)
def test_not_public_addresses_are_refused(text: str) -> None:
    assert not addresses.is_public(ipaddress.ip_address(text))
    assert not addresses.allowed(ipaddress.ip_address(text), allow_private=False)
    assert addresses.allowed(ipaddress.ip_address(text), allow_private=True)


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    assert addresses.is_public(ipaddress.ip_address(text))


LOOPBACK_URLS = ["http://127.0.0.1:9/hook", "http://localhost/hook", "https://[::1]:8443/x",
                 "http://127.1.2.3/", "http://LOCALHOST.:80/"]  # fmt: skip


@pytest.mark.parametrize("url", LOOPBACK_URLS)
def test_loopback_urls_are_refused(url: str) -> None:
    with pytest.raises(addresses.Refused):
        addresses.check_url(url, allow_private=False)
    addresses.check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "http:///x", "hook"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(addresses.Refused):
        addresses.check_url(url, allow_private=True)


def test_connect_refuses_before_any_packet() -> None:
    """The check comes before the connection: a loopback listener sees no one."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(addresses.Refused):
                addresses.connect(host, port, timeout=1, allow_private=False)
        with pytest.raises(TimeoutError):
            listener.accept()
        allowed = addresses.connect("127.0.0.1", port, timeout=1, allow_private=True)
        accepted, _ = listener.accept()
        assert accepted.getpeername() == allowed.getsockname()
        accepted.close()
        allowed.close()


@pytest.fixture(scope="module")
def database(new_database_url) -> str:
    return new_database_url()


@pytest.fixture(scope="module")
def strict(database: str, tmp_path_factory) -> Iterator[Server]:
    """A server with the default: no private or loopback destinations."""
    running = Server(
        database, tmp_path_factory.mktemp("instance"), NOTIFY_POLL_INTERVAL="0.3", NOTIFY_SENDER="1"
    )
    yield running.start()
    running.stop()  # it has a sender: no posts after its receivers have gone


@pytest.mark.parametrize("url", LOOPBACK_URLS[:3])
def test_channel_create_refuses_loopback(strict: Server, url: str) -> None:
    token = strict.login()
    for kind in ("webhook", "slack"):
        refused = strict.rpc("channel_create", token, 400, name="x", kind=kind, url=url)
        assert "url" in refused["data"]["errors"]


def test_a_destination_is_checked_again_when_sending(strict: Server, database, tmp_path) -> None:
    """A channel made while loopback was allowed (as a name that later resolves to a
    private address would be) is refused when sending, not sent."""
    with Receiver() as receiver:
        lenient = Server(database, tmp_path, WEBHOOK_ALLOW_PRIVATE="1", NOTIFY_SENDER="0")
        lenient.start()
        try:
            token = lenient.login()
            made = lenient.rpc("channel_create", token, 201, name="h", kind="webhook",
                               url=receiver.url)["data"]  # fmt: skip
        finally:
            lenient.stop()
        token = strict.login()
        strict.rpc("create", token, 201, description="to a private address")
        (failed,) = eventually(
            lambda: strict.rpc("delivery_list", token, 200, channel_id=made["id"],
                               state="failed")["data"]["deliveries"]
        )  # fmt: skip
        assert failed["attempts"] == 1 and failed["last_error"].startswith("refused")
        assert receiver.url not in failed["last_error"]
        assert receiver.count() == 0
        strict.rpc("channel_delete", token, 200, id=made["id"])
