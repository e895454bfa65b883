"""Requests held in a queue, and ways to see that they are there.

A `TableLock` holds PostgreSQL's lock on the incidents table so that a create's
INSERT waits; `RawRequest` sends a request on a socket of its own and reads its
answer later; `/proc/net/tcp` tells when a worker has read every byte of those
requests (a gevent worker runs a request it has read until it waits), which is
the observable moment "they have arrived and queue".
"""

import json
import socket
from typing import Any, NamedTuple

import psycopg2
import sqlalchemy
from support import Server, wait_for

ESTABLISHED, CLOSE_WAIT = "01", "08"  # the kernel's TCP states, as /proc/net/tcp writes them


class TableLock:
    """Holds `LOCK TABLE incidents` so that a create's INSERT waits for it."""

    def __init__(self, server: Server) -> None:
        url = sqlalchemy.engine.make_url(server.database_url)
        self.database = url.database
        self.params = {"host": url.host, "port": url.port, "user": url.username,
                       "dbname": url.database}  # fmt: skip
        self.connection = psycopg2.connect(**self.params)

    def __enter__(self) -> "TableLock":
        with self.connection.cursor() as cursor:
            cursor.execute("LOCK TABLE incidents IN EXCLUSIVE MODE")
        return self

    def waiting(self) -> int:
        """How many sessions of the database wait for a lock."""
        watcher = psycopg2.connect(**self.params)
        with watcher.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                " AND wait_event_type = 'Lock'",
                (self.database,),
            )
            (count,) = cursor.fetchone()
        watcher.close()
        return count

    def __exit__(self, *exc: object) -> None:
        self.connection.rollback()
        self.connection.close()


class RawRequest:
    """One POST on a socket of its own: sent now, its answer read later."""

    def __init__(
        self, server: Server, body: Any, token: str | None = None, path: str = "/rpc",
        content_type: str = "application/json",
    ) -> None:  # fmt: skip
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"{auth}Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")  # fmt: skip
        self.socket = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        self.socket.sendall(head.encode() + payload)
        self.port = self.socket.getsockname()[1]

    def raw_answer(self) -> tuple[int, bytes]:
        """The HTTP status and the body, once the server has closed."""
        received = b""
        while chunk := self.socket.recv(65536):
            received += chunk
        self.socket.close()
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def answer(self) -> dict[str, Any]:
        status, body = self.raw_answer()
        envelope = json.loads(body)
        assert status == envelope["status"], envelope
        return envelope


class TcpSocket(NamedTuple):
    local: int  # port
    remote: int  # port
    state: str
    tx_queue: int  # bytes sent, not yet acknowledged
    rx_queue: int  # bytes received, not yet read


def tcp_sockets() -> list[TcpSocket]:
    """Every IPv4 TCP socket of the machine (the tests' traffic is all on 127.0.0.1)."""
    found = []
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            tx, rx = (int(part, 16) for part in fields[4].split(":"))
            local, remote = (int(field.rsplit(":", 1)[1], 16) for field in fields[1:3])
            found.append(TcpSocket(local, remote, fields[3], tx, rx))
    return found


def read_by_server(server: Server, client_ports: list[int]) -> bool:
    """Whether the server's worker has read every byte sent on these client sockets:
    each one's bytes acknowledged (client tx_queue 0), taken by the worker (server
    rx_queue 0)."""
    table = {(entry.local, entry.remote): entry for entry in tcp_sockets()}
    for port in client_ports:
        client, served = table.get((port, server.port)), table.get((server.port, port))
        if client is None or served is None or client.tx_queue or served.rx_queue:
            return False
    return True


def wait_until_read(server: Server, sent: list[RawRequest], seconds: float = 30) -> None:
    """Until the server's worker has read every byte of these requests."""
    ports = [request.port for request in sent]
    wait_for(lambda: read_by_server(server, ports), seconds, "the worker did not read them")
