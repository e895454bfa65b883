"""No request forgery: outbound connections only to public addresses, checked at connect.

`is_public` classifies one address (a pure function, tested over literal addresses).
`connect` resolves a host, refuses it when any address it resolves to is not public
(unless private ones are allowed: WEBHOOK_ALLOW_PRIVATE), connects to the address it
checked (never resolving again, so a name cannot change its answer in between) and
checks the peer it actually reached. A URL is also checked when a channel is made
(`check_url`), so that a bad one is refused at once rather than failing later.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 through a translator: the last 32 bits


class Refused(ValueError):
    """The destination is not allowed; the message names the address, never a secret."""


def is_public(address: Address) -> bool:
    """A globally routable unicast address: not loopback, link-local, private, shared
    (100.64/10), multicast, reserved or unspecified; IPv4 inside IPv6 (mapped, 6to4,
    NAT64) counts as that IPv4 address; Teredo never passes."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if address.teredo is not None:
            return False
    return address.is_global and not (
        address.is_multicast or address.is_loopback or address.is_link_local
    )


def resolve(host: str, port: int) -> list[tuple[int, Address]]:
    """(family, address) of every address the host resolves to, literal addresses as is
    (without a lookup: in a gevent worker that is a trip through a thread pool)."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [(family, literal)]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise Refused(f"cannot resolve {host!r}") from error
    return [
        (family, ipaddress.ip_address(info[0].split("%")[0])) for family, _, _, _, info in infos
    ]


def allowed(address: Address, allow_private: bool) -> bool:
    return allow_private or is_public(address)


def check_url(url: str, allow_private: bool) -> None:
    """Refuse a URL that is not http(s) or whose host resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("must be an http:// or https:// URL with a host")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for _, address in resolve(parts.hostname, port):
        if not is_public(address):
            raise Refused(f"{parts.hostname} resolves to {address}, which is not public")


def connect(host: str, port: int, timeout: float, allow_private: bool) -> socket.socket:
    """A connected socket to the first allowed address of `host`; Refused if none is."""
    addresses = resolve(host, port)
    refused = [str(address) for _, address in addresses if not allowed(address, allow_private)]
    if refused:
        raise Refused(f"{host} resolves to {', '.join(refused)}, which is not public")
    error: OSError | None = None
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((str(address), port))
        except OSError as failure:
            sock.close()
            error = failure
            continue
        peer = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
        if not allowed(peer, allow_private):
            sock.close()
            raise Refused(f"connected to {peer}, which is not public")
        return sock
    raise error or OSError(f"no address for {host}")
